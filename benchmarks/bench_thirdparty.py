"""Cost of a lip-sync loss in a generator step: UniSyncLoss and SyncNet v2 against Wav2Lip's expert, same batch.

    python benchmarks/bench_thirdparty.py [--batch 16] [--rounds 10] [--threads 1] [--device cpu]

Every loss gets the same generator-side batch: BGR face frames ``(B, 3, 5, 96, 96)`` in [0, 1]
that require grad, with mel windows ``(B, 1, 80, 16)`` (Wav2Lip's expert, UniSync mel x rgb) or
MFCC windows ``(B, 1, 13, 20)`` (SyncNet v2, which resizes the frames to 224 x 224). One step is
``loss(audio, frames).backward()``. Each round times one step of every loss in turn (after two
warm-up rounds); the table gives the median milliseconds per step and the median over rounds of
the paired ratio to Wav2Lip's expert timed in the same round. Third-party experts have random
weights (their cost does not depend on the values); UniSync is the bundled procedural expert.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from unisync_loss import UniSyncLoss  # noqa: E402
from unisync_loss.thirdparty import SyncNetV2, ThirdPartySyncLoss, Wav2LipSyncNet  # noqa: E402

from benchmarks.bench_loss_wrapper import seconds  # noqa: E402

WARMUP_ROUNDS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(args.batch, 3, 5, 96, 96, generator=generator).to(device).requires_grad_(True)
    mel = (torch.rand(args.batch, 1, 80, 16, generator=generator) * 8 - 4).to(device)
    mfcc = (torch.randn(args.batch, 1, 13, 20, generator=generator) * 10).to(device)
    losses = {
        "Wav2Lip SyncNet_color (-log cos)": (ThirdPartySyncLoss(Wav2LipSyncNet(), channel_order="bgr"), mel),
        "UniSync mel × rgb (procedural)": (UniSyncLoss("mel", "rgb", weights="procedural", channel_order="bgr"), mel),
        "SyncNet v2 (distance, 224²)": (ThirdPartySyncLoss(SyncNetV2(), channel_order="bgr"), mfcc),
    }
    for loss, _ in losses.values():
        loss.to(device)
    baseline = next(iter(losses))
    times: dict[str, list[float]] = {name: [] for name in losses}
    for round_index in range(WARMUP_ROUNDS + args.rounds):
        for name, (loss, audio) in losses.items():
            elapsed = 1000 * seconds(lambda: loss(audio, frames).backward(), device)
            if round_index >= WARMUP_ROUNDS:
                times[name].append(elapsed)
        frames.grad = None

    print(f"| loss | forward + backward (ms) | ratio to Wav2Lip's expert |   batch {args.batch}, {device}, "
          f"{args.threads} thread(s), median of {args.rounds} rounds")
    print("|---|---:|---:|")
    for name, values in times.items():
        ratio = statistics.median(value / base for value, base in zip(values, times[baseline]))
        print(f"| {name} | {statistics.median(values):.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
