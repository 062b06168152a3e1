"""Does the UniSync loss make a generator's lips more in sync? Measured on the procedural corpus's ground truth.

    python benchmarks/generator_sync.py [--size full|reduced|tiny] [--seeds 3] [--preset default]
        [--out runs/generator_sync] [--threads 1]

A GeneFace-like motion generator (HuBERT stand-in -> 64 3DMM expression coefficients,
``benchmarks/generators/motion.py``) is trained three ways at equal budget and seed:

    (a) reconstruction (MSE) only
    (b) + a SyncNet-style expert loss: hubert x 3dmm expert pretrained with BCE and same-clip negatives only
    (c) + the UniSync loss: same architecture, steps and seed, full UniSync recipe

Steps (``benchmarks/generators/`` holds each piece):

1. the procedural corpus is written once to ``OUT/corpus_*`` (speakers split into train / val /
   test); every expert and generator trains on the train speakers only;
2. three kinds of experts (``experts.py``): per seed a SyncNet-recipe and a UniSync-recipe loss
   expert, and once an independent evaluator (mel x 3dmm, other seed and width, never a loss);
3. the sync-loss weight of (b) and of (c) is chosen among ``size.weights`` (Wav2Lip / GeneFace
   ranges) on the **validation** speakers, first seed, by the ground-truth mouth error;
4. every variant x seed is scored on the **test** speakers (``scoring.py``): ground-truth mouth
   error, best-correlation lag, oracle sync accuracy, evaluator sync accuracy and LSE-D / LSE-C
   analogues, reconstruction MSE; plus the ceiling (the same measures on the true coefficients).

Writes ``OUT/generator_sync.json`` (everything, per seed), ``OUT/generator_sync.md`` (the table
with mean +- spread over seeds and the paired verdicts (c) vs (b), (b) vs (a)) and
``OUT/jaw_tracks.png`` (the first test clip's true jaw opening against each variant, first seed).
Finished experts and generator runs are reused, so an interrupted benchmark continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.generators.experts import EVALUATOR_SEED_OFFSET, LOSS_ROLES, train_expert  # noqa: E402
from benchmarks.generators.motion import MotionClip, MotionTraining, generate_motion, load_motion_clips, train_motion  # noqa: E402
from benchmarks.generators.report import aggregate, markdown_table, plot_jaw_tracks, verdict  # noqa: E402
from benchmarks.generators.scoring import JAW, score_motion  # noqa: E402
from pretrain.data import FolderSource  # noqa: E402
from pretrain.synth.corpus import SPLITS, write_corpus  # noqa: E402
from unisync_loss import UniSyncLoss  # noqa: E402
from unisync_loss.experts import load_expert  # noqa: E402
from unisync_loss.model import UniSync  # noqa: E402

VARIANTS = {"a": "(a) reconstruction only", "b": "(b) + SyncNet-style loss", "c": "(c) + UniSync loss"}
VARIANT_ROLE = {"b": "syncnet", "c": "unisync"}


@dataclass(frozen=True)
class BenchSize:
    """Corpus, expert and generator budgets of one benchmark size."""

    speakers: int
    clips_per_speaker: int
    seconds: float
    expert_steps: int
    expert_hidden: int
    evaluator_hidden: int
    motion: MotionTraining
    weights: tuple[float, ...]
    corpus_seed: int = 0


SIZES = {
    # 32 speakers split 26 / 3 / 3, as the pretraining benchmark; experts as in BENCHMARKS.md (1500 steps, width 64).
    "full": BenchSize(32, 6, 4.0, expert_steps=1500, expert_hidden=64, evaluator_hidden=96,
                      motion=MotionTraining(steps=1500), weights=(0.01, 0.03, 0.1)),
    # Same corpus, shorter expert and generator training: the size run in the development session.
    "reduced": BenchSize(32, 6, 4.0, expert_steps=600, expert_hidden=64, evaluator_hidden=96,
                         motion=MotionTraining(steps=600), weights=(0.03, 0.1)),
    # Seconds: the CI smoke test (structure only; its numbers mean nothing).
    "tiny": BenchSize(5, 2, 2.0, expert_steps=12, expert_hidden=32, evaluator_hidden=48,
                      motion=MotionTraining(steps=6, batch=4, segment=16, hidden=32), weights=(0.03, 0.1)),
}


def ensure_corpus(out: Path, size: BenchSize, preset: str) -> Path:
    """The corpus of ``size`` on disk under ``out`` (written once; ``manifest.json`` marks it complete)."""
    root = out / f"corpus_{size.speakers}x{size.clips_per_speaker}x{size.seconds:g}s_{preset}_seed{size.corpus_seed}"
    if not (root / "manifest.json").exists():
        write_corpus(root, size.speakers, size.clips_per_speaker, size.seconds, preset, size.corpus_seed, workers=1,
                     progress=False)
    return root


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


class GeneratorRuns:
    """Trains and scores generator runs, each once: ``OUT/generators/<variant>_w<weight>_seed<seed>.json``."""

    def __init__(self, out: Path, size: BenchSize, clips: dict[str, list[MotionClip]], evaluator: UniSync,
                 loss_experts: dict[tuple[str, int], Path], log: Callable[[str], None]):
        self.folder = out / "generators"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.size, self.clips, self.evaluator, self.loss_experts, self.log = size, clips, evaluator, loss_experts, log

    def run(self, variant: str, weight: float, seed: int) -> dict:
        """Scores on ``val`` and ``test`` of one trained generator, plus its first test clip's jaw track."""
        path = self.folder / f"{variant}_w{weight:g}_seed{seed}.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        started = time.perf_counter()
        loss = UniSyncLoss("hubert", "3dmm", weights=self.loss_experts[VARIANT_ROLE[variant], seed]) if weight else None
        model = train_motion(self.clips["train"], self.size.motion, seed, loss, weight, desc=f"{variant} w={weight:g} seed {seed}")
        result: dict = {"variant": variant, "weight": weight, "seed": seed}
        for split in ("val", "test"):
            outputs = generate_motion(model, self.clips[split])
            result[split] = score_motion(self.clips[split], outputs, self.evaluator)
            if split == "test":
                result["example_jaw"] = outputs[0][:, JAW].tolist()
        result["seconds"] = time.perf_counter() - started
        write_atomic(path, json.dumps(result))
        self.log(f"{VARIANTS[variant]} w={weight:g} seed {seed}: val mouth MAE {result['val']['mouth_mae']:.4f}, "
                 f"test {result['test']['mouth_mae']:.4f} ({result['seconds']:.0f} s)")
        return result


def run_benchmark(out: Path, size_name: str = "full", seeds: Sequence[int] = (0, 1, 2), preset: str = "default",
                  log: Callable[[str], None] = print) -> dict:
    """Run (or continue) the whole benchmark; returns what ``OUT/generator_sync.json`` holds."""
    if size_name not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size_name!r}")
    if not seeds:
        raise ValueError("seeds: expected at least one generator seed, got none")
    size, started = SIZES[size_name], time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(out, size, preset)
    clips = {split: load_motion_clips(FolderSource(corpus, split)) for split in SPLITS}
    log(f"corpus {corpus.name}: " + ", ".join(f"{split} {len(c)} clips" for split, c in clips.items()))

    evaluator_path, evaluator_run = train_expert("evaluator", corpus, out, size.expert_steps, size.evaluator_hidden,
                                                 EVALUATOR_SEED_OFFSET + seeds[0])
    experts = {"evaluator": {"path": str(evaluator_path), "test_accuracy": evaluator_run["test_accuracy"]}}
    loss_experts = {}
    for seed in seeds:
        for role in LOSS_ROLES:
            path, run = train_expert(role, corpus, out, size.expert_steps, size.expert_hidden, seed)
            loss_experts[role, seed] = path
            experts[f"{role}_seed{seed}"] = {"path": str(path), "test_accuracy": run["test_accuracy"]}
    log("experts (held-out sync accuracy): " + ", ".join(f"{k} {v['test_accuracy']:.3f}" for k, v in experts.items()))
    runs = GeneratorRuns(out, size, clips, load_expert(evaluator_path), loss_experts, log)

    selection, chosen = {}, {"a": 0.0}
    for variant in VARIANT_ROLE:
        val_error = {weight: runs.run(variant, weight, seeds[0])["val"]["mouth_mae"] for weight in size.weights}
        chosen[variant] = min(size.weights, key=lambda weight: (val_error[weight], weight))
        selection[variant] = {"val_mouth_mae": {f"{w:g}": e for w, e in val_error.items()}, "chosen": chosen[variant]}
    per_seed = {variant: [runs.run(variant, chosen[variant], seed) for seed in seeds] for variant in VARIANTS}
    test = {variant: [run["test"] for run in rows] for variant, rows in per_seed.items()}
    ceiling = score_motion(clips["test"], [clip.coeffs for clip in clips["test"]], load_expert(evaluator_path))

    labels = {v: VARIANTS[v] + (f" (w = {chosen[v]:g})" if chosen[v] else "") for v in VARIANTS}
    table = markdown_table([*((f"motion · {labels[v]}", aggregate(test[v])) for v in VARIANTS),
                            ("motion · ground truth (ceiling)", aggregate([ceiling]))])
    verdicts = {"c_vs_b": verdict(test["c"], test["b"]), "b_vs_a": verdict(test["b"], test["a"]),
                "c_vs_a": verdict(test["c"], test["a"])}
    result = {
        "size": size_name, "settings": asdict(size), "preset": preset, "seeds": list(seeds), "corpus": str(corpus),
        "splits": {split: len(c) for split, c in clips.items()}, "experts": experts, "selection": selection,
        "test": {v: {"label": labels[v], "per_seed": test[v], "mean_spread": aggregate(test[v])} for v in VARIANTS},
        "ceiling": ceiling, "verdicts": verdicts, "wall_s": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    }
    write_atomic(out / "generator_sync.json", json.dumps(result, indent=1))
    markdown = "\n\n".join([
        table,
        "\n".join(f"- {name.replace('_vs_', ' vs ')}: {text}" for name, text in verdicts.items()),
        "Sync-loss weight chosen on validation speakers (mouth MAE, first seed): "
        + "; ".join(f"{VARIANTS[v]}: {s['val_mouth_mae']} -> {s['chosen']:g}" for v, s in selection.items()),
        f"Wall time {result['wall_s']:.0f} s, {len(seeds)} seeds, {result['splits']} clips per split.",
    ])
    write_atomic(out / "generator_sync.md", markdown + "\n")
    first_clip = clips["test"][0]
    plot_jaw_tracks(first_clip.mouth[:, JAW].tolist(), {labels[v]: per_seed[v][0]["example_jaw"] for v in VARIANTS},
                    f"held-out test clip {first_clip.clip_id}: jaw opening (seed {seeds[0]})", out / "jaw_tracks.png")
    log(markdown)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seeds", type=int, default=3, help="generator seeds 0..N-1 (each with its own loss experts)")
    parser.add_argument("--preset", default="default", help="procedural corpus preset: easy, default, hard")
    parser.add_argument("--out", type=Path, default=Path("runs/generator_sync"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.threads < 1:
        parser.error(f"--seeds and --threads must be >= 1, got {args.seeds} and {args.threads}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run_benchmark(args.out, args.size, tuple(range(args.seeds)), args.preset)


if __name__ == "__main__":
    main()
