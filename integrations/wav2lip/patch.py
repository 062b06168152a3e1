"""The UniSync patch of an imported Wav2Lip training script: which module globals change, and how.

Upstream's ``train()`` and ``eval_model()`` look ``get_sync_loss``, ``syncnet``, ``hparams`` and
``load_checkpoint`` up as module globals at call time, so replacing them on the imported module is
enough (``UniSyncPatch.install``):

- ``syncnet``: the ``UniSyncLoss`` (its expert is eval-only, frozen, outside every state dict).
- ``get_sync_loss(mel, g)``: ``-log p_sync`` of the WHOLE generated face ``g`` ``(B, 3, 5, H, W)``
  (BGR in [0, 1]; the loss crops the lower half itself) against ``mel`` ``(B, 1, 80, 16)``. With
  ``--also-log-wav2lip-expert`` the original ``get_sync_loss`` also scores ``g`` with Wav2Lip's
  SyncNet_color (eval mode, no gradient to the generator) for the logs.
- ``load_checkpoint``: the main block's load of ``--syncnet_checkpoint_path`` into ``syncnet`` is
  skipped (the UniSync expert is already loaded); every other call goes to the original.
- ``hparams`` (only with ``--sync-weight``): ``syncnet_wt`` follows the given schedule and the
  0.75 gate's ``set_hparam('syncnet_wt', ...)`` is ignored.
- ``train``: its loaders get ``--workers``; the training loader stops the run after ``--max-steps``
  and times every step. ``eval_model``: prints both experts' eval losses and the gate's decision.
- ``get_image_list``: reads ``filelists/`` from the resolved folder (Wav2Lip reads it relative to
  the current directory).
"""
from __future__ import annotations

import contextlib
import csv
import inspect
import os
import statistics
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from integrations.wav2lip.shims import set_attribute
from unisync_loss import UniSyncLoss

GATE_THRESHOLD = 0.75
"""Upstream switches ``syncnet_wt`` on when the eval sync loss (-log cos) drops below this."""
LOG_NAME = "unisync_sync_loss.csv"
"""Per-call sync losses and timings, written into Wav2Lip's ``--checkpoint_dir``."""


class StopRun(Exception):
    """Raised by the training loader once ``--max-steps`` generator steps are done."""


class EvalDone(Exception):
    """Raised by the evaluation loader once ``--eval-batches`` batches of one evaluation are done."""


@dataclass
class Schedule:
    """The sync-loss weight: ``None`` keeps Wav2Lip's 0.75 gate; else ``weight`` from global step ``from_step`` on."""

    weight: float | None = None
    from_step: int = 0

    def value(self, step: int) -> float:
        assert self.weight is not None
        return self.weight if step >= self.from_step else 0.0


class ScheduledHParams:
    """Wav2Lip's ``hparams`` with ``syncnet_wt`` following a fixed :class:`Schedule`; all else delegated."""

    def __init__(self, hparams: Any, schedule: Schedule, step: Callable[[], int]) -> None:
        self._hparams, self._schedule, self._step = hparams, schedule, step
        self.ignored_gate_at: int | None = None

    def __getattr__(self, key: str) -> Any:
        if key == "syncnet_wt":
            return self._schedule.value(self._step())
        return getattr(self._hparams, key)

    def set_hparam(self, key: str, value: Any) -> None:
        if key == "syncnet_wt":
            if self.ignored_gate_at is None:
                self.ignored_gate_at = self._step()
                print(f"[unisync] step {self._step()}: Wav2Lip's gate would set syncnet_wt={value}; "
                      f"--sync-weight keeps {self._schedule.weight} (from step {self._schedule.from_step})", flush=True)
            return
        self._hparams.set_hparam(key, value)


@dataclass
class Options:
    """What the adapter adds to a Wav2Lip run (see ``python -m integrations.wav2lip.train --help``)."""

    schedule: Schedule = field(default_factory=Schedule)
    workers: int | None = None
    max_steps: int | None = None
    eval_batches: int | None = None
    log_every: int = 50
    time_sync: bool = False


@dataclass
class StepTimes:
    """Seconds of one training step and of each expert's forward + backward inside it."""

    step: float | None = None
    unisync: float | None = None
    wav2lip: float | None = None


class UniSyncPatch:
    """Replaces the sync expert of an imported Wav2Lip training script by a :class:`UniSyncLoss`.

    Args:
        module: the imported training script (``integrations.wav2lip.script.imported_script``).
        sync_loss: the loss, already on the script's ``device``.
        options: schedule, workers, step limit, logging and timing.
        filelists_home: the folder whose ``filelists/`` holds ``train.txt`` / ``val.txt``.
        wav2lip_expert: Wav2Lip's own SyncNet_color with its weights, for logging only (or ``None``).
    """

    def __init__(self, module: types.ModuleType, sync_loss: UniSyncLoss, options: Options, filelists_home: Path,
                 wav2lip_expert: nn.Module | None = None) -> None:
        if options.time_sync and wav2lip_expert is None:
            raise ValueError("timing the sync loss against Wav2Lip's expert needs that expert (--also-log-wav2lip-expert)")
        self.module = module
        self.sync_loss = sync_loss
        self.options = options
        self.filelists_home = filelists_home
        self.wav2lip_expert = wav2lip_expert.eval() if wav2lip_expert is not None else None
        self.original = {name: getattr(module, name) for name in
                         ("get_sync_loss", "train", "eval_model", "load_checkpoint", "get_image_list", "hparams")}
        self.hparams = self.original["hparams"]
        self.records: list[tuple[int, str, Tensor, Tensor | None]] = []
        self.times: dict[int, StepTimes] = {}
        self.log_path: Path | None = None
        self._start_step = 0
        self._last_step_start: float | None = None
        self._unisync_first = True
        self._eval_batches = 0

    def step(self) -> int:
        """Wav2Lip's ``global_step`` (generator steps taken, resumed ones included)."""
        return self.module.global_step

    def install(self, stack: contextlib.ExitStack) -> None:
        """Replace the module globals (restored when ``stack`` closes)."""
        replacements: dict[str, Any] = {
            "syncnet": self.sync_loss,
            "get_sync_loss": self.get_sync_loss,
            "load_checkpoint": self.load_checkpoint,
            "train": self.train,
            "eval_model": self.eval_model,
            "get_image_list": self.get_image_list,
        }
        if self.options.schedule.weight is not None:
            self.hparams = ScheduledHParams(self.original["hparams"], self.options.schedule, self.step)
            replacements["hparams"] = self.hparams
        for name, value in replacements.items():
            set_attribute(stack, self.module, name, value)

    # --- the replaced globals -------------------------------------------------------------------

    def get_sync_loss(self, mel: Tensor, g: Tensor) -> Tensor:
        """UniSync ``-log p_sync`` of ``mel`` ``(B, 1, 80, 16)`` and the whole generated face ``g`` ``(B, 3, 5, H, W)``."""
        phase = "train" if torch.is_grad_enabled() and g.requires_grad else "eval"
        if self.options.time_sync and phase == "train":
            loss, reference = self._timed_losses(mel, g)
        else:
            loss = self.sync_loss(mel, g)
            reference = self._wav2lip_loss(mel, g.detach()) if self.wav2lip_expert is not None else None
        self.records.append((self.step(), phase, loss.detach(), reference))
        return loss

    def load_checkpoint(self, path: str, model: Any, *args: Any, **kwargs: Any) -> Any:
        """Upstream's ``load_checkpoint``, except for the expert: the UniSync expert is loaded already."""
        if model is self.sync_loss:
            print(f"[unisync] not loading {path} into `syncnet`: the UniSync expert {self.sync_loss.source} replaces it",
                  flush=True)
            return model
        return self.original["load_checkpoint"](path, model, *args, **kwargs)

    def get_image_list(self, data_root: str, split: str) -> list:
        """Upstream's ``get_image_list`` run with ``filelists/`` found in ``filelists_home``."""
        with working_directory(self.filelists_home):
            return self.original["get_image_list"](data_root, split)

    def train(self, *args: Any, **kwargs: Any) -> None:
        """Upstream's ``train`` with the worker counts set, the step limit and the per-step clock."""
        bound = inspect.signature(self.original["train"]).bind(*args, **kwargs)
        loaders = bound.arguments["train_data_loader"], bound.arguments["test_data_loader"]
        if self.options.workers is not None:
            for loader in loaders:
                loader.num_workers = self.options.workers
        checkpoint_dir = bound.arguments.get("checkpoint_dir")
        if checkpoint_dir is not None:
            self.log_path = Path(checkpoint_dir) / LOG_NAME
        self._start_step = self.step()
        bound.arguments["train_data_loader"] = StepLoader(loaders[0], self.step_started)
        if self.options.eval_batches is not None:
            bound.arguments["test_data_loader"] = StepLoader(loaders[1], self.eval_batch_started)
        try:
            self.original["train"](*bound.args, **bound.kwargs)
        except StopRun:
            print(f"[unisync] stopped after {self.step() - self._start_step} steps (--max-steps)", flush=True)
        finally:
            self.flush_log()

    def eval_model(self, *args: Any, **kwargs: Any) -> Any:
        """Upstream's ``eval_model``, then one line: both experts' mean eval losses and the gate's decision."""
        first = len(self.records)
        self._eval_batches = 0
        try:
            average = self.original["eval_model"](*args, **kwargs)
            evals = [r for r in self.records[first:] if r[1] == "eval"]
        except EvalDone:  # --eval-batches: upstream's own average over the batches it saw
            evals = [r for r in self.records[first:] if r[1] == "eval"]
            average = _mean(r[2] for r in evals)
        line = f"[unisync] eval at step {self.step()}: UniSync sync loss {_mean(r[2] for r in evals):.4f} over {len(evals)} batches"
        if self.wav2lip_expert is not None:
            line += f", Wav2Lip expert {_mean(r[3] for r in evals):.4f}"
        if self.options.schedule.weight is None:
            line += (f"; below Wav2Lip's gate {GATE_THRESHOLD}: its train() switches syncnet_wt on" if average < GATE_THRESHOLD
                     else f"; not below Wav2Lip's gate {GATE_THRESHOLD}: syncnet_wt stays {self.hparams.syncnet_wt}")
        print(line, flush=True)
        return average

    # --- called by the training loader ------------------------------------------------------------

    def step_started(self) -> None:
        """A training batch is ready: close the previous step's clock, stop when the step budget is spent."""
        now = time.perf_counter()
        if self._last_step_start is not None:
            self.times.setdefault(self.step() - 1, StepTimes()).step = now - self._last_step_start
        done = self.step() - self._start_step
        if self.options.max_steps is not None and done >= self.options.max_steps:
            raise StopRun
        if done and done % self.options.log_every == 0:
            self.flush_log()
        self._last_step_start = time.perf_counter()

    def eval_batch_started(self) -> None:
        """An evaluation batch is ready: stop the evaluation after ``--eval-batches`` of them."""
        if self._eval_batches >= self.options.eval_batches:
            raise EvalDone
        self._eval_batches += 1

    # --- logging and timing -----------------------------------------------------------------------

    def flush_log(self) -> None:
        """Append the records not yet written to ``--checkpoint_dir/unisync_sync_loss.csv`` and print train means."""
        new, self.records = self.records, []
        if new and self.log_path is not None and self.log_path.parent.is_dir():
            self._append_csv(new)
        train = [r for r in new if r[1] == "train"]
        if train:
            line = f"[unisync] steps {train[0][0]}..{train[-1][0]}: UniSync sync loss {_mean(r[2] for r in train):.4f}"
            if self.wav2lip_expert is not None:
                line += f", Wav2Lip expert {_mean(r[3] for r in train):.4f}"
            print(line + f" (syncnet_wt {self.hparams.syncnet_wt})", flush=True)

    def _append_csv(self, records: list[tuple[int, str, Tensor, Tensor | None]]) -> None:
        exists = self.log_path.is_file()
        with self.log_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if not exists:
                writer.writerow(["step", "phase", "unisync_sync_loss", "wav2lip_sync_loss", "step_s", "unisync_s", "wav2lip_s"])
            for step, phase, loss, reference in records:
                times = self.times.get(step, StepTimes()) if phase == "train" else StepTimes()
                writer.writerow([step, phase, _fmt(loss), _fmt(reference), _fmt(times.step), _fmt(times.unisync), _fmt(times.wav2lip)])

    def timing_summary(self) -> dict[str, float] | None:
        """Medians over complete training steps (the first one, with its checkpoint and eval, left out)."""
        steps = [t for s, t in sorted(self.times.items()) if None not in (t.step, t.unisync, t.wav2lip)][1:]
        if not steps:
            return None
        return {
            "steps": len(steps),
            "step_s": statistics.median(t.step for t in steps),
            "unisync_s": statistics.median(t.unisync for t in steps),
            "wav2lip_s": statistics.median(t.wav2lip for t in steps),
            "ratio": statistics.median(t.unisync / t.wav2lip for t in steps),
            "unisync_share": statistics.median(t.unisync / (t.step - t.wav2lip) for t in steps),
            "wav2lip_share": statistics.median(t.wav2lip / (t.step - t.unisync) for t in steps),
        }

    def _wav2lip_loss(self, mel: Tensor, g: Tensor) -> Tensor:
        """Upstream's own ``get_sync_loss`` with ``syncnet`` = Wav2Lip's expert (its crop, its cosine BCE)."""
        with contextlib.ExitStack() as stack:
            set_attribute(stack, self.module, "syncnet", self.wav2lip_expert)
            return self.original["get_sync_loss"](mel, g)

    def _timed_losses(self, mel: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Both experts' forward + backward on the same batch, timed apart from the rest of the step.

        Each expert's gradient with respect to the generated face is taken on a detached copy of
        ``g``; the returned loss is ``loss_u + <grad_u, g - g.detach()>``: the same value and the same
        gradient for the generator as ``sync_loss(mel, g)``. The order of the two experts alternates.
        """
        def forward_backward(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor, float]:
            leaf = g.detach().requires_grad_(True)
            _synchronize(g.device)
            start = time.perf_counter()
            value = loss_fn(mel, leaf)
            (grad,) = torch.autograd.grad(value, leaf)
            _synchronize(g.device)
            return value.detach(), grad, time.perf_counter() - start

        order = [("unisync", self.sync_loss), ("wav2lip", self._wav2lip_loss)]
        results = dict((name, forward_backward(fn)) for name, fn in (order if self._unisync_first else order[::-1]))
        self._unisync_first = not self._unisync_first
        times = self.times.setdefault(self.step(), StepTimes())
        times.unisync, times.wav2lip = results["unisync"][2], results["wav2lip"][2]
        loss, grad, _ = results["unisync"]
        return loss + (grad * (g - g.detach())).sum(), results["wav2lip"][0]


class StepLoader:
    """A loader as upstream's ``train()`` / ``eval_model()`` sees it: same batches, ``on_batch()`` called before each."""

    def __init__(self, loader: Any, on_batch: Callable[[], None]) -> None:
        self.loader, self.on_batch = loader, on_batch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            self.on_batch()
            yield batch


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """``os.chdir(path)`` for the block."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mean(values: Any) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def _fmt(value: Tensor | float | None) -> str:
    return "" if value is None else f"{float(value):.6f}"
