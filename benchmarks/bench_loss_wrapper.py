"""Cost of the UniSyncLoss wrapper over the bare expert it wraps, on generator-sized inputs.

    python benchmarks/bench_loss_wrapper.py [--batch 16] [--rounds 30] [--device cpu] [--threads 1] [--pairs mel_rgb,...]

What it measures: for every pair with a bundled procedural expert, one loss call with its
backward pass into the visual input, ``UniSyncLoss(...)(audio, visual).backward()`` (input
validation, input conventions, -log p_sync), against the same work done directly on the frozen
expert (``embed_audio`` / ``embed_visual`` without validation, ``sync_prob``, -log, backward).
No generator is involved: this is the wrapper's overhead, not the loss's share of a training step.

Inputs have the sizes a generator hands the loss: Wav2Lip's mel windows (B, 1, 80, 16) and
96 x 96 face crops (B, 3, 5, 96, 96); parsing as class probabilities (B, 19, 5, 96, 96), the
differentiable form; GeneFace's HuBERT windows (B, 10, 1024), 3DMM (B, 5, 64) and landmarks
(B, 5, 68, 3).

Method: the two contenders are interleaved round by round (their order alternating), after 3
warm-up rounds; each round gives one paired ratio wrapper / bare, and the table reports the
median of those ratios with the median times. Pairing cancels the machine's load drifting
during the run, which separate medians do not. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from unisync_loss import UniSyncLoss  # noqa: E402
from unisync_loss.audio import mel_steps  # noqa: E402
from unisync_loss.experts import bundled_expert_path  # noqa: E402
from unisync_loss.model import UniSyncConfig  # noqa: E402
from unisync_loss.representations import AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS  # noqa: E402

FRAME_SIZE = 96
"""Wav2Lip's face crops are 96 x 96 (the full face; the expert crops the lower half itself)."""
WARMUP_ROUNDS = 3


def generator_input(name: str, config: UniSyncConfig, batch: int, generator: torch.Generator) -> Tensor:
    """A random batch of ``name`` at the size a generator produces for ``config``'s window (see the module docstring)."""
    window = config.window
    options = {**config.audio, **config.visual}[name]
    if name == "mel":
        return 4.0 * torch.rand(batch, 1, 80, mel_steps(window), generator=generator) - 4.0
    if name == "hubert":
        return torch.randn(batch, 2 * window, options["dim"], generator=generator)
    if name == "rgb":
        return torch.rand(batch, 3, window, FRAME_SIZE, FRAME_SIZE, generator=generator)
    if name == "parsing":
        return torch.randn(batch, options["classes"], window, FRAME_SIZE, FRAME_SIZE, generator=generator).softmax(dim=1)
    if name == "landmarks":
        return 48.0 + 12.0 * torch.randn(batch, window, options["points"], options["coords"], generator=generator)
    return torch.randn(batch, window, options["dim"], generator=generator)


def seconds(step: Callable[[], None], device: torch.device) -> float:
    """Wall time of one call of ``step`` (synchronising on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def paired_rounds(first: Callable[[], None], second: Callable[[], None], rounds: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Times (s) of ``first`` and ``second`` over ``rounds`` interleaved rounds, their order alternating, after warm-up."""
    times_first, times_second = [], []
    for index in range(WARMUP_ROUNDS + rounds):
        if index % 2 == 0:
            a, b = seconds(first, device), seconds(second, device)
        else:
            b, a = seconds(second, device), seconds(first, device)
        if index >= WARMUP_ROUNDS:
            times_first.append(a)
            times_second.append(b)
    return times_first, times_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="windows per call (Wav2Lip's generator batch is 16)")
    parser.add_argument("--rounds", type=int, default=30, help="paired rounds per pair, after 3 warm-up rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", help="comma-separated pairs such as mel_rgb (default: every bundled one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    pairs = [(a, v) for a in AUDIO_REPRESENTATIONS for v in VISUAL_REPRESENTATIONS if bundled_expert_path(a, v).is_file()]
    if args.pairs:
        pairs = [pair for pair in pairs if "_".join(pair) in args.pairs.split(",")]

    print(f"batch {args.batch}, {device}, {args.threads} thread(s), {args.rounds} interleaved rounds per pair")
    print("| pair | input shapes (audio; visual) | wrapper (ms) | bare expert (ms) | wrapper / bare, median of paired ratios [quartiles] |")
    print("|---|---|---:|---:|---:|")
    for audio_rep, visual_rep in pairs:
        sync_loss = UniSyncLoss(audio_rep, visual_rep, weights="procedural").to(device)
        expert = sync_loss.expert
        audio = generator_input(audio_rep, expert.config, args.batch, generator).to(device)
        visual = generator_input(visual_rep, expert.config, args.batch, generator).to(device).requires_grad_(True)

        def through_wrapper() -> None:
            visual.grad = None
            sync_loss(audio, visual).backward()

        def bare() -> None:
            visual.grad = None
            a = expert.embed_audio(audio, audio_rep, validate=False)
            v = expert.embed_visual(visual, visual_rep, validate=False)
            (-torch.log(expert.sync_prob(a, v).clamp_min(1e-7))).mean().backward()

        wrapper_s, bare_s = paired_rounds(through_wrapper, bare, args.rounds, device)
        ratios = [w / b for w, b in zip(wrapper_s, bare_s)]
        quartiles = statistics.quantiles(ratios, n=4)
        print(f"| {audio_rep} × {visual_rep} | {tuple(audio.shape)}; {tuple(visual.shape)} | "
              f"{1000 * statistics.median(wrapper_s):.1f} | {1000 * statistics.median(bare_s):.1f} | "
              f"{statistics.median(ratios):.3f} [{quartiles[0]:.3f}, {quartiles[2]:.3f}] |", flush=True)


if __name__ == "__main__":
    main()
