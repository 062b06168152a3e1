"""Pretraining benchmark on the procedural corpus: held-out sync accuracy per pair, and the loss ablation.

    python benchmarks/bench_pretrain.py [--steps 2000] [--preset default] [--part all|pairs|ablation|bundled]
        [--pairs mel_rgb,hubert_3dmm,...] [--ablation-pairs mel_rgb,hubert_3dmm] [--ablation-recipes syncnet,...]
        [--heldout-seeds 1-8] [--heldout-clips N]
        [--threads 1] [--out runs/bench_pretrain] [KEY=VALUE ...]

(a) ``pairs``: trains every audio x visual pair (``pretrain/configs/<audio>_<visual>.yaml``) with the
    same budget (``--steps`` optimizer steps at each config's batch size) on the procedural corpus.
    ``bundled`` trains nothing: it scores the experts bundled in ``unisync_loss/experts/`` (which
    ``pairs`` made) the same way.
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
scores on held-out speakers: the test split of the run's corpus recipe drawn with each of
``--heldout-seeds`` (default 1-8: 24 speakers none of which any run trained on; every expert of
one invocation sees the same clips). Reported: sync accuracy (AVST protocol, ±1 frame) as the
mean over speakers ± its standard error, the chance level of the protocol on those clips, offset
MAE, LSE-D / LSE-C analogues; the ablation adds each recipe's paired difference to the
SyncNet-style recipe (mean over speakers of the per-speaker difference ± its standard error).
Runs are started with ``--resume``: rerunning the benchmark continues interrupted runs and reuses
finished ones (``result.json``, the expert and the timing exist; ``train s`` is the wall time of
the training process, corpus generation and final test included).

Prints a Markdown table per part; writes ``OUT/bench_pretrain.json`` (per-speaker accuracies
included) and ``OUT/bench_pretrain.md``. Extra ``KEY=VALUE`` arguments are config overrides
applied to every run (e.g. ``data.speakers=24``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pretrain.config import load_config  # noqa: E402
from pretrain.data import ClipSource  # noqa: E402
from pretrain.evaluate import evaluate_expert, held_out_source, parse_seeds  # noqa: E402
from unisync_loss.experts import bundled_expert_path, load_expert  # noqa: E402
from unisync_loss.model import UniSync  # noqa: E402
from unisync_loss.representations import AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS  # noqa: E402

PAIRS = [f"{audio}_{visual}" for audio in AUDIO_REPRESENTATIONS for visual in VISUAL_REPRESENTATIONS]
ABLATION_PAIRS = ("mel_rgb", "hubert_3dmm")
RECIPES: dict[str, list[str]] = {
    "syncnet": ["loss.margin=0", "sampling.cross_speaker=false", "sampling.other_clip=0"],
    "+margin": ["sampling.cross_speaker=false", "sampling.other_clip=0"],
    "+cross_speaker": ["loss.margin=0", "sampling.other_clip=0"],
    "unisync": [],
}
METRICS = ("sync_accuracy", "speaker_accuracy_se", "chance", "offset_mae", "lse_d", "lse_c", "speakers")
_HELD_OUT: dict[str, ClipSource] = {}
"""Held-out sources by their data recipe, generated once per invocation and shared by every expert."""


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


def held_out(data: dict[str, Any], seeds: Sequence[int], clips_per_speaker: int | None = None) -> ClipSource:
    """The pooled test speakers of corpus recipe ``data`` (a config ``data`` section) under ``seeds``, built once.

    ``clips_per_speaker`` keeps only each speaker's first clips (a clip depends on its seed,
    speaker and index alone, so these are the same clips as in the full corpus).
    """
    recipe = {key: data[key] for key in ("speakers", "clips_per_speaker", "seconds", "preset")}
    recipe["clips_per_speaker"] = clips_per_speaker or recipe["clips_per_speaker"]
    key = json.dumps([recipe, list(seeds)], sort_keys=True)
    if key not in _HELD_OUT:
        _HELD_OUT[key] = held_out_source(recipe, seeds, "test")
    return _HELD_OUT[key]


def evaluate_row(expert: UniSync, data: dict[str, Any], audio: str, visual: str, args: argparse.Namespace) -> dict[str, Any]:
    """Score one expert on the held-out speakers of corpus recipe ``data``; returns the numbers of its table row."""
    result = evaluate_expert(expert, held_out(data, args.heldout_seeds, args.heldout_clips), audio, visual)
    return {**{key: result[key] for key in METRICS}, "clips": result["clips"], "windows": result["windows"],
            "per_speaker": {name: entry["sync_accuracy"] for name, entry in result["per_speaker"].items()}}


def train_once(name: str, command: Sequence[str], run_dir: Path, expert: Path) -> float:
    """Run the ``pretrain.train`` ``command`` (log: ``run_dir/train.log``) unless it finished before; its wall seconds.

    A run counts as finished when its ``result.json``, its exported ``expert`` and the recorded
    wall time exist; an interrupted one is resumed (the command carries ``--resume``).
    """
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
    return float(timing.read_text(encoding="utf-8"))


def run(pair: str, recipe: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) one run, evaluate its expert on held-out speakers; returns its row."""
    name = run_name(pair, recipe)
    command = train_command(pair, recipe, args)
    run_dir = args.out / "runs" / name
    expert = args.out / "experts" / f"{name}.safetensors"
    train_seconds = train_once(name, command, run_dir, expert)
    config = load_config(run_dir / "config.yaml")
    row = {
        "pair": pair, "recipe": recipe, "steps": args.steps, "preset": args.preset,
        **evaluate_row(load_expert(expert), dataclasses.asdict(config.data), config.audio, config.visual, args),
        "train_seconds": round(train_seconds, 1), "expert": str(expert), "command": shlex.join(command[1:]),
    }
    print(f"[{name}] held-out sync accuracy {row['sync_accuracy']:.4f} ± {row['speaker_accuracy_se']:.4f} "
          f"over {row['speakers']} speakers ({row['train_seconds']:.0f} s)", flush=True)
    return row


def bundled(pair: str, args: argparse.Namespace) -> dict[str, Any]:
    """Score the bundled expert of ``pair`` on the held-out speakers of the corpus recorded in its header."""
    audio, visual = pair.split("_", 1)
    path = bundled_expert_path(audio, visual)
    expert = load_expert(path)
    data = expert.expert_header["training"]["data"]["source"]
    row = {"pair": pair, "recipe": "unisync", **evaluate_row(expert, data, audio, visual, args),
           "train_seconds": math.nan, "expert": str(path.relative_to(REPO))}
    print(f"[{pair}] bundled expert: held-out sync accuracy {row['sync_accuracy']:.4f} ± "
          f"{row['speaker_accuracy_se']:.4f} over {row['speakers']} speakers", flush=True)
    return row


def paired_difference(row: dict[str, Any], baseline: dict[str, Any]) -> tuple[float, float]:
    """Mean over speakers of ``row``'s accuracy minus ``baseline``'s on the same speaker, and its standard error."""
    speakers = sorted(set(row["per_speaker"]) & set(baseline["per_speaker"]))
    if len(speakers) < 2:
        raise ValueError(f"paired_difference: need at least 2 common speakers, got {len(speakers)}")
    differences = [row["per_speaker"][s] - baseline["per_speaker"][s] for s in speakers]
    return statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(len(differences))


def markdown(rows: Sequence[dict[str, Any]], first: str) -> str:
    """A Markdown table of ``rows`` with ``first`` ("pair" or "recipe") as the leading column.

    Recipe tables add the paired difference to the same pair's ``syncnet`` row when there is one.
    """
    baselines = {row["pair"]: row for row in rows if row["recipe"] == "syncnet"} if first == "recipe" else {}
    extra = " Δ vs SyncNet-style |" if baselines else ""
    lines = [f"| {first} | sync acc. (±1), mean ± SE over speakers | chance | offset MAE | LSE-D | LSE-C | speakers |{extra} train s |",
             "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if baselines else "") + "---:|"]
    for row in rows:
        label = row["pair"] if first == "pair" else f"{row['pair']} {row['recipe']}"
        cells = [label, f"{100 * row['sync_accuracy']:.1f} ± {100 * row['speaker_accuracy_se']:.1f} %",
                 f"{100 * row['chance']:.1f} %", f"{row['offset_mae']:.2f}", f"{row['lse_d']:.3f}", f"{row['lse_c']:.3f}",
                 str(row["speakers"])]
        if baselines:
            baseline = baselines.get(row["pair"])
            if baseline is None or baseline is row:
                cells.append("")
            else:
                mean, se = paired_difference(row, baseline)
                cells.append(f"{100 * mean:+.1f} ± {100 * se:.1f}")
        cells.append("" if math.isnan(row["train_seconds"]) else f"{row['train_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps of every run (the fixed budget)")
    parser.add_argument("--preset", default="default", help="procedural corpus preset")
    parser.add_argument("--part", choices=("all", "pairs", "ablation", "bundled"), default="all",
                        help="all = pairs + ablation; bundled scores the shipped experts without training")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated pairs for part (a)")
    parser.add_argument("--ablation-pairs", default=",".join(ABLATION_PAIRS), help="comma-separated pairs for part (b)")
    parser.add_argument("--ablation-recipes", default=",".join(RECIPES), help=f"comma-separated recipes for part (b), of {list(RECIPES)}")
    parser.add_argument("--heldout-seeds", type=parse_seeds, default=parse_seeds("1-8"),
                        help="corpus seeds whose test speakers score every expert (default 1-8: 24 speakers)")
    parser.add_argument("--heldout-clips", type=int, help="clips per held-out speaker (default: the corpus recipe's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_pretrain")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run")
    args = parser.parse_args(argv)
    unknown = sorted((set(args.pairs.split(",")) | set(args.ablation_pairs.split(","))) - set(PAIRS))
    if unknown:
        parser.error(f"unknown pair(s) {unknown}; expected some of {PAIRS}")
    if not set(args.ablation_recipes.split(",")) <= set(RECIPES):
        parser.error(f"unknown recipe(s) in {args.ablation_recipes!r}; expected some of {list(RECIPES)}")
    args.out = args.out.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"steps": args.steps, "preset": args.preset, "overrides": args.overrides,
                              "heldout_seeds": args.heldout_seeds, "heldout_clips": args.heldout_clips}
    sections = []
    held_out_text = (f"held-out: test speakers of corpus seeds {args.heldout_seeds}"
                     + (f", {args.heldout_clips} clips each" if args.heldout_clips else ""))
    if args.part == "bundled":
        report["bundled"] = [bundled(pair, args) for pair in args.pairs.split(",")]
        sections.append(f"### Bundled experts ({held_out_text})\n\n" + markdown(report["bundled"], "pair"))
    if args.part in ("all", "pairs"):
        report["pairs"] = [run(pair, "unisync", args) for pair in args.pairs.split(",")]
        sections.append(f"### Held-out sync accuracy, all pairs ({args.steps} steps, preset {args.preset}, {held_out_text})\n\n"
                        + markdown(report["pairs"], "pair"))
    if args.part in ("all", "ablation"):
        report["ablation"] = [run(pair, recipe, args) for pair in args.ablation_pairs.split(",")
                              for recipe in RECIPES if recipe in args.ablation_recipes.split(",")]
        sections.append(f"### Ablation ({args.steps} steps, preset {args.preset}, {held_out_text})\n\n"
                        + markdown(report["ablation"], "recipe"))
    text = "\n\n".join(sections)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_pretrain.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (args.out / "bench_pretrain.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return report


if __name__ == "__main__":
    main()
