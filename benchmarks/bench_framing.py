"""Held-out sync accuracy of rgb experts when the face crop is framed differently (BENCHMARKS.md, "Framing").

Every held-out clip's frames are seen through a crop rescaled by ``s`` and moved by ``dy`` crop
sides (``pretrain.augment.reframe``, the operation the training-time augmentation draws from;
``dy > 0`` moves the crop down, so the mouth rides up as in a face-detector box), the same for the
whole clip, and each expert is scored with ``pretrain.evaluate``'s protocol on the pooled test
speakers of its corpus under ``--heldout-seeds`` (``--heldout-clips`` clips each). With two or more
experts, the paired per-speaker difference to the first one is reported at every framing;
``--baseline OUT.json`` of an earlier run pairs every expert with that run's first expert at the
same framing instead, over the speakers both runs scored (a clip depends only on its corpus seed,
speaker and index, so fewer seeds are a subset of the same speakers).

    python benchmarks/bench_framing.py --experts procedural_mel_rgb runs/mel_rgb_aug.safetensors \
        --heldout-seeds 1-8 --heldout-clips 3 --threads 1 --out runs/bench_framing.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_pretrain import held_out, paired_difference  # noqa: E402
from pretrain.augment import reframe  # noqa: E402
from pretrain.data import ClipSource  # noqa: E402
from pretrain.evaluate import evaluate_expert, parse_seeds  # noqa: E402
from unisync_loss.scoring import open_expert  # noqa: E402

DEFAULT_FRAMINGS = ("1,0", "1,-0.1", "1,-0.05", "1,0.05", "1,0.1", "0.85,0", "1.15,0", "1.1,0.1")
"""(scale, dy) pairs: the corpus's own framing, vertical moves, zooms and a detector-like larger, lower crop."""


class ReframedSource(ClipSource):
    """``source`` with every clip's rgb frames seen through one crop rescaled by ``scale`` and moved by ``(0, dy)`` sides."""

    def __init__(self, source: ClipSource, scale: float, dy: float):
        self.source, self.scale, self.dy = source, scale, dy
        self.records = source.records

    def load(self, index: int, representations: Sequence[str]) -> dict[str, Tensor]:
        tensors = dict(self.source.load(index, representations))
        if "rgb" in tensors and (self.scale, self.dy) != (1.0, 0.0):
            frames = tensors["rgb"]  # (n, 3, H, W) uint8: one window of n frames
            window = frames.permute(1, 0, 2, 3)[None].float()
            moved = reframe(window, torch.tensor([self.scale]), torch.tensor([[0.0, self.dy]]))
            tensors["rgb"] = moved[0].permute(1, 0, 2, 3).round().clamp(0, 255).to(torch.uint8)
        return tensors


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", nargs="+", required=True, help="rgb experts (names or files); the first is the baseline")
    parser.add_argument("--framings", nargs="+", default=list(DEFAULT_FRAMINGS), metavar="SCALE,DY")
    parser.add_argument("--heldout-seeds", type=parse_seeds, default=parse_seeds("1-8"))
    parser.add_argument("--heldout-clips", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="an earlier run's JSON: pair with its first expert at the same framing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_framing.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    experts = {name: open_expert(name, "rgb") for name in args.experts}
    data = next(iter(experts.values())).model.expert_header["training"]["data"]["source"]
    source = held_out(data, args.heldout_seeds, args.heldout_clips)
    earlier = {}
    if args.baseline:
        previous = json.loads(args.baseline.read_text())
        earlier = {(row["scale"], row["dy"]): (previous["experts"][0], row["experts"][previous["experts"][0]]) for row in previous["rows"]}
    rows = []
    for framing in args.framings:
        scale, dy = (float(v) for v in framing.split(","))
        reframed = ReframedSource(source, scale, dy)
        row = {"scale": scale, "dy": dy, "experts": {}}
        for name, expert in experts.items():
            result = evaluate_expert(expert.model, reframed, "mel", "rgb")
            row["experts"][name] = {"sync_accuracy": result["sync_accuracy"], "se": result["speaker_accuracy_se"],
                                    "chance": result["chance"], "speakers": result["speakers"],
                                    "per_speaker": {k: v["sync_accuracy"] for k, v in result["per_speaker"].items()}}
        baseline_name, baseline = earlier.get((scale, dy), (args.experts[0], row["experts"][args.experts[0]]))
        for name in args.experts:
            if name != baseline_name:
                mean, se = paired_difference(row["experts"][name], baseline)
                row["experts"][name]["paired_vs_first"] = [mean, se]
                row["experts"][name]["paired_with"] = baseline_name
        rows.append(row)
        print(f"scale {scale:.2f} dy {dy:+.2f}: " + "; ".join(
            f"{Path(n).stem} {100 * r['sync_accuracy']:.1f} ± {100 * r['se']:.1f} %"
            + (f" (paired {100 * r['paired_vs_first'][0]:+.1f} ± {100 * r['paired_vs_first'][1]:.1f})" if "paired_vs_first" in r else "")
            for n, r in row["experts"].items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"experts": args.experts, "heldout_seeds": args.heldout_seeds,
                                    "heldout_clips": args.heldout_clips, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
