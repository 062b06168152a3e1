"""One generator run of the benchmark: train a generator, generate the held-out clips, score them.

:func:`generator_run` is what a worker process of ``parallel.run_tasks`` executes; a
:class:`RunSpec` carries everything it needs (paths, not tensors). Clips, the evaluator and the
mouth reader are loaded once per process and kept. A finished run is written to
``OUT/generators/<name>.json`` (and, for images, ``<name>_frames.safetensors``: the first test
clip's frames ``STRIP_FRAMES`` for the README strip) and reused when the benchmark runs again.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks.generators.image import (ImageTraining, generate_image, load_image_clips, load_mouth_reader, read_mouth,
                                         save_mouth_reader, train_image, train_mouth_reader)
from benchmarks.generators.motion import MotionTraining, generate_motion, load_motion_clips, train_motion
from benchmarks.generators.scoring import JAW, score_image, score_motion
from pretrain.data import FolderSource
from unisync_loss import UniSyncLoss
from unisync_loss.atomic import write_text_atomic
from unisync_loss.experts import load_expert
from unisync_loss.model import UniSync

PAIRS = {"motion": ("hubert", "3dmm"), "image": ("mel", "rgb")}
"""What each generator hears and draws: the pair of its loss experts."""
STRIP_FRAMES = slice(10, 42, 4)
"""Generated frames of the first test clip kept for the README strip (8 frames, 0.16 s apart)."""


@dataclass(frozen=True)
class RunSpec:
    """One generator run: ``generator`` trained with variant ``variant``'s loss (``loss_expert`` x
    ``weight``; none for variant a) from ``seed``, scored on the test speakers (and the validation
    speakers when ``validate``: the weight sweep) with ``evaluator`` (and ``reader`` for images)."""

    generator: str
    variant: str
    weight: float
    seed: int
    training: MotionTraining | ImageTraining
    corpus: Path
    folder: Path
    evaluator: Path
    loss_expert: Path | None = None
    reader: Path | None = None
    validate: bool = False

    @property
    def name(self) -> str:
        return f"{self.generator}_{self.variant}_w{self.weight:g}_seed{self.seed}"


@lru_cache(maxsize=None)
def clips_of(generator: str, corpus: Path, split: str) -> list:
    """The ``split`` clips of ``corpus`` as ``generator`` uses them (loaded once per process)."""
    load = load_motion_clips if generator == "motion" else load_image_clips
    return load(FolderSource(corpus, split))


@lru_cache(maxsize=None)
def expert_of(path: Path) -> UniSync:
    """The frozen expert of file ``path`` (loaded once per process)."""
    return load_expert(path)


@lru_cache(maxsize=None)
def reader_of(path: Path):
    """The mouth reader of file ``path`` (loaded once per process)."""
    return load_mouth_reader(path)


def score_outputs(generator: str, corpus: Path, split: str, outputs: list, evaluator: Path, reader: Path | None) -> dict:
    """Scores (``scoring.py``) of ``outputs`` (one tensor per clip of ``split``, in order)."""
    clips = clips_of(generator, corpus, split)
    if generator == "motion":
        return score_motion(clips, outputs, expert_of(evaluator))
    return score_image(clips, outputs, expert_of(evaluator), reader_of(reader))


def jaw_track(generator: str, output: torch.Tensor, reader: Path | None) -> list[float]:
    """The jaw opening of one generated clip: coefficient 0 (motion) or the mouth reader's reading (image)."""
    return (output if generator == "motion" else read_mouth(reader_of(reader), output))[:, JAW].tolist()


def generator_run(spec: RunSpec) -> dict:
    """Train, generate and score one run (or read it back when finished): test (and val) scores,
    the first test clip's generated jaw track ``example_jaw``, ``seconds`` of CPU work."""
    path = spec.folder / f"{spec.name}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    started = time.process_time()
    train_clips = clips_of(spec.generator, spec.corpus, "train")
    loss = None if spec.loss_expert is None else UniSyncLoss(*PAIRS[spec.generator], weights=expert_of(spec.loss_expert))
    desc = f"{spec.generator} {spec.variant} w={spec.weight:g} seed {spec.seed}"
    train, generate = (train_motion, generate_motion) if spec.generator == "motion" else (train_image, generate_image)
    model = train(train_clips, spec.training, spec.seed, loss, spec.weight, desc)
    result: dict = {"generator": spec.generator, "variant": spec.variant, "weight": spec.weight, "seed": spec.seed}
    for split in (("val", "test") if spec.validate else ("test",)):
        outputs = generate(model, clips_of(spec.generator, spec.corpus, split))
        result[split] = score_outputs(spec.generator, spec.corpus, split, outputs, spec.evaluator, spec.reader)
    result["example_jaw"] = jaw_track(spec.generator, outputs[0], spec.reader)
    if spec.generator == "image":
        strip = (outputs[0][STRIP_FRAMES] * 255).round().to(torch.uint8).contiguous()
        save_file({"frames": strip}, str(spec.folder / f"{spec.name}_frames.safetensors"))
    result["cpu_seconds"] = time.process_time() - started
    write_text_atomic(path, json.dumps(result))
    return result


def mouth_reader_run(corpus: Path, path: Path, steps: int, seed: int) -> Path:
    """Train the mouth reader on the train speakers' true frames and write it to ``path`` (reused when there)."""
    if not path.exists():
        save_mouth_reader(train_mouth_reader(clips_of("image", corpus, "train"), steps, seed), path)
    return path
