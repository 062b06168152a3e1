"""Cost of UniSyncLoss in a generator step, against the bare expert measured in the same run.

    python benchmarks/bench_loss.py [--batch 16] [--repeats 30] [--device cpu] [--threads 2]

For every pair with a bundled procedural expert: the median time of one loss call with its
backward pass into the visual input, ``UniSyncLoss(...)(audio, visual).backward()`` (validation,
input conventions, -log p_sync), and of the same work done directly on the frozen expert
(``embed_audio`` / ``embed_visual`` without validation, ``sync_prob``, -log, backward): the ratio
is the wrapper's overhead. Prints a Markdown table.
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


def median_ms(step: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median wall time of ``step`` in milliseconds (after 3 warm-up calls, synchronising on CUDA)."""
    times = []
    for index in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= 3:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)

    print(f"| pair | loss call + backward (ms) | bare expert (ms) | ratio |   batch {args.batch}, {device}")
    print("|---|---:|---:|---:|")
    for audio_rep in AUDIO_REPRESENTATIONS:
        for visual_rep in VISUAL_REPRESENTATIONS:
            if not bundled_expert_path(audio_rep, visual_rep).is_file():
                continue
            sync_loss = UniSyncLoss(audio_rep, visual_rep, weights="procedural").to(device)
            expert = sync_loss.expert
            audio = sample_input(audio_rep, expert.config, args.batch, generator).to(device)
            visual = sample_input(visual_rep, expert.config, args.batch, generator).to(device).requires_grad_(True)

            def through_loss() -> None:
                sync_loss(audio, visual).backward()

            def bare() -> None:
                a = expert.embed_audio(audio, audio_rep, validate=False)
                v = expert.embed_visual(visual, visual_rep, validate=False)
                (-torch.log(expert.sync_prob(a, v).clamp_min(1e-7))).mean().backward()

            loss_ms, bare_ms = median_ms(through_loss, args.repeats, device), median_ms(bare, args.repeats, device)
            print(f"| {audio_rep} x {visual_rep} | {loss_ms:.2f} | {bare_ms:.2f} | {loss_ms / bare_ms:.2f} |")


if __name__ == "__main__":
    main()
