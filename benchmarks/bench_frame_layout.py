"""Speed of the image heads (rgb, parsing): the current data layout against the previous one, in the same run.

    python benchmarks/bench_frame_layout.py [--batch 64,16] [--rounds 20] [--threads 1]

What it measures: one forward and backward pass of a representation head (preprocessing + ε1,
``RepresentationHead``) of a ``hidden 64`` model on 96 x 96 face crops, with the gradient reaching
the input where the input is differentiable (rgb frames and parsing probabilities: a generator's
case; integer parsing labels: pretraining's case). The two contenders run the same weights:

* **current**: ``RepresentationHead`` as it is: parsing labels cropped to the mouth half before the
  one-hot, built classes-last, and parsing frames folded into the batch channels-last (a view);
  rgb frames folded channels-first, as before (channels-last measured slower for rgb's 3 channels
  at batch 16, 0.87x);
* **previous** (before this benchmark's commit): a one-hot of the whole frame, cropped after, and
  frames folded channels-first, a copy into ``(B * T, C, h, w)``. For rgb both contenders are the
  same computation: its rows are a control of the method (ratio 1).

Method of bench_loss_wrapper: interleaved rounds (order alternating) after 3 warm-up rounds, the
median of the per-round ratios previous / current with their quartiles. Also prints the largest
difference between the two outputs (they compute the same function). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
from einops import rearrange
from torch import Tensor

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_loss_wrapper import FRAME_SIZE, paired_rounds  # noqa: E402
from unisync_loss.model import RepresentationHead  # noqa: E402
from unisync_loss.representations import ParsingPreprocess  # noqa: E402

WINDOW, HIDDEN, CLASSES = 5, 64, 19


def previous_layout(head: RepresentationHead, x: Tensor) -> Tensor:
    """The head's former data path: full-frame one-hot then crop; frames folded channels-first. ``-> (B, hidden, T)``."""
    preprocess, encoder = head.preprocess, head.encoder
    if isinstance(preprocess, ParsingPreprocess) and not x.is_floating_point():
        one_hot = (x.unsqueeze(1) == preprocess.class_ids.view(1, -1, 1, 1, 1)).to(torch.get_default_dtype())
        frames = preprocess.crop(one_hot)
    else:
        frames = preprocess(x)
    images = rearrange(frames, "b c t h w -> (b t) c h w").contiguous()
    features = encoder.spatial(images).mean(dim=(-2, -1))
    return encoder.temporal(rearrange(features, "(b t) c -> b c t", t=frames.shape[2]))


def case_input(case: str, batch: int, generator: torch.Generator) -> Tensor:
    """Input of one case: rgb frames, parsing probabilities (both differentiable) or integer parsing labels."""
    size = (batch, WINDOW, FRAME_SIZE, FRAME_SIZE)
    if case == "rgb":
        return torch.rand(batch, 3, *size[1:], generator=generator).requires_grad_(True)
    if case == "parsing probabilities":
        return torch.randn(batch, CLASSES, *size[1:], generator=generator).softmax(dim=1).requires_grad_(True)
    return torch.randint(0, CLASSES, size, generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="64,16", help="windows per call, comma-separated (64: a pretraining pair's batch; 16: Wav2Lip's)")
    parser.add_argument("--rounds", type=int, default=20, help="paired rounds per case, after 3 warm-up rounds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    heads = {"rgb": RepresentationHead("rgb", {"size": FRAME_SIZE}, WINDOW, HIDDEN),
             "parsing": RepresentationHead("parsing", {"classes": CLASSES, "size": FRAME_SIZE}, WINDOW, HIDDEN)}

    print(f"cpu, {args.threads} thread(s), hidden {HIDDEN}, {FRAME_SIZE} x {FRAME_SIZE} crops, {args.rounds} interleaved rounds per case")
    print("| input | batch | previous (ms) | current (ms) | previous / current, median of paired ratios [quartiles] | max abs difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batch.split(",")):
        for case in ("rgb", "parsing probabilities", "parsing labels"):
            head = heads[case.split()[0]]
            x = case_input(case, batch, generator)

            def step(forward: Callable[[], Tensor]) -> None:
                head.zero_grad(set_to_none=True)
                x.grad = None
                forward().sum().backward()

            previous_s, current_s = paired_rounds(lambda: step(lambda: previous_layout(head, x)),
                                                  lambda: step(lambda: head(x, torch.float32)), args.rounds, torch.device("cpu"))
            ratios = [p / c for p, c in zip(previous_s, current_s)]
            quartiles = statistics.quantiles(ratios, n=4)
            with torch.no_grad():
                difference = (previous_layout(head, x) - head(x, torch.float32)).abs().max().item()
            print(f"| {case} {tuple(x.shape)} | {batch} | {1000 * statistics.median(previous_s):.0f} | "
                  f"{1000 * statistics.median(current_s):.0f} | {statistics.median(ratios):.2f} "
                  f"[{quartiles[0]:.2f}, {quartiles[2]:.2f}] | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
