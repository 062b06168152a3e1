"""Pretraining benchmark on the procedural corpus: held-out sync accuracy per pair, and the loss ablation.

    python benchmarks/bench_pretrain.py [--steps 2000] [--preset default] [--part all|pairs|ablation]
        [--pairs mel_rgb,hubert_3dmm,...] [--ablation-pairs mel_rgb,hubert_3dmm] [--threads 1] [--out runs/bench_pretrain] [KEY=VALUE ...]

(a) ``pairs``: trains every audio x visual pair (``pretrain/configs/<audio>_<visual>.yaml``) with the
    same budget (``--steps`` optimizer steps at each config's batch size) on the procedural corpus.
(b) ``ablation``: for mel x rgb and hubert x 3dmm, four recipes (overrides of the same configs):

    =================  ============================================================================
    syncnet            BCE only, negatives from the same clip only (loss.margin=0,
                       sampling.cross_speaker=false, sampling.other_clip=0): the SyncNet recipe
    +margin            BCE + margin term, same-clip negatives
    +cross_speaker     BCE, same-clip + cross-speaker negatives
    unisync            the configs' defaults: BCE + margin, same-clip, other clips of the speaker
                       and cross-speaker negatives
    =================  ============================================================================

Each run is a separate ``python -m pretrain.train`` process (its exact command is recorded with its
row; its log goes to ``OUT/runs/<name>/train.log``) exporting its best expert (best validation
accuracy) to ``OUT/experts/<name>.safetensors``, which ``pretrain.evaluate.evaluate_expert`` then
scores on the test split (held-out speakers): sync accuracy (AVST protocol, ±1 frame), offset MAE,
LSE-D / LSE-C analogues. Runs are started with ``--resume``: rerunning the benchmark continues
interrupted runs and reuses finished ones (``result.json``, the expert and the timing exist;
``train s`` is the wall time of the training process, corpus generation and final test included).

Prints a Markdown table per part; writes ``OUT/bench_pretrain.json`` and ``OUT/bench_pretrain.md``.
Extra ``KEY=VALUE`` arguments are config overrides applied to every run (e.g. ``data.speakers=24``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pretrain.config import load_config  # noqa: E402
from pretrain.data import open_source  # noqa: E402
from pretrain.evaluate import evaluate_expert  # noqa: E402
from unisync_loss.experts import load_expert  # noqa: E402
from unisync_loss.representations import AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS  # noqa: E402

PAIRS = [f"{audio}_{visual}" for audio in AUDIO_REPRESENTATIONS for visual in VISUAL_REPRESENTATIONS]
ABLATION_PAIRS = ("mel_rgb", "hubert_3dmm")
RECIPES: dict[str, list[str]] = {
    "syncnet": ["loss.margin=0", "sampling.cross_speaker=false", "sampling.other_clip=0"],
    "+margin": ["sampling.cross_speaker=false", "sampling.other_clip=0"],
    "+cross_speaker": ["loss.margin=0", "sampling.other_clip=0"],
    "unisync": [],
}
METRICS = ("sync_accuracy", "offset_mae", "lse_d", "lse_c")


def run_name(pair: str, recipe: str) -> str:
    """Folder / expert name of one run, e.g. ``mel_rgb-unisync``."""
    return f"{pair}-{recipe.lstrip('+')}"


def train_command(pair: str, recipe: str, args: argparse.Namespace) -> list[str]:
    """The ``python -m pretrain.train`` command line of one run."""
    name = run_name(pair, recipe)
    overrides = [
        f"optim.steps={args.steps}",
        f"data.preset={args.preset}",
        f"threads={args.threads}",
        f"output_dir={args.out / 'runs' / name}",
        *RECIPES[recipe],
        *args.overrides,
    ]
    return [sys.executable, "-m", "pretrain.train", "--config", f"pretrain/configs/{pair}.yaml",
            "--resume", "--export", str(args.out / "experts" / f"{name}.safetensors"), *overrides]


def run(pair: str, recipe: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) one run, evaluate its expert on held-out speakers; returns its row."""
    name = run_name(pair, recipe)
    command = train_command(pair, recipe, args)
    run_dir = args.out / "runs" / name
    expert = args.out / "experts" / f"{name}.safetensors"
    timing = run_dir / "bench_seconds.txt"
    if not ((run_dir / "result.json").exists() and expert.exists() and timing.exists()):
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"[{name}] {shlex.join(command)}", flush=True)
        started = time.perf_counter()
        with open(run_dir / "train.log", "a", encoding="utf-8") as log:
            completed = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"[{name}] training failed (exit {completed.returncode}); see {run_dir / 'train.log'}")
        timing.write_text(f"{time.perf_counter() - started:.1f}\n", encoding="utf-8")
    train_seconds = float(timing.read_text(encoding="utf-8"))
    config = load_config(run_dir / "config.yaml")
    result = evaluate_expert(load_expert(expert), open_source(config.data, "test"), config.audio, config.visual)
    row = {
        "pair": pair, "recipe": recipe, "steps": args.steps, "preset": args.preset,
        **{key: result[key] for key in METRICS}, "clips": result["clips"], "windows": result["windows"],
        "train_seconds": round(train_seconds, 1), "expert": str(expert), "command": shlex.join(command[1:]),
    }
    print(f"[{name}] held-out sync accuracy {row['sync_accuracy']:.4f} ({row['train_seconds']:.0f} s)", flush=True)
    return row


def markdown(rows: Sequence[dict[str, Any]], first: str) -> str:
    """A Markdown table of ``rows`` with ``first`` ("pair" or "recipe") as the leading column."""
    header = f"| {first} | sync acc. (±1) | offset MAE | LSE-D | LSE-C | clips | train s |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        label = row["pair"] if first == "pair" else f"{row['pair']} {row['recipe']}"
        lines.append(
            f"| {label} | {100 * row['sync_accuracy']:.1f} % | {row['offset_mae']:.2f} | {row['lse_d']:.3f} | "
            f"{row['lse_c']:.3f} | {row['clips']} | {row['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps of every run (the fixed budget)")
    parser.add_argument("--preset", default="default", help="procedural corpus preset")
    parser.add_argument("--part", choices=("all", "pairs", "ablation"), default="all")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated pairs for part (a)")
    parser.add_argument("--ablation-pairs", default=",".join(ABLATION_PAIRS), help="comma-separated pairs for part (b)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_pretrain")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run")
    args = parser.parse_args(argv)
    unknown = sorted((set(args.pairs.split(",")) | set(args.ablation_pairs.split(","))) - set(PAIRS))
    if unknown:
        parser.error(f"unknown pair(s) {unknown}; expected some of {PAIRS}")
    args.out = args.out.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"steps": args.steps, "preset": args.preset, "overrides": args.overrides}
    sections = []
    if args.part in ("all", "pairs"):
        report["pairs"] = [run(pair, "unisync", args) for pair in args.pairs.split(",")]
        sections.append(f"### Held-out sync accuracy, all pairs ({args.steps} steps, preset {args.preset})\n\n"
                        + markdown(report["pairs"], "pair"))
    if args.part in ("all", "ablation"):
        report["ablation"] = [run(pair, recipe, args) for pair in args.ablation_pairs.split(",") for recipe in RECIPES]
        sections.append(f"### Ablation ({args.steps} steps, preset {args.preset})\n\n" + markdown(report["ablation"], "recipe"))
    text = "\n\n".join(sections)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_pretrain.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (args.out / "bench_pretrain.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return report


if __name__ == "__main__":
    main()
