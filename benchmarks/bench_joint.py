"""Joint pretraining benchmark on the procedural corpus: one space for several representations vs one expert per pair.

    python benchmarks/bench_joint.py [--part all|joint|scratch|newhead|unseen] [--pairs hubert_landmarks,hubert_3dmm|all]
        [--disjoint mel_landmarks,hubert_3dmm]
        [--steps 1500] [--pair-batch 64]
        [--curve-steps 25,50,100,200,400] [--heldout-seeds 1-8] [--heldout-clips 3] [--threads 1]
        [--out runs/bench_joint] [KEY=VALUE ...]

Every run is a ``python -m pretrain.train`` process on ``pretrain/configs/unified.yaml`` (or a pair
config), with the recipe of the bundled per-pair experts (``unisync_loss/experts/procedural_<pair>``:
hidden 64, embed_dim 64, the pair configs' optimiser and corpus, training seed 0) and a batch of
``--pair-batch`` pairs *per trained pair*, so that a joint run of k pairs for ``--steps`` steps
spends exactly the budget of k per-pair runs (steps x batch, summed).
Every figure is the held-out sync accuracy of bench_pretrain (test speakers of corpus seeds
``--heldout-seeds``, ``--heldout-clips`` clips each, mean ± SE over speakers, paired differences).

Parts:

* ``joint``: trains ``--pairs`` jointly (default hubert x {landmarks, 3dmm}; ``all``: the 8 pairs of
  unified.yaml); scores each pair next to the bundled per-pair expert (same clips, paired
  difference per speaker); cross-representation retrieval between every two representations of a
  modality in the joint space (pretrain.space). Writes ``OUT/<run name>.json`` / ``.md``.
* ``scratch``: mel x 3dmm from scratch on the short curve schedule (``--curve-steps``, warm-up 25),
  each checkpoint scored. Independent of the others (can run beside ``joint``).
* ``newhead``: a new audio head (mel, ε3) trained on mel x 3dmm against the joint expert's frozen
  shared layers and visual heads (``init.expert`` / ``init.freeze``), same schedule, each
  checkpoint scored next to ``scratch`` (accuracy vs steps, ``OUT/newhead_curve.png``); the pair
  the new-head expert never trained, mel x landmarks, scored next to its bundled per-pair expert;
  retrieval mel <-> hubert. Needs ``joint`` (trains it when absent) and reads ``OUT/scratch.json``.
* ``unseen``: the ``--disjoint`` pairs trained jointly and nothing else (default mel x landmarks +
  hubert x 3dmm; the issue's example is mel_rgb,hubert_3dmm); scored on those and on the
  combinations of their representations no step trained (by default mel x 3dmm and hubert x
  landmarks), each next to its bundled per-pair expert; retrieval across both modalities. Writes ``OUT/unseen_<pairs>.json`` / ``.md``.

Runs are started with ``--resume`` and reused when finished (``result.json``, the expert and the
timing exist), so an interrupted benchmark continues. Each part writes ``OUT/<part>.json`` (with the
exact training commands and per-speaker figures) and ``OUT/<part>.md`` (its Markdown tables).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_pretrain import evaluate_row, held_out, paired_difference, train_once  # noqa: E402
from pretrain.config import load_config  # noqa: E402
from pretrain.evaluate import parse_seeds  # noqa: E402
from pretrain.export import model_from_checkpoint  # noqa: E402
from pretrain.space import retrieval  # noqa: E402
from unisync_loss.experts import bundled_expert_path, load_expert  # noqa: E402
from unisync_loss.model import UniSync  # noqa: E402

UNIFIED = "pretrain/configs/unified.yaml"
RECIPE = ["model.hidden=64", "model.embed_dim=64", "eval.every=500", "checkpoint.every=500"]
"""The bundled per-pair experts' recipe (their headers record it), applied to every run."""
JOINT_PAIRS = [("hubert", "landmarks"), ("hubert", "3dmm")]
"""The joint run the new head is added to (and ``--part joint``'s default ``--pairs``)."""
NEW_PAIR = ("mel", "3dmm")
"""The new head's pair (mel, ε3) and the pair that stays untrained in the new-head expert."""
UNSEEN_PAIR = ("mel", "landmarks")
DISJOINT_PAIRS = [("mel", "landmarks"), ("hubert", "3dmm")]
"""``--part unseen``'s default ``--disjoint``: mel x 3dmm and hubert x landmarks stay untrained combinations."""


def train(name: str, config: str, overrides: Sequence[str], args: argparse.Namespace) -> tuple[Path, Path, float]:
    """Run (or reuse) one ``pretrain.train`` process; returns its output dir, its expert and its wall seconds."""
    run_dir, expert = args.out / "runs" / name, args.out / "experts" / f"{name}.safetensors"
    command = [sys.executable, "-m", "pretrain.train", "--config", config, "--resume", "--export", str(expert),
               f"threads={args.threads}", f"output_dir={run_dir}", *overrides, *args.overrides]
    args.commands[name] = shlex.join(command[1:])
    return run_dir, expert, train_once(name, command, run_dir, expert)


def representations(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The audio and the visual representations of ``pairs``, each once, in order of appearance."""
    return list(dict.fromkeys(a for a, _ in pairs)), list(dict.fromkeys(v for _, v in pairs))


def joint_name(pairs: Sequence[tuple[str, str]]) -> str:
    """Run name of a joint run: ``joint`` for the default pairs, ``joint_mel+hubert_x_rgb+3dmm`` for every
    combination of some representations, else the pairs (``joint_mel_landmarks+hubert_3dmm``)."""
    if list(pairs) == JOINT_PAIRS:
        return "joint"
    audios, visuals = representations(pairs)
    if len(set(pairs)) == len(audios) * len(visuals):
        return f"joint_{'+'.join(audios)}_x_{'+'.join(visuals)}"
    return "joint_" + "+".join(f"{audio}_{visual}" for audio, visual in pairs)


def joint_overrides(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Overrides of unified.yaml that train exactly ``pairs``: their representations (unified.yaml's options),
    and ``joint.pairs`` unless the pairs are every audio x visual combination of them."""
    model = load_config(REPO / UNIFIED).model
    audios, visuals = representations(pairs)
    overrides = [f"model.audio={json.dumps({a: model.audio[a] for a in audios})}",
                 f"model.visual={json.dumps({v: model.visual[v] for v in visuals})}"]
    if len(set(pairs)) < len(audios) * len(visuals):
        overrides.append(f"joint.pairs={json.dumps([list(pair) for pair in pairs])}")
    return overrides


def train_joint(args: argparse.Namespace, pairs: Sequence[tuple[str, str]] = tuple(JOINT_PAIRS)) -> tuple[Path, float]:
    """A joint run of ``pairs`` at the per-pair recipe: ``--steps`` steps, ``--pair-batch`` pairs per trained pair."""
    overrides = [*RECIPE, f"optim.steps={args.steps}", f"optim.batch_size={args.pair_batch * len(pairs)}", *joint_overrides(pairs)]
    _, expert, seconds = train(joint_name(pairs), UNIFIED, overrides, args)
    return expert, seconds


def score(model: UniSync, audio: str, visual: str, args: argparse.Namespace) -> dict[str, Any]:
    """Held-out sync accuracy of one pair (bench_pretrain's protocol; the clips of the bundled experts' corpus recipe)."""
    return evaluate_row(model, args.data, audio, visual, args)


def bundled(audio: str, visual: str, args: argparse.Namespace) -> dict[str, Any]:
    return score(load_expert(bundled_expert_path(audio, visual)), audio, visual, args)


def pct(row: dict[str, Any]) -> str:
    return f"{100 * row['sync_accuracy']:.1f} ± {100 * (row['speaker_accuracy_se'] or 0):.1f} %"


def diff(row: dict[str, Any], baseline: dict[str, Any]) -> str:
    mean, se = paired_difference(row, baseline)
    return f"{100 * mean:+.1f} ± {100 * se:.1f}"


def part_joint(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Joint (``--pairs``) vs the bundled per-pair experts; retrieval between every two representations of a modality."""
    expert_path, seconds = train_joint(args, args.pairs)
    joint = load_expert(expert_path)
    rows, lines = [], ["| pair | joint expert (one space) | per-pair expert (bundled) | Δ joint − per-pair (paired) |",
                       "|---|---:|---:|---:|"]
    for audio, visual in args.pairs:
        mine, single = score(joint, audio, visual, args), bundled(audio, visual, args)
        rows.append({"pair": f"{audio}_{visual}", "joint": mine, "per_pair": single})
        lines.append(f"| {audio} × {visual} | {pct(mine)} | {pct(single)} | {diff(mine, single)} |")
        print(lines[-1], flush=True)
    speakers = rows[0]["joint"]["per_speaker"]
    mean = {key: {"per_speaker": {s: sum(r[key]["per_speaker"][s] for r in rows) / len(rows) for s in speakers}}
            for key in ("joint", "per_pair")}
    lines.append(f"| mean of the {len(rows)} pairs | | | {diff(mean['joint'], mean['per_pair'])} |")
    found = retrievals(joint, within_modality(args.pairs), args)
    result = {"pairs": [list(pair) for pair in args.pairs], "rows": rows, "retrieval": found, "train_seconds": seconds,
              "expert": str(expert_path)}
    return result, [f"#### Joint vs per-pair ({args.steps} steps; joint batch {len(args.pairs) * args.pair_batch} = "
                    f"{args.pair_batch} per pair, per-pair experts batch {args.pair_batch}; joint training {seconds:.0f} s wall)",
                    "\n".join(lines), "#### Cross-representation retrieval in the joint space", retrieval_table(found)]


def retrievals(model: UniSync, pairs: Sequence[tuple[str, str]], args: argparse.Namespace) -> list[dict[str, Any]]:
    source = held_out(args.data, args.heldout_seeds, args.heldout_clips)
    results = []
    for query, target in pairs:
        results.append(retrieval(model, source, query, target))
        print(f"[retrieval] {query} -> {target}: {results[-1]['accuracy']:.3f} (chance {results[-1]['chance']:.3f})", flush=True)
    return results


def retrieval_table(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| query → target | retrieved within ±1 frame | exact window | chance (±1) | speakers |", "|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['query']} → {r['target']} | {100 * r['accuracy']:.1f} ± {100 * (r['speaker_se'] or 0):.1f} % | "
                     f"{100 * r['exact']:.1f} ± {100 * (r['exact_se'] or 0):.1f} % | {100 * r['chance']:.1f} % | {r['speakers']} |")
    return "\n".join(lines)


def part_unseen(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """An expert trained on the ``--disjoint`` pairs only, scored on those and on the combinations of its heads no step trained."""
    pairs = args.disjoint
    expert_path, seconds = train_joint(args, pairs)
    model = load_expert(expert_path)
    lines = ["| pair | trained? | disjoint expert | per-pair expert (bundled, trained on the pair) | Δ (paired) |",
             "|---|---|---:|---:|---:|"]
    rows = []
    audios, visuals = representations(pairs)
    untrained = [(audio, visual) for audio in audios for visual in visuals if (audio, visual) not in pairs]
    for audio, visual in [*pairs, *untrained]:
        trained = (audio, visual) in pairs
        mine, single = score(model, audio, visual, args), bundled(audio, visual, args)
        rows.append({"pair": f"{audio}_{visual}", "trained": trained, "disjoint": mine, "per_pair": single})
        lines.append(f"| {audio} × {visual} | {'yes' if trained else '**never**'} | {pct(mine)} | {pct(single)} | {diff(mine, single)} |")
        print(lines[-1], flush=True)
    found = retrievals(model, within_modality(pairs), args)
    result = {"pairs": [list(pair) for pair in pairs], "rows": rows, "retrieval": found, "train_seconds": seconds,
              "expert": str(expert_path), "chance": rows[0]["disjoint"]["chance"]}
    names = " + ".join(f"{audio} × {visual}" for audio, visual in pairs)
    return result, [f"#### Unseen pairs: an expert trained on {names} only ({args.steps} steps, batch "
                    f"{len(pairs) * args.pair_batch}; training {seconds:.0f} s wall; chance {100 * result['chance']:.1f} %)",
                    "\n".join(lines), "Retrieval in the same expert:", retrieval_table(found)]


def within_modality(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every ordered (query, target) of two different audio, or two different visual, representations of ``pairs``."""
    audios, visuals = representations(pairs)
    return [(query, target) for group in (audios, visuals) for query in group for target in group if query != target]


def curve_schedule(args: argparse.Namespace) -> list[str]:
    """The short schedule of the new-head and scratch runs, with a checkpoint at every curve step."""
    last = max(args.curve_steps)
    return [*RECIPE, f"optim.steps={last}", "optim.warmup_steps=25", f"optim.batch_size={args.pair_batch}",
            f"checkpoint.every={min(args.curve_steps)}", "checkpoint.keep=1000", f"eval.every={last}"]


def curve(run_dir: Path, pair: tuple[str, str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Held-out accuracy of the checkpoints of a run at ``--curve-steps``."""
    points = []
    for step in args.curve_steps:
        model, _ = model_from_checkpoint(run_dir, f"step_{step:06d}")
        points.append({"step": step, **score(model, *pair, args)})
        print(f"[curve] {run_dir.name} step {step}: {pct(points[-1])}", flush=True)
    return points


def part_scratch(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The new head's pair trained from scratch on the curve schedule, scored at every curve step."""
    audio, visual = NEW_PAIR
    run_dir, _, seconds = train(f"scratch_{audio}_{visual}", f"pretrain/configs/{audio}_{visual}.yaml", curve_schedule(args), args)
    return {"curve": curve(run_dir, NEW_PAIR, args), "train_seconds": seconds}, []


def part_newhead(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """A new mel head (ε3) trained against the frozen joint space vs the pair from scratch; the untrained pair it leaves."""
    start, _ = train_joint(args)
    audio, visual = NEW_PAIR
    run_dir, new_path, seconds = train(f"newhead_{audio}", UNIFIED, [
        *curve_schedule(args), "model.audio={mel: {}}", "model.visual={3dmm: {dim: 64}}", f"init.expert={start}",
        "init.freeze=[audio_unified, visual_unified, visual_heads]"], args)
    scratch_file = args.out / "scratch.json"
    scratch = json.loads(scratch_file.read_text(encoding="utf-8")) if scratch_file.exists() else part_scratch(args)[0]
    added = load_expert(new_path)
    result = {"frozen": curve(run_dir, NEW_PAIR, args), "scratch": scratch["curve"], "train_seconds": seconds,
              "scratch_train_seconds": scratch["train_seconds"], "per_pair_1500": bundled(*NEW_PAIR, args),
              "unseen": score(added, *UNSEEN_PAIR, args), "unseen_per_pair": bundled(*UNSEEN_PAIR, args),
              "retrieval": retrievals(added, [("mel", "hubert"), ("hubert", "mel")], args)}
    lines = [f"| steps (batch {args.pair_batch}) | new {audio} head, frozen joint space | {audio} × {visual} from scratch | Δ (paired) |",
             "|---:|---:|---:|---:|"]
    for frozen, fresh in zip(result["frozen"], result["scratch"]):
        lines.append(f"| {frozen['step']} | {pct(frozen)} | {pct(fresh)} | {diff(frozen, fresh)} |")
    lines.append(f"| 1500 (bundled per-pair expert) | | {pct(result['per_pair_1500'])} | |")
    plot_curve(result, args.out / "newhead_curve.png", args.pair_batch)
    unseen = (f"Never-trained pair of the new-head expert, {UNSEEN_PAIR[0]} × {UNSEEN_PAIR[1]}: {pct(result['unseen'])} "
              f"(bundled per-pair expert trained on it: {pct(result['unseen_per_pair'])}, "
              f"paired Δ {diff(result['unseen'], result['unseen_per_pair'])}; chance {100 * result['unseen']['chance']:.1f} %)")
    return result, [f"#### Adding a representation: {audio} head (ε3) trained on {audio} × {visual} against the frozen "
                    f"hubert × {{landmarks, 3dmm}} space", "\n".join(lines), unseen, retrieval_table(result["retrieval"])]


def plot_curve(result: dict[str, Any], path: Path, batch: int) -> None:
    """Accuracy vs steps, frozen-space new head vs from scratch, with ±SE bars and the 1500-step per-pair expert."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("frozen", "new mel head, frozen joint space"), ("scratch", "mel × 3dmm from scratch")):
        points = result[key]
        ax.errorbar([p["step"] for p in points], [100 * p["sync_accuracy"] for p in points],
                    yerr=[100 * (p["speaker_accuracy_se"] or 0) for p in points], marker="o", capsize=3, label=label)
    ax.axhline(100 * result["per_pair_1500"]["sync_accuracy"], color="gray", linestyle="--", label="per-pair expert, 1500 steps")
    ax.axhline(100 * result["per_pair_1500"]["chance"], color="gray", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks([p["step"] for p in result["frozen"]], [str(p["step"]) for p in result["frozen"]])
    ax.minorticks_off()
    ax.set_xlabel(f"optimizer steps (batch {batch})")
    ax.set_ylabel("held-out sync accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``audio_visual,...`` (or ``all``: every pair of unified.yaml) -> ``[(audio, visual), ...]``."""
    model = load_config(REPO / UNIFIED).model
    if text == "all":
        return [(audio, visual) for audio in model.audio for visual in model.visual]
    pairs = [tuple(item.split("_", 1)) for item in text.split(",")]
    if any(len(pair) != 2 or pair[0] not in model.audio or pair[1] not in model.visual for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected pairs like hubert_3dmm,mel_rgb (audio in {list(model.audio)}, "
                                         f"visual in {list(model.visual)}) or 'all', got {text!r}")
    return pairs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "joint", "scratch", "newhead", "unseen"), default="all",
                        help="scratch and unseen can run beside joint; newhead needs the joint run (trains it when absent)")
    parser.add_argument("--pairs", type=parse_pairs, default=JOINT_PAIRS,
                        help="pairs of the joint part, e.g. hubert_landmarks,hubert_3dmm (the default) or 'all' (unified.yaml's 8)")
    parser.add_argument("--disjoint", type=parse_pairs, default=DISJOINT_PAIRS,
                        help="pairs of the unseen part, sharing no representation (default mel_landmarks,hubert_3dmm)")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps of the joint runs (the per-pair experts' 1500)")
    parser.add_argument("--pair-batch", type=int, default=64, help="pairs per trained pair in each batch (the per-pair experts' 64)")
    parser.add_argument("--curve-steps", type=lambda text: sorted(int(s) for s in text.split(",")), default=[25, 50, 100, 200, 400],
                        help="checkpoints scored for the new-head curve; the last is the length of both runs")
    parser.add_argument("--heldout-seeds", type=parse_seeds, default=parse_seeds("1-8"), help="corpus seeds of the held-out speakers")
    parser.add_argument("--heldout-clips", type=int, default=3, help="clips per held-out speaker")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_joint")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.commands = {}
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.data = load_expert(bundled_expert_path(*NEW_PAIR)).expert_header["training"]["data"]["source"]
    parts = {"joint": part_joint, "scratch": part_scratch, "newhead": part_newhead, "unseen": part_unseen}
    report: dict[str, Any] = {"steps": args.steps, "pair_batch": args.pair_batch, "heldout_seeds": args.heldout_seeds,
                              "heldout_clips": args.heldout_clips, "overrides": args.overrides}
    for part in (parts if args.part == "all" else [args.part]):
        result, sections = parts[part](args)
        name = {"joint": joint_name(args.pairs), "unseen": joint_name(args.disjoint).replace("joint", "unseen", 1)}.get(part, part)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}.json").write_text(json.dumps({**report, **result, "commands": args.commands}, indent=1), encoding="utf-8")
        (args.out / f"{name}.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")
        print("\n\n".join(sections), flush=True)
    return report


if __name__ == "__main__":
    main()
