"""Does the UniSync loss make a generator's lips more in sync? Measured on the procedural corpus's ground truth.

    python benchmarks/generator_sync.py [--size full|reduced|tiny] [--seeds 3] [--generators motion,image]
        [--preset default] [--out runs/generator_sync] [--threads 1]

Two small generators (``benchmarks/generators/``) are each trained three ways at equal budget and seed:

    motion  GeneFace-like: HuBERT stand-in -> 64 3DMM expression coefficients (temporal conv net)
    image   Wav2Lip-like: mel window + reference frame + lower-half-masked target -> 96 x 96 face (U-Net)

    (a) reconstruction only (motion: MSE; image: L1)
    (b) + a SyncNet-style expert loss: expert of the generator's pair (hubert x 3dmm, mel x rgb)
        pretrained with BCE and same-clip negatives only
    (c) + the UniSync loss: same architecture, steps and seed, full UniSync recipe

Steps:

1. the procedural corpus is written once to ``OUT/corpus_*`` (speakers split into train / val /
   test); every expert, generator and the mouth reader train on the train speakers only;
2. experts (``experts.py``): a SyncNet-recipe and a UniSync-recipe loss expert (per seed for the
   generators in ``size.experts_per_seed``), and once an independent evaluator (the other audio
   representation, another seed and width, never a loss);
3. the sync-loss weight of (b) and of (c) is chosen among ``size.weights`` (Wav2Lip / GeneFace
   ranges) on the **validation** speakers, first seed, by the ground-truth mouth error;
4. every variant x seed is scored on the **test** speakers (``scoring.py``): ground-truth mouth
   error, best-correlation lag, oracle sync accuracy, evaluator sync accuracy and LSE-D / LSE-C
   analogues, reconstruction error; plus the ceiling (the same measures on the true clips).

Writes ``OUT/generator_sync.json`` (everything, per seed), ``OUT/generator_sync.md`` (per
generator the table with mean +- spread over seeds and the paired verdicts (c) vs (b), (b) vs (a),
(c) vs (a)), ``OUT/<generator>_jaw_tracks.png`` (the first test clip's true jaw opening against each
variant, first seed) and ``OUT/image_mouth_strips.png`` (that clip's mouths per variant).
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
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.generators.experts import EVALUATOR_SEED_OFFSET, LOSS_ROLES, train_expert  # noqa: E402
from benchmarks.generators.image import (ImageTraining, generate_image, load_image_clips, read_mouth,  # noqa: E402
                                         train_image, train_mouth_reader)
from benchmarks.generators.motion import MotionTraining, generate_motion, load_motion_clips, train_motion  # noqa: E402
from benchmarks.generators.report import (IMAGE_COLUMNS, MOTION_COLUMNS, aggregate, markdown_table,  # noqa: E402
                                          plot_jaw_tracks, plot_mouth_strips, verdict)
from benchmarks.generators.scoring import JAW, score_image, score_motion  # noqa: E402
from pretrain.data import FolderSource  # noqa: E402
from pretrain.synth.corpus import SPLITS, write_corpus  # noqa: E402
from unisync_loss import UniSyncLoss  # noqa: E402
from unisync_loss.experts import load_expert  # noqa: E402

VARIANTS = {"a": "(a) reconstruction only", "b": "(b) + SyncNet-style loss", "c": "(c) + UniSync loss"}
VARIANT_ROLE = {"b": "syncnet", "c": "unisync"}
GENERATORS = ("motion", "image")
PAIRS = {"motion": ("hubert", "3dmm"), "image": ("mel", "rgb")}
"""What each generator hears and draws: the pair of its loss experts."""


@dataclass(frozen=True)
class BenchSize:
    """Corpus, expert and generator budgets of one benchmark size."""

    speakers: int
    clips_per_speaker: int
    seconds: float
    expert_steps: dict[str, int]
    """per generator: optimizer steps of each of its experts (batch 64)"""
    expert_hidden: int
    evaluator_hidden: int
    experts_per_seed: tuple[str, ...]
    """generators whose every seed gets its own pair of loss experts (the seed spread then includes the
    experts'); the others share seed 0's pair"""
    motion: MotionTraining
    image: ImageTraining
    reader_steps: int
    weights: tuple[float, ...]
    corpus_seed: int = 0


SIZES = {
    # 32 speakers split 26 / 3 / 3, as the pretraining benchmark; experts as in BENCHMARKS.md (width 64).
    # Designed for < 60 min on an idle 2-core CPU (an estimate: README / BENCHMARKS say what was measured).
    "full": BenchSize(32, 6, 4.0, expert_steps={"motion": 1500, "image": 600}, expert_hidden=64, evaluator_hidden=96,
                      experts_per_seed=("motion",), motion=MotionTraining(steps=1000), image=ImageTraining(steps=300),
                      reader_steps=400, weights=(0.01, 0.03, 0.1)),
    # Same corpus, shorter training, loss experts shared by the seeds: the size run in the development session.
    "reduced": BenchSize(32, 6, 4.0, expert_steps={"motion": 600, "image": 400}, expert_hidden=64, evaluator_hidden=96,
                         experts_per_seed=(), motion=MotionTraining(steps=600), image=ImageTraining(steps=300),
                         reader_steps=300, weights=(0.03, 0.1)),
    # Seconds: the CI smoke test (structure only; its numbers mean nothing).
    "tiny": BenchSize(5, 2, 2.0, expert_steps={"motion": 6, "image": 3}, expert_hidden=32, evaluator_hidden=48,
                      experts_per_seed=(), motion=MotionTraining(steps=4, batch=4, segment=16, hidden=32),
                      image=ImageTraining(steps=2, batch=2, width=8), reader_steps=2, weights=(0.03, 0.1)),
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


STRIP_FRAMES = slice(10, 42, 4)
"""Generated frames of the first test clip kept for the README strip (8 frames, 0.16 s apart)."""


class GeneratorRuns:
    """Trains and scores one generator's runs, each once: ``OUT/generators/<generator>_<variant>_w<weight>_seed<seed>.json``.

    ``loss_experts[role, seed]`` is the expert file of a sync-loss variant; ``score(split, outputs)``
    scores generated outputs of a split; ``jaw(outputs)`` is the generated jaw track of the first
    output (for the figure).
    """

    def __init__(self, generator: str, out: Path, size: BenchSize, clips: dict[str, list],
                 loss_experts: dict[tuple[str, int], Path], score: Callable[[str, list], dict],
                 jaw: Callable[[list], list[float]], log: Callable[[str], None]):
        self.generator, self.folder = generator, out / "generators"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.size, self.clips, self.loss_experts, self.score, self.jaw, self.log = size, clips, loss_experts, score, jaw, log

    def run(self, variant: str, weight: float, seed: int) -> dict:
        """Scores on ``val`` and ``test`` of one trained generator, plus its first test clip's jaw track
        (and, for images, a strip of that clip's generated frames: ``<name>_frames.safetensors``)."""
        name = f"{self.generator}_{variant}_w{weight:g}_seed{seed}"
        path = self.folder / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        started = time.perf_counter()
        loss = None
        if weight:
            expert_seed = seed if self.generator in self.size.experts_per_seed else 0
            loss = UniSyncLoss(*PAIRS[self.generator], weights=self.loss_experts[VARIANT_ROLE[variant], expert_seed])
        desc = f"{self.generator} {variant} w={weight:g} seed {seed}"
        if self.generator == "motion":
            model = train_motion(self.clips["train"], self.size.motion, seed, loss, weight, desc)
            generate = generate_motion
        else:
            model = train_image(self.clips["train"], self.size.image, seed, loss, weight, desc)
            generate = generate_image
        result: dict = {"generator": self.generator, "variant": variant, "weight": weight, "seed": seed}
        for split in ("val", "test"):
            outputs = generate(model, self.clips[split])
            result[split] = self.score(split, outputs)
        result["example_jaw"] = self.jaw(outputs)
        if self.generator == "image":
            strip = (outputs[0][STRIP_FRAMES] * 255).round().to(torch.uint8).contiguous()
            save_file({"frames": strip}, str(self.folder / f"{name}_frames.safetensors"))
        result["seconds"] = time.perf_counter() - started
        write_atomic(path, json.dumps(result))
        self.log(f"{desc}: val mouth MAE {result['val']['mouth_mae']:.4f}, test {result['test']['mouth_mae']:.4f} "
                 f"({result['seconds']:.0f} s)")
        return result


def benchmark_generator(generator: str, out: Path, size: BenchSize, corpus: Path, seeds: Sequence[int],
                        log: Callable[[str], None]) -> dict:
    """Experts, weight selection on validation speakers, and the test table of one generator."""
    audio, visual = PAIRS[generator]
    load = load_motion_clips if generator == "motion" else load_image_clips
    clips = {split: load(FolderSource(corpus, split)) for split in SPLITS}
    steps = size.expert_steps[generator]
    evaluator_path, evaluator_run = train_expert("evaluator", audio, visual, corpus, out, steps, size.evaluator_hidden,
                                                 EVALUATOR_SEED_OFFSET + seeds[0])
    evaluator = load_expert(evaluator_path)
    experts = {"evaluator": {"path": str(evaluator_path), "test_accuracy": evaluator_run["test_accuracy"]}}
    loss_experts = {}
    for seed in (seeds if generator in size.experts_per_seed else seeds[:1]):
        for role in LOSS_ROLES:
            path, run = train_expert(role, audio, visual, corpus, out, steps, size.expert_hidden, seed)
            loss_experts[role, seed] = path
            experts[f"{role}_seed{seed}"] = {"path": str(path), "test_accuracy": run["test_accuracy"]}
    log(f"{generator} experts (held-out sync accuracy): " + ", ".join(f"{k} {v['test_accuracy']:.3f}" for k, v in experts.items()))

    if generator == "motion":
        def score(split: str, outputs: list) -> dict:
            return score_motion(clips[split], outputs, evaluator)

        def jaw(outputs: list) -> list[float]:
            return outputs[0][:, JAW].tolist()
        true_outputs = [clip.coeffs for clip in clips["test"]]
        first_frame = 0
    else:
        reader = train_mouth_reader(clips["train"], size.reader_steps, seeds[0])

        def score(split: str, outputs: list) -> dict:
            return score_image(clips[split], outputs, evaluator, reader)

        def jaw(outputs: list) -> list[float]:
            return read_mouth(reader, outputs[0])[:, JAW].tolist()
        true_outputs = [clip.rgb[clip.frames.start: clip.frames.stop].float() / 255.0 for clip in clips["test"]]
        first_frame = clips["test"][0].frames.start
    runs = GeneratorRuns(generator, out, size, clips, loss_experts, score, jaw, log)

    selection, chosen = {}, {"a": 0.0}
    for variant in VARIANT_ROLE:
        val_error = {weight: runs.run(variant, weight, seeds[0])["val"]["mouth_mae"] for weight in size.weights}
        chosen[variant] = min(size.weights, key=lambda weight: (val_error[weight], weight))
        selection[variant] = {"val_mouth_mae": {f"{w:g}": e for w, e in val_error.items()}, "chosen": chosen[variant]}
    per_seed = {variant: [runs.run(variant, chosen[variant], seed) for seed in seeds] for variant in VARIANTS}
    test = {variant: [run["test"] for run in rows] for variant, rows in per_seed.items()}
    ceiling = score("test", true_outputs)
    columns = MOTION_COLUMNS if generator == "motion" else IMAGE_COLUMNS
    labels = {v: VARIANTS[v] + (f" (w = {chosen[v]:g})" if chosen[v] else "") for v in VARIANTS}
    table = markdown_table([*((f"{generator} · {labels[v]}", aggregate(test[v], columns)) for v in VARIANTS),
                            (f"{generator} · ground truth (ceiling)", aggregate([ceiling], columns))], columns)

    first_clip = clips["test"][0]
    true_jaw = first_clip.mouth[first_frame: first_frame + len(per_seed["a"][0]["example_jaw"]), JAW].tolist()
    plot_jaw_tracks(true_jaw, {labels[v]: per_seed[v][0]["example_jaw"] for v in VARIANTS},
                    f"{generator} generator, held-out test clip {first_clip.clip_id}: jaw opening (seed {seeds[0]})",
                    out / f"{generator}_jaw_tracks.png", start_frame=first_frame)
    if generator == "image":
        strips = {"ground truth": first_clip.rgb[first_frame:][STRIP_FRAMES]}
        for v in VARIANTS:
            name = f"image_{v}_w{chosen[v]:g}_seed{seeds[0]}_frames.safetensors"
            strips[labels[v]] = load_file(str(out / "generators" / name))["frames"]
        plot_mouth_strips(strips, out / "image_mouth_strips.png")
    return {
        "pair": [audio, visual], "splits": {split: len(c) for split, c in clips.items()}, "experts": experts,
        "selection": selection, "ceiling": ceiling, "table": table,
        "test": {v: {"label": labels[v], "per_seed": test[v], "mean_spread": aggregate(test[v], columns)} for v in VARIANTS},
        "verdicts": {"c_vs_b": verdict(test["c"], test["b"], columns), "b_vs_a": verdict(test["b"], test["a"], columns),
                     "c_vs_a": verdict(test["c"], test["a"], columns)},
    }


def run_benchmark(out: Path, size_name: str = "full", seeds: Sequence[int] = (0, 1, 2), preset: str = "default",
                  generators: Sequence[str] = GENERATORS, log: Callable[[str], None] = print) -> dict:
    """Run (or continue) the whole benchmark; returns what ``OUT/generator_sync.json`` holds."""
    if size_name not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size_name!r}")
    if not seeds or not generators or set(generators) - set(GENERATORS):
        raise ValueError(f"expected at least one seed and generators among {GENERATORS}, got seeds {list(seeds)}, "
                         f"generators {list(generators)}")
    size, started = SIZES[size_name], time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(out, size, preset)
    result: dict = {"size": size_name, "settings": asdict(size), "preset": preset, "seeds": list(seeds),
                    "corpus": str(corpus), "generators": {}}
    sections = []
    for generator in generators:
        section = benchmark_generator(generator, out, size, corpus, seeds, log)
        result["generators"][generator] = section
        sections.append("\n\n".join([
            section["table"],
            "\n".join(f"- {generator} {name.replace('_vs_', ' vs ')}: {text}" for name, text in section["verdicts"].items()),
            "Sync-loss weight chosen on validation speakers (mouth MAE, first seed): " + "; ".join(
                f"{VARIANTS[v]}: {s['val_mouth_mae']} -> {s['chosen']:g}" for v, s in section["selection"].items()),
            "Experts (held-out sync accuracy): " + ", ".join(
                f"{k} {v['test_accuracy']:.3f}" for k, v in section["experts"].items()),
        ]))
    result["wall_s"], result["threads"] = time.perf_counter() - started, torch.get_num_threads()
    write_atomic(out / "generator_sync.json", json.dumps(result, indent=1))
    markdown = "\n\n".join(sections) + f"\n\nWall time {result['wall_s']:.0f} s, seeds {list(seeds)}, size {size_name}.\n"
    write_atomic(out / "generator_sync.md", markdown)
    log(markdown)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seeds", type=int, default=3, help="generator seeds 0..N-1 (each with its own loss experts)")
    parser.add_argument("--preset", default="default", help="procedural corpus preset: easy, default, hard")
    parser.add_argument("--generators", default=",".join(GENERATORS), help="comma-separated: motion, image")
    parser.add_argument("--out", type=Path, default=Path("runs/generator_sync"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.threads < 1:
        parser.error(f"--seeds and --threads must be >= 1, got {args.seeds} and {args.threads}")
    unknown = set(args.generators.split(",")) - set(GENERATORS)
    if unknown:
        parser.error(f"--generators: expected a comma-separated subset of {','.join(GENERATORS)}, got {args.generators!r}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run_benchmark(args.out, args.size, tuple(range(args.seeds)), args.preset, args.generators.split(","))


if __name__ == "__main__":
    main()
