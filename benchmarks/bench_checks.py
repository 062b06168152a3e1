"""Cost of the loss's value checks on CPU: ``check_finite=True`` against ``check_finite=False``, same run.

    python benchmarks/bench_checks.py [--batch 16] [--rounds 30] [--threads 1]

For every pair with a bundled procedural expert: one loss call with its backward pass into the
visual input, ``UniSyncLoss(...)(audio, visual).backward()``, with the value checks (NaN/Inf, value
ranges, degenerate landmark windows, distance from the expert's statistics) and without them. The
two run interleaved round by round (their order alternating); the figure is the median of the
per-round ratios checked / unchecked. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import sample_input  # noqa: E402
from unisync_loss import UniSyncLoss  # noqa: E402
from unisync_loss.experts import bundled_expert_path  # noqa: E402
from unisync_loss.representations import AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS  # noqa: E402


def seconds(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)

    print(f"| pair | checked (ms) | unchecked (ms) | median ratio checked / unchecked |   batch {args.batch}, cpu, {args.rounds} rounds")
    print("|---|---:|---:|---:|")
    for audio_rep in AUDIO_REPRESENTATIONS:
        for visual_rep in VISUAL_REPRESENTATIONS:
            if not bundled_expert_path(audio_rep, visual_rep).is_file():
                continue
            losses = {flag: UniSyncLoss(audio_rep, visual_rep, weights="procedural", check_finite=flag) for flag in (True, False)}
            config = losses[True].expert.config
            audio = sample_input(audio_rep, config, args.batch, generator)
            visual = sample_input(visual_rep, config, args.batch, generator).requires_grad_(True)
            steps = {flag: (lambda loss_fn=loss_fn: loss_fn(audio, visual).backward()) for flag, loss_fn in losses.items()}
            for step in steps.values():  # warm-up
                step()
            times: dict[bool, list[float]] = {True: [], False: []}
            for round_index in range(args.rounds):
                for flag in ((True, False) if round_index % 2 == 0 else (False, True)):
                    times[flag].append(seconds(steps[flag]))
            ratio = statistics.median(c / u for c, u in zip(times[True], times[False]))
            checked, unchecked = (1000 * statistics.median(times[flag]) for flag in (True, False))
            print(f"| {audio_rep} x {visual_rep} | {checked:.2f} | {unchecked:.2f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
