"""Does the UniSync loss make a generator's lips more in sync? Measured on the procedural corpus's ground truth.

    python benchmarks/generator_sync.py [--size full|reduced|tiny] [--seeds 3] [--generators motion,image]
        [--preset default] [--out runs/generator_sync] [--jobs 2] [--threads 1]

Two small generators (``benchmarks/generators/``) are each trained three ways at equal budget and seed:

    motion  GeneFace-like: HuBERT stand-in -> 64 3DMM expression coefficients (temporal conv net)
    image   Wav2Lip-like: mel window + reference frame + lower-half-masked target -> the lower half of the
            96 x 96 face, pasted under the target's upper half (U-Net)

    (a) reconstruction only (motion: MSE; image: L1)
    (b) + a SyncNet-style expert loss: expert of the generator's pair (hubert x 3dmm, mel x rgb)
        pretrained with BCE and same-clip negatives only
    (c) + the UniSync loss: same architecture, steps and seed, full UniSync recipe

Steps:

1. the procedural corpus is written once to ``OUT/corpus_*`` (speakers split into train / val /
   test); every expert, generator and the mouth reader train on the train speakers only;
   the independent trainings run ``--jobs`` at a time in worker processes (``parallel.py``),
   each seeded and single-threaded, so the figures are the same for any ``--jobs``;
2. experts (``experts.py``): a SyncNet-recipe and a UniSync-recipe loss expert (per seed for the
   generators in ``size.experts_per_seed``), and once an independent evaluator (the other audio
   representation, another seed and width, never a loss);
3. the sync-loss weight of (b) and of (c) is chosen among ``size.weights`` (Wav2Lip / GeneFace
   ranges) on the **validation** speakers, first seed, by the ground-truth mouth error; the
   other seeds train at the chosen weight;
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
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.generators.experts import EVALUATOR_SEED_OFFSET, LOSS_ROLES, expert_pair, train_expert  # noqa: E402
from benchmarks.generators.image import ImageTraining  # noqa: E402
from benchmarks.generators.motion import MotionTraining  # noqa: E402
from benchmarks.generators.parallel import Task, run_tasks  # noqa: E402
from benchmarks.generators.report import (IMAGE_COLUMNS, MOTION_COLUMNS, aggregate, markdown_table,  # noqa: E402
                                          plot_jaw_tracks, plot_mouth_strips, verdict)
from benchmarks.generators.runs import (PAIRS, STRIP_FRAMES, RunSpec, clips_of, generator_run,  # noqa: E402
                                        mouth_reader_run, score_outputs)
from pretrain.synth.corpus import SPLITS, write_corpus  # noqa: E402
from unisync_loss.atomic import write_text_atomic  # noqa: E402

VARIANTS = {"a": "(a) reconstruction only", "b": "(b) + SyncNet-style loss", "c": "(c) + UniSync loss"}
VARIANT_ROLE = {"b": "syncnet", "c": "unisync"}
GENERATORS = ("motion", "image")


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
    experts'); the others share the first seed's pair"""
    motion: MotionTraining
    image: ImageTraining
    reader_steps: int
    weights: dict[str, tuple[float, ...]]
    """per generator: the sync-loss weights swept on the validation speakers"""
    rgb_size: int = 96
    """face size of the rgb experts (loss and evaluator): they see the lower half at rgb_size/2 x rgb_size"""
    corpus_seed: int = 0


SIZES = {
    # 32 speakers split 26 / 3 / 3, as the pretraining benchmark; experts width 64 (evaluator 96).
    # Sized from measured per-step CPU costs (BENCHMARKS.md): about 31 CPU minutes, so that it also
    # finishes on a shared, loaded 2-core machine (about 16 min of wall time with --jobs 2 when idle).
    "full": BenchSize(32, 6, 4.0, expert_steps={"motion": 500, "image": 150}, expert_hidden=64, evaluator_hidden=96,
                      experts_per_seed=("motion", "image"), motion=MotionTraining(steps=300),
                      image=ImageTraining(steps=150, batch=4, width=8), reader_steps=200,
                      weights={"motion": (0.01, 0.03, 0.1), "image": (0.03, 0.1)}, rgb_size=48),
    # Same corpus, shorter training, loss experts shared by the seeds: the size run in the development session.
    "reduced": BenchSize(32, 6, 4.0, expert_steps={"motion": 600, "image": 400}, expert_hidden=64, evaluator_hidden=96,
                         experts_per_seed=(), motion=MotionTraining(steps=600), image=ImageTraining(steps=300),
                         reader_steps=300, weights={"motion": (0.03, 0.1), "image": (0.03, 0.1)}),
    # Seconds: the CI smoke test (structure only; its numbers mean nothing).
    "tiny": BenchSize(5, 2, 2.0, expert_steps={"motion": 6, "image": 3}, expert_hidden=32, evaluator_hidden=48,
                      experts_per_seed=("motion",), motion=MotionTraining(steps=4, batch=4, segment=16, hidden=32),
                      image=ImageTraining(steps=2, batch=2, width=8), reader_steps=2,
                      weights={"motion": (0.03, 0.1), "image": (0.03, 0.1)}, rgb_size=48),
}


def ensure_corpus(out: Path, size: BenchSize, preset: str, workers: int = 1) -> Path:
    """The corpus of ``size`` on disk under ``out`` (written once, identical for any ``workers``;
    ``manifest.json`` marks it complete)."""
    root = out / f"corpus_{size.speakers}x{size.clips_per_speaker}x{size.seconds:g}s_{preset}_seed{size.corpus_seed}"
    if not (root / "manifest.json").exists():
        write_corpus(root, size.speakers, size.clips_per_speaker, size.seconds, preset, size.corpus_seed,
                     workers=workers, progress=False)
    return root


def choose_weight(val_error: dict[float, float]) -> float:
    """The sweep's weight with the lowest validation mouth error (ties: the smaller weight)."""
    return min(val_error, key=lambda weight: (val_error[weight], weight))


class GeneratorPlan:
    """The tasks of one generator (experts, mouth reader, runs) and their keys, for ``parallel.run_tasks``.

    Runs: variant a for every seed; b and c for every weight of the sweep at the first seed (scored
    on validation speakers too), then for the other seeds at the weight the sweep chose.
    """

    def __init__(self, generator: str, out: Path, size: BenchSize, corpus: Path, seeds: Sequence[int], threads: int):
        self.generator, self.out, self.size, self.corpus, self.seeds = generator, out, size, corpus, tuple(seeds)
        self.audio, self.visual = PAIRS[generator]
        self.options = [f"threads={threads}"] + ([f"model.visual.rgb.size={size.rgb_size}"] if self.visual == "rgb" else [])
        self.expert_seeds = self.seeds if generator in size.experts_per_seed else self.seeds[:1]
        self.weights = size.weights[generator]
        self.folder = out / "generators"
        self.reader = self.folder / f"mouth_reader_seed{self.seeds[0]}.safetensors" if generator == "image" else None

    def expert_key(self, role: str, seed: int) -> str:
        return f"{self.generator} expert {role} seed {seed}"

    def run_key(self, variant: str, seed: int, weight: float | None = None) -> str:
        return f"{self.generator} {variant} seed {seed}" + ("" if weight is None else f" w={weight:g}")

    def expert_task(self, role: str, seed: int) -> Task:
        hidden = self.size.evaluator_hidden if role == "evaluator" else self.size.expert_hidden
        return Task(self.expert_key(role, seed), train_expert, (role, self.audio, self.visual, self.corpus, self.out,
                                                                 self.size.expert_steps[self.generator], hidden, seed,
                                                                 self.options))

    def spec(self, results: dict, variant: str, seed: int, weight: float, validate: bool = False) -> RunSpec:
        evaluator = results[self.expert_key("evaluator", EVALUATOR_SEED_OFFSET + self.seeds[0])][0]
        loss_expert = None
        if variant != "a":
            expert_seed = seed if seed in self.expert_seeds else self.seeds[0]
            loss_expert = results[self.expert_key(VARIANT_ROLE[variant], expert_seed)][0]
        return RunSpec(self.generator, variant, weight, seed, getattr(self.size, self.generator), self.corpus,
                       self.folder, evaluator, loss_expert, self.reader, validate)

    def sweep_keys(self, variant: str) -> dict[float, str]:
        return {weight: self.run_key(variant, self.seeds[0], weight) for weight in self.weights}

    def chosen_weight(self, results: dict, variant: str) -> float:
        return choose_weight({w: results[key]["val"]["mouth_mae"] for w, key in self.sweep_keys(variant).items()})

    def expert_tasks(self) -> tuple[list[Task], list[Task]]:
        """Experts the first seed's runs need (evaluator, first loss pair, reader), and the other seeds' pairs."""
        first = [self.expert_task("evaluator", EVALUATOR_SEED_OFFSET + self.seeds[0])]
        first += [self.expert_task(role, self.seeds[0]) for role in LOSS_ROLES]
        if self.reader is not None:
            first.append(Task(f"{self.generator} mouth reader", mouth_reader_run,
                              (self.corpus, self.reader, self.size.reader_steps, self.seeds[0])))
        later = [self.expert_task(role, seed) for seed in self.expert_seeds[1:] for role in LOSS_ROLES]
        return first, later

    def run_tasks(self) -> tuple[list[Task], list[Task]]:
        """The sweep runs and variant a's runs, and the runs at the chosen weights (seeds after the first)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        base = (self.expert_key("evaluator", EVALUATOR_SEED_OFFSET + self.seeds[0]),)
        base += (f"{self.generator} mouth reader",) if self.reader is not None else ()
        sweep = [Task(key, generator_run, lambda r, v=v, w=w: (self.spec(r, v, self.seeds[0], w, validate=True),),
                      base + (self.expert_key(VARIANT_ROLE[v], self.seeds[0]),))
                 for v in VARIANT_ROLE for w, key in self.sweep_keys(v).items()]
        plain = [Task(self.run_key("a", seed), generator_run, lambda r, seed=seed: (self.spec(r, "a", seed, 0.0),), base)
                 for seed in self.seeds]
        chosen = []
        for v in VARIANT_ROLE:
            for seed in self.seeds[1:]:
                expert = self.expert_key(VARIANT_ROLE[v], seed if seed in self.expert_seeds else self.seeds[0])
                chosen.append(Task(self.run_key(v, seed), generator_run,
                                   lambda r, v=v, seed=seed: (self.spec(r, v, seed, self.chosen_weight(r, v)),),
                                   base + (expert, *self.sweep_keys(v).values())))
        return sweep + plain, chosen

    def per_seed(self, results: dict, variant: str) -> list[dict]:
        """The runs of ``variant`` at its chosen weight, one per seed, in seed order."""
        if variant == "a":
            return [results[self.run_key("a", seed)] for seed in self.seeds]
        first = results[self.sweep_keys(variant)[self.chosen_weight(results, variant)]]
        return [first] + [results[self.run_key(variant, seed)] for seed in self.seeds[1:]]


def generator_section(plan: GeneratorPlan, results: dict) -> dict:
    """Table, verdicts, weight selection, experts, ceiling and figures of one generator from finished tasks."""
    generator, out = plan.generator, plan.out
    experts = {}
    for key, name in [(plan.expert_key("evaluator", EVALUATOR_SEED_OFFSET + plan.seeds[0]), "evaluator")] + [
            (plan.expert_key(role, seed), f"{role}_seed{seed}") for seed in plan.expert_seeds for role in LOSS_ROLES]:
        path, run = results[key]
        experts[name] = {"path": str(path), "pair": "_".join(expert_pair(name.split("_")[0], plan.audio, plan.visual)),
                         "test_accuracy": run["test_accuracy"]}
    chosen = {"a": 0.0, **{v: plan.chosen_weight(results, v) for v in VARIANT_ROLE}}
    selection = {v: {"val_mouth_mae": {f"{w:g}": results[key]["val"]["mouth_mae"] for w, key in plan.sweep_keys(v).items()},
                     "chosen": chosen[v]} for v in VARIANT_ROLE}
    per_seed = {v: plan.per_seed(results, v) for v in VARIANTS}
    test = {v: [run["test"] for run in runs] for v, runs in per_seed.items()}

    test_clips = clips_of(generator, plan.corpus, "test")
    evaluator = Path(experts["evaluator"]["path"])
    if generator == "motion":
        true_outputs, first_frame = [clip.coeffs for clip in test_clips], 0
    else:
        true_outputs = [clip.rgb[clip.frames.start: clip.frames.stop].float() / 255.0 for clip in test_clips]
        first_frame = test_clips[0].frames.start
    ceiling = score_outputs(generator, plan.corpus, "test", true_outputs, evaluator, plan.reader)
    columns = MOTION_COLUMNS if generator == "motion" else IMAGE_COLUMNS
    labels = {v: VARIANTS[v] + (f" (w = {chosen[v]:g})" if chosen[v] else "") for v in VARIANTS}
    table = markdown_table([*((f"{generator} · {labels[v]}", aggregate(test[v], columns)) for v in VARIANTS),
                            (f"{generator} · ground truth (ceiling)", aggregate([ceiling], columns))], columns)

    first_clip = test_clips[0]
    true_jaw = first_clip.mouth[first_frame: first_frame + len(per_seed["a"][0]["example_jaw"]), 0].tolist()
    plot_jaw_tracks(true_jaw, {labels[v]: per_seed[v][0]["example_jaw"] for v in VARIANTS},
                    f"{generator} generator, held-out test clip {first_clip.clip_id}: jaw opening (seed {plan.seeds[0]})",
                    out / f"{generator}_jaw_tracks.png", start_frame=first_frame)
    if generator == "image":
        strips = {"ground truth": first_clip.rgb[first_frame:][STRIP_FRAMES]}
        for v in VARIANTS:
            name = f"image_{v}_w{chosen[v]:g}_seed{plan.seeds[0]}_frames.safetensors"
            strips[labels[v]] = load_file(str(plan.folder / name))["frames"]
        plot_mouth_strips(strips, out / "image_mouth_strips.png")
    return {
        "pair": [plan.audio, plan.visual], "splits": {split: len(clips_of(generator, plan.corpus, split)) for split in SPLITS},
        "experts": experts, "selection": selection, "ceiling": ceiling, "table": table,
        "test": {v: {"label": labels[v], "per_seed": test[v], "mean_spread": aggregate(test[v], columns)} for v in VARIANTS},
        "verdicts": {"c_vs_b": verdict(test["c"], test["b"], columns), "b_vs_a": verdict(test["b"], test["a"], columns),
                     "c_vs_a": verdict(test["c"], test["a"], columns)},
        "run_cpu_seconds": sum(run.get("cpu_seconds", 0.0) for key, run in results.items()
                               if key.startswith(f"{generator} ") and isinstance(run, dict)),
    }


def run_benchmark(out: Path, size_name: str = "full", seeds: Sequence[int] = (0, 1, 2), preset: str = "default",
                  generators: Sequence[str] = GENERATORS, jobs: int = 1, threads: int = 1,
                  log: Callable[[str], None] = print) -> dict:
    """Run (or continue) the whole benchmark with ``jobs`` worker processes; returns what
    ``OUT/generator_sync.json`` holds. The figures do not depend on ``jobs``."""
    if size_name not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size_name!r}")
    if not seeds or not generators or set(generators) - set(GENERATORS) or jobs < 1 or threads < 1:
        raise ValueError(f"expected at least one seed, generators among {GENERATORS}, jobs and threads >= 1, got seeds "
                         f"{list(seeds)}, generators {list(generators)}, jobs {jobs}, threads {threads}")
    size, started, cpu_started = SIZES[size_name], time.perf_counter(), time.process_time()
    out.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(out, size, preset, workers=jobs)
    plans = [GeneratorPlan(generator, out, size, corpus, seeds, threads) for generator in generators]
    # Critical path first: what the first seed's sweep needs, then the sweep and variant a (which
    # fill the workers while the other seeds' experts train), then the rest.
    firsts, laters, runs, chosen = zip(*(plan.expert_tasks() + plan.run_tasks() for plan in plans))
    tasks = [task for group in (firsts, runs, laters, chosen) for part in group for task in part]
    finished = []

    def report(key: str, result: object) -> None:
        finished.append(key)
        detail = ""
        if isinstance(result, dict) and "test" in result:
            detail = f": test mouth MAE {result['test']['mouth_mae']:.4f}, {result.get('cpu_seconds', 0):.0f} CPU s"
        elif isinstance(result, tuple):
            detail = f": held-out sync accuracy {result[1]['test_accuracy']:.3f}"
        log(f"[{len(finished)}/{len(tasks)}, {time.perf_counter() - started:.0f} s] {key}{detail}")

    results = run_tasks(tasks, jobs, threads, on_done=report)
    result: dict = {"size": size_name, "settings": asdict(size), "preset": preset, "seeds": list(seeds),
                    "corpus": str(corpus), "generators": {}}
    sections = []
    for plan in plans:
        section = generator_section(plan, results)
        result["generators"][plan.generator] = section
        sections.append("\n\n".join([
            section["table"],
            "\n".join(f"- {plan.generator} {name.replace('_vs_', ' vs ')}: {text}" for name, text in section["verdicts"].items()),
            "Sync-loss weight chosen on validation speakers (mouth MAE, first seed): " + "; ".join(
                f"{VARIANTS[v]}: {s['val_mouth_mae']} -> {s['chosen']:g}" for v, s in section["selection"].items()),
            "Experts (held-out sync accuracy): " + ", ".join(
                f"{k} {v['test_accuracy']:.3f}" for k, v in section["experts"].items()),
        ]))
    result["wall_s"] = time.perf_counter() - started
    result["main_process_cpu_s"] = time.process_time() - cpu_started
    result["jobs"], result["threads"] = jobs, threads
    write_text_atomic(out / "generator_sync.json", json.dumps(result, indent=1))
    markdown = "\n\n".join(sections) + (f"\n\nWall time {result['wall_s']:.0f} s, seeds {list(seeds)}, size {size_name}, "
                                        f"jobs {jobs}.\n")
    write_text_atomic(out / "generator_sync.md", markdown)
    log(markdown)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seeds", type=int, default=3, help="generator seeds 0..N-1 (each with its own loss experts)")
    parser.add_argument("--preset", default="default", help="procedural corpus preset: easy, default, hard")
    parser.add_argument("--generators", default=",".join(GENERATORS), help="comma-separated: motion, image")
    parser.add_argument("--out", type=Path, default=Path("runs/generator_sync"))
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainings run side by side in worker processes (2 on a 2-core machine); figures do not change")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.threads < 1 or args.jobs < 1:
        parser.error(f"--seeds, --jobs and --threads must be >= 1, got {args.seeds}, {args.jobs} and {args.threads}")
    unknown = set(args.generators.split(",")) - set(GENERATORS)
    if unknown:
        parser.error(f"--generators: expected a comma-separated subset of {','.join(GENERATORS)}, got {args.generators!r}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run_benchmark(args.out, args.size, tuple(range(args.seeds)), args.preset, args.generators.split(","), args.jobs,
                  args.threads)


if __name__ == "__main__":
    main()
