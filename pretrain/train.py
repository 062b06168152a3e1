"""Pretrain a UniSync sync expert with accelerate: one CPU, one GPU, many GPUs or machines, same script.

    python -m pretrain.train --config pretrain/configs/mel_rgb.yaml [key=value ...] [--resume] [--export PATH]
    accelerate launch [--multi_gpu --num_processes 8 ...] -m pretrain.train --config ... [key=value ...]

Each step draws the global batch of pairs for that step from a stateless sampler (pretrain.pairs;
every process takes its own slice), computes p_sync with UniSync and the BCE + margin loss
(pretrain.losses), and lets accelerate handle mixed precision, gradient accumulation, gradient
clipping and the gradient all-reduce. The encoders use GroupNorm and the embedding
standardisation all-reduces its batch statistics (unisync_loss.model.EmbeddingNorm), so no
SyncBatchNorm is needed and every process holds identical weights and buffers.

A joint run (several keys in ``model.audio`` / ``model.visual``, ``joint.pairs`` / ``joint.ratios``)
trains several (audio, visual) pairs in every step, all through the shared ε2 / ε4
(pretrain.pairs.JointPairSampler); validation and test report each pair and select on their mean.
``init.expert`` / ``init.freeze`` start from an exported expert, e.g. to train one new head against
a frozen space (pretrain.warmstart).

OUTDIR (``output_dir``, default runs/<audio>_<visual>) receives:
    config.yaml                     the resolved configuration
    logs/metrics.csv                step, metric, value (plus TensorBoard events when installed)
    logs/curves.png                 loss, p_sync per pair kind and validation accuracy (at the end)
    checkpoints/step_XXXXXX/        accelerator.save_state + the step counter, written atomically
    best.safetensors                the expert with the best validation accuracy so far
At the end the best expert is evaluated on the test split (held-out speakers) and exported,
by default to unisync_loss.experts.default_expert_path(audio, visual) where UniSyncLoss finds it
(a joint expert to ``experts_dir()/<name>.safetensors``, e.g. ``mel+hubert_3dmm+landmarks``).

``--resume`` restarts from the last complete checkpoint at the same step with the same data
order, so a run killed at any point ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import ProjectConfiguration, is_tensorboard_available, set_seed

from pretrain.augment import FRAMED_REPRESENTATIONS, augment_framing
from pretrain.config import OptimConfig, TrainConfig, load_config
from pretrain.curves import plot_training_curves
from pretrain.data import ClipSource, open_source, standardisation_statistics
from pretrain.evaluate import sync_accuracy
from pretrain.export import export_expert, training_summary
from pretrain.losses import SyncPretrainLoss
from pretrain.pairs import PAIR_KINDS, JointBatch, JointPairSampler, Pair, assemble
from pretrain.warmstart import expert_pairs, freeze, frozen_modules, load_start_weights, merged_config, start_expert
from unisync_loss.experts import load_expert, save_expert
from unisync_loss.model import UniSync
from unisync_loss.progress import Progress as ProgressReport

STANDARDISED = ("hubert", "3dmm", "rgb")  # representations standardised with train-split statistics
CHECKPOINT_NAME = re.compile(r"^step_(\d{6,})$")
BEST_NAME = "best.safetensors"


class CSVTracker(GeneralTracker):
    """accelerate tracker writing ``step,metric,value`` rows to ``logging_dir/metrics.csv``.

    ``resume_step``: rows logged after this step by an interrupted run are dropped, since the
    resumed run logs those steps again.
    """

    name = "csv"
    requires_logging_directory = True

    def __init__(self, logging_dir: str | Path, resume_step: int | None = None):
        super().__init__()
        self.path = Path(logging_dir) / "metrics.csv"
        self.resume_step = resume_step

    @property
    def tracker(self) -> Path:
        return self.path

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if self.resume_step is not None and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = [row for row in csv.reader(f)][1:]
            rows = [row for row in rows if int(row[0]) <= self.resume_step]
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["step", "metric", "value"], *rows])

    def store_init_configuration(self, values: dict) -> None:
        with open(self.path.parent / "hparams.json", "w", encoding="utf-8") as f:
            json.dump(values, f, indent=1)

    def log(self, values: dict, step: int | None = None, **kwargs: Any) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([[step, key, value] for key, value in values.items()])


@dataclass
class Progress:
    """Training position saved with every checkpoint (accelerate ``register_for_checkpointing``)."""

    step: int = 0
    best_accuracy: float = -1.0
    best_step: int = -1

    def state_dict(self) -> dict[str, float]:
        return {"step": self.step, "best_accuracy": self.best_accuracy, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.step, self.best_accuracy, self.best_step = int(state["step"]), float(state["best_accuracy"]), int(state["best_step"])


@dataclass
class RankDump:
    """Per-rank record for tests (``debug.dump_ranks``): the samples this process trained on, its weights' digest."""

    sample_ids: list[int] = field(default_factory=list)
    pairs: list[list[int | str]] = field(default_factory=list)

    def add(self, pairs: Sequence[Pair]) -> None:
        self.sample_ids += [p.sample_id for p in pairs]
        self.pairs += [[p.kind, p.visual_clip, p.visual_start, p.audio_clip, p.audio_start] for p in pairs]

    def write(self, folder: Path, accelerator: Accelerator, model: torch.nn.Module) -> None:
        """``folder/rank{r}.json``: world size, sample ids, pairs and ``parameter_digest(model)``."""
        folder.mkdir(parents=True, exist_ok=True)
        record = {"rank": accelerator.process_index, "world_size": accelerator.num_processes,
                  "sample_ids": self.sample_ids, "pairs": self.pairs, "parameters": parameter_digest(model)}
        (folder / f"rank{accelerator.process_index}.json").write_text(json.dumps(record), encoding="utf-8")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; training stops, the last checkpoint stays as it was."""


def learning_rate(step: int, optim: OptimConfig) -> float:
    """LR of optimizer step ``step``: linear warm-up, then constant or cosine decay to 0."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    if optim.schedule == "cosine":
        progress = (step - optim.warmup_steps) / max(1, optim.steps - optim.warmup_steps)
        return optim.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"optim.schedule must be 'cosine' or 'constant', got {optim.schedule!r}")


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root`` (``step_XXXXXX``), oldest first; temp dirs are ignored."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.match(p.name).group(1)))


def save_checkpoint(accelerator: Accelerator, root: Path, step: int, keep: int) -> Path:
    """``accelerator.save_state`` into a temp dir, renamed to ``step_XXXXXX`` once every process wrote its part.

    A run killed while saving leaves only a ``.tmp-*`` dir behind, never a half-written checkpoint.
    The oldest checkpoints beyond ``keep`` are removed.
    """
    final = root / f"step_{step:06d}"
    temp = root / f".tmp-step_{step:06d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            _remove_dir(final)
        os.replace(temp, final)
        for old in checkpoint_dirs(root)[:-keep]:
            _remove_dir(old)
    accelerator.wait_for_everyone()
    return final


def _remove_dir(path: Path) -> None:
    """Rename out of the checkpoint namespace first, so a crash mid-delete never leaves a 'complete' stump."""
    trash = path.with_name(f".trash-{path.name}")
    os.replace(path, trash)
    shutil.rmtree(trash)


class TrainingData:
    """Train/val/test sources, the pair sampler over the train split, and the model inputs of a step."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.pairs = config.pairs
        self.expert_pairs = list(self.pairs)  # the pairs the exported expert serves (plus a start expert's, see train)
        self.representations = tuple(dict.fromkeys(name for pair in self.pairs for name in pair))
        augment = config.augment
        unframed = sorted({visual for _, visual in self.pairs} - set(FRAMED_REPRESENTATIONS))
        if (augment.framing_scale or augment.framing_shift) and unframed:
            raise ValueError(f"augment.framing_scale / framing_shift reframe face crops ({', '.join(FRAMED_REPRESENTATIONS)}); "
                             f"this run trains {', '.join(unframed)}: set them to 0")
        spec = config.data
        self.train = open_source(spec, "train")
        self.val = open_source(spec, "val")
        self.test = open_source(spec, "test")
        for source in (self.val, self.test):  # the train split is read below, for its window counts
            source.check(self.representations)
        counts = [self.train.window_count(i, self.representations, config.window) for i in range(len(self.train))]
        self.sampler = JointPairSampler(
            pairs=self.pairs,
            ratios=config.pair_ratios,
            speakers=[r.speaker for r in self.train.records],
            window_counts=counts,
            config=config.sampling,
            window=config.window,
            batch_size=config.optim.batch_size,
            seed=config.seed,
        )

    def batch(self, micro_step: int, rank: int, world_size: int) -> tuple[JointBatch, list[Pair]]:
        """This process's ``JointBatch`` of ``micro_step`` (one group per trained pair) and its pairs."""
        groups = self.sampler.sample(micro_step, rank, world_size)
        batches = [assemble(pairs, self._load_train, audio, visual, self.config.window)
                   for (audio, visual), pairs in zip(self.pairs, groups)]
        augment = self.config.augment
        if augment.framing_scale or augment.framing_shift:  # drawn from (seed, step, rank): resumable, like the pairs
            generator = torch.Generator().manual_seed(hash((self.config.seed, micro_step, rank)) & 0x7FFF_FFFF_FFFF)
            for batch in batches:
                batch.visual = augment_framing(batch.visual, augment.framing_scale, augment.framing_shift, generator)
        return JointBatch(self.pairs, batches), [pair for pairs in groups for pair in pairs]

    def _load_train(self, index: int) -> dict[str, torch.Tensor]:
        return self.train.load(index, self.representations)

    def summary(self) -> dict[str, Any]:
        """Data description stored in the expert's metadata."""
        source = {k: v for k, v in vars(self.config.data).items() if k not in ("cache", "stats_clips")}
        return {"source": source, **{name: getattr(self, name).summary() for name in ("train", "val", "test")}}


def evaluate_split(model: UniSync, source: ClipSource, config: TrainConfig, max_clips: int | None) -> dict[str, float]:
    """Sync accuracy (AVST protocol, pretrain.evaluate) of ``model`` on the first ``max_clips`` clips of ``source``.

    One figure per trained pair, keyed ``<audio>_<visual>``.
    """
    indices = range(len(source) if max_clips is None else min(max_clips, len(source)))
    return {f"{audio}_{visual}": sync_accuracy(model, source, audio, visual, indices=indices) for audio, visual in config.pairs}


def parameter_digest(model: torch.nn.Module) -> dict[str, Any]:
    """SHA-256 over all parameters and buffers plus a float sum per tensor (identical across DDP ranks)."""
    digest = hashlib.sha256()
    sums = {}
    for name, tensor in model.state_dict().items():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        sums[name] = float(tensor.double().sum())
    return {"sha256": digest.hexdigest(), "sums": sums}


def train(config: TrainConfig, resume: bool = False, export_path: str | None = None) -> dict[str, Any]:
    """Run (or resume) training, evaluate the best expert on the test split, export it; returns a summary."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    set_seed(config.seed)
    out = config.out_dir
    checkpoint_root = out / "checkpoints"
    previous = checkpoint_dirs(checkpoint_root)
    if previous and not resume:
        raise SystemExit(f"{out} already holds checkpoints ({previous[-1].name}); pass --resume to continue that run, or pick another output_dir")
    resume_from = previous[-1] if resume and previous else None
    resume_step = int(CHECKPOINT_NAME.match(resume_from.name).group(1)) if resume_from else None

    # The data source is read and checked before anything is written: a run that fails on bad data
    # leaves no OUTDIR that looks like a started run.
    data = TrainingData(config)
    start = start_expert(config)
    model = UniSync(merged_config(start, config))
    for name in data.representations:
        if name in STANDARDISED:
            model.set_statistics(name, *standardisation_statistics(data.train, name, config.data.stats_clips))
    if start is not None:
        load_start_weights(model, start)
    data.expert_pairs = expert_pairs(start, config)
    frozen = frozen_modules(model, config)
    freeze(model, frozen)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not trainable:
        raise ValueError(f"init.freeze leaves nothing to train (frozen: {frozen})")

    trackers: list[Any] = [CSVTracker(out / "logs", resume_step)]
    if is_tensorboard_available():
        trackers.append("tensorboard")
    accelerator = Accelerator(
        mixed_precision=config.optim.mixed_precision,
        gradient_accumulation_steps=config.optim.grad_accum,
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dynamo_backend="inductor" if config.optim.compile else None,
    )
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    accelerator.init_trackers(out.name, config=_flatten(config.to_dict()))
    log = accelerator.print
    log(f"data: {json.dumps(data.summary())}")
    if frozen:
        log(f"frozen (no gradient, eval mode): {', '.join(frozen)}")
    optimizer = torch.optim.AdamW(trainable, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    loss_fn = SyncPretrainLoss(config.loss)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        log(f"resumed from {resume_from} at step {progress.step}")
    elif resume:
        log(f"--resume: no checkpoint in {checkpoint_root}, starting from step 0")

    steps = config.optim.steps
    dump = RankDump() if config.debug.dump_ranks else None
    resumed = f" (resumed at step {progress.step})" if progress.step else ""
    bar = ProgressReport(total=steps - progress.step, desc=f"pretrain steps{resumed}", disable=not accelerator.is_local_main_process)
    started, samples = time.perf_counter(), 0
    while progress.step < steps:
        step = progress.step
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.optim)
        loss, parts, p_sync, batch = train_step(accelerator, model, optimizer, loss_fn, data, step, dump)
        samples += len(batch.label) * accelerator.num_processes * config.optim.grad_accum
        progress.step = step + 1
        bar.set_postfix(f"step {progress.step}/{steps}, loss {loss:.4f}")
        bar.update(1)
        if progress.step % config.log_every == 0 or progress.step == steps:
            metrics = {"loss": loss, "lr": optimizer.param_groups[0]["lr"], **{k: v.item() for k, v in parts.items()}}
            for index, kind in enumerate(PAIR_KINDS):
                chosen = batch.kind == index
                if chosen.any():
                    metrics[f"p_{kind}"] = p_sync[chosen].float().mean().item()
            metrics["samples_per_s"] = samples / (time.perf_counter() - started)
            accelerator.log(metrics, step=progress.step)
        if progress.step % config.eval.every == 0 or progress.step == steps:
            if accelerator.is_main_process:
                accuracies = validate(accelerator.unwrap_model(model), data, progress, out / BEST_NAME, log)
                accelerator.log(accuracies, step=progress.step)
                freeze(accelerator.unwrap_model(model), frozen)  # evaluation restored train mode on the frozen modules
            accelerator.wait_for_everyone()
        if progress.step % config.checkpoint.every == 0 or progress.step == steps:
            save_checkpoint(accelerator, checkpoint_root, progress.step, config.checkpoint.keep)
    bar.close()

    if dump is not None:
        dump.write(out / "debug", accelerator, accelerator.unwrap_model(model))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result: dict[str, Any] = {"output_dir": str(out), "best_step": progress.best_step, "val_accuracy": progress.best_accuracy}
    if accelerator.is_main_process:
        result.update(finish(data, progress, out, export_path, log))
    return result


def train_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: SyncPretrainLoss,
    data: TrainingData,
    step: int,
    dump: RankDump | None,
) -> tuple[float, dict[str, torch.Tensor], torch.Tensor, JointBatch]:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss over processes,
    the loss parts, p_sync (B,) and the batch of the last micro-step. Raises NonFiniteLoss before
    a NaN/Inf loss reaches the weights."""
    config = data.config
    accum = config.optim.grad_accum
    for micro in range(accum):
        with accelerator.accumulate(model):
            batch, pairs = data.batch(step * accum + micro, accelerator.process_index, accelerator.num_processes)
            batch = batch.to(accelerator.device)
            p_sync = model([group.audio for group in batch.groups], [group.visual for group in batch.groups],
                           [audio for audio, _ in batch.pairs], [visual for _, visual in batch.pairs])
            loss, parts = loss_fn(p_sync, batch.label)
            if config.debug.nan_step == step:
                loss = loss * float("nan")
            mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
            if not math.isfinite(mean_loss):
                last = checkpoint_dirs(config.out_dir / "checkpoints")
                raise NonFiniteLoss(
                    f"loss is {mean_loss} at step {step} (micro-step {micro}); stopping. "
                    f"Last good checkpoint: {last[-1] if last else 'none'} (left intact). "
                    "Lower optim.lr, enable optim.grad_clip, or check the data, then rerun with --resume."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.optim.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad()
        if dump is not None:
            dump.add(pairs)
    return mean_loss, parts, p_sync.detach(), batch


def validate(model: UniSync, data: TrainingData, progress: Progress, best_path: Path, write: Callable[[str], None]) -> dict[str, float]:
    """Val sync accuracy on ``eval.clips`` clips; a new best is saved to ``best_path`` (main process only).

    Returns ``{"val_accuracy": ...}``, for a joint run the mean over its pairs (what selects the
    best expert) plus ``val_accuracy/<audio>_<visual>`` per pair.
    """
    config = data.config
    per_pair = evaluate_split(model, data.val, config, config.eval.clips)
    accuracy = sum(per_pair.values()) / len(per_pair)
    detail = f" ({', '.join(f'{pair} {value:.3f}' for pair, value in per_pair.items())})" if len(per_pair) > 1 else ""
    write(f"step {progress.step}: val sync accuracy {accuracy:.3f}{detail}")
    if accuracy > progress.best_accuracy:
        progress.best_accuracy, progress.best_step = accuracy, progress.step
        training = training_summary(config, data.summary(), progress.step, accuracy, val_per_pair=per_pair)
        save_expert(model, best_path, training=training, pairs=data.expert_pairs)  # atomic
    return {"val_accuracy": accuracy, **({f"val_accuracy/{pair}": value for pair, value in per_pair.items()} if len(per_pair) > 1 else {})}


def finish(data: TrainingData, progress: Progress, out: Path, export_path: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Evaluate the best expert on the test split (held-out speakers), export it, write OUTDIR/result.json."""
    config = data.config
    best = load_expert(out / BEST_NAME)
    per_pair = evaluate_split(best, data.test, config, config.eval.test_clips)
    test_accuracy = sum(per_pair.values()) / len(per_pair)
    detail = f", per pair {json.dumps(per_pair)}" if len(per_pair) > 1 else ""
    log(f"held-out (test speakers) sync accuracy: {test_accuracy:.3f}  (best val {progress.best_accuracy:.3f} at step {progress.best_step}){detail}")
    result: dict[str, Any] = {"test_accuracy": test_accuracy, **({"test_accuracy_per_pair": per_pair} if len(per_pair) > 1 else {})}
    if config.export.enabled:
        val_per_pair = best.expert_header["training"].get("val_accuracy_per_pair")
        training = training_summary(config, data.summary(), progress.best_step, progress.best_accuracy, test_accuracy,
                                    val_per_pair=val_per_pair, test_per_pair=per_pair if len(per_pair) > 1 else None)
        result["expert"] = str(export_expert(best, config, training, export_path or config.export.path))
        log(f"exported expert: {result['expert']}")
    log(f"training curves: {plot_training_curves(out / 'logs' / 'metrics.csv', out / 'logs' / 'curves.png')}")
    full = {"output_dir": str(out), "best_step": progress.best_step, "val_accuracy": progress.best_accuracy, **result}
    (out / "result.json").write_text(json.dumps(full, indent=1), encoding="utf-8")
    return result


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> flat ``{"optim.lr": 0.001, ...}`` with tracker-friendly scalar values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pretrain.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML config, e.g. pretrain/configs/mel_rgb.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in OUTDIR")
    parser.add_argument("--export", metavar="PATH", help="write the expert here instead of the expert cache")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=1e-3 loss.margin=0")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        train(config, resume=args.resume, export_path=args.export)
    except (NonFiniteLoss, ValueError) as err:  # ValueError: bad data, reported before OUTDIR is created
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
