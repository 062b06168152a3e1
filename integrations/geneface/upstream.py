"""The user's GeneFace checkout: where it is, which commit, and every upstream name the adapter relies on.

GeneFace is never installed: it runs from its root (``python tasks/run.py`` with the root on
``sys.path``), with top-level packages ``utils``, ``modules``, ``tasks``, ``data_util``. This project
installs only ``unisync_loss``; ``integrations`` runs from this checkout, so neither shadows the other.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REQUIRED_FILES = (
    "tasks/run.py",
    "utils/commons/hparams.py",
    "utils/commons/trainer.py",
    "tasks/audio2motion/lm3d_vae_sync.py",
    "tasks/syncnet/lm3d_syncnet.py",
)
"""Files whose absence means the folder is not a GeneFace checkout."""

GENEFACE_PACKAGES = ("utils", "modules", "tasks", "data_util")
"""GeneFace's top-level packages: they must resolve inside the checkout, never to something installed."""

RELIED_ON = {
    "utils.commons.hparams": ("hparams", "set_hparams"),
    "utils.commons.base_task": ("BaseTask",),
    "utils.commons.trainer": ("Trainer",),
    "utils.commons.ckpt_utils": ("load_ckpt",),
    "tasks.syncnet.lm3d_syncnet": ("SyncNetTask",),
    "tasks.audio2motion.lm3d_vae_sync": ("VAESyncAudio2MotionTask", "SyncNetTask", "load_ckpt"),
    "tasks.postnet.lm3d_postnet_adv_sync": ("PostnetAdvSyncTask", "SyncNetTask", "load_ckpt"),
    "data_util.face3d_helper": ("Face3DHelper",),
}
"""Module -> names the adapter uses. ``SyncNetTask`` / ``load_ckpt`` are the task modules' own globals,
swapped while a task builds its expert (see ``integrations.geneface.tasks``)."""

RELIED_ON_METHODS = {
    "Trainer": ("evaluate", "dump_checkpoint", "restore_weights"),
    "VAESyncAudio2MotionTask": ("build_model", "run_model", "_training_step", "validation_step"),
    "PostnetAdvSyncTask": ("build_syncnet_task", "run_model", "_training_step"),
}
"""Methods whose behaviour the adapter's design depends on (documented in integrations/geneface/README.md)."""


class GeneFaceRootError(ValueError):
    """The given folder is not a usable GeneFace checkout."""


def check_root(root: str | Path) -> Path:
    """The resolved checkout root; ``GeneFaceRootError`` naming the first missing file otherwise."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise GeneFaceRootError(f"--geneface-root {root}: not a folder (expected a checkout of yerfor/GeneFace)")
    for relative in REQUIRED_FILES:
        if not (path / relative).is_file():
            raise GeneFaceRootError(
                f"--geneface-root {root}: {relative} is missing (expected a checkout of yerfor/GeneFace)")
    return path


def commit(root: Path) -> str:
    """The checkout's commit hash, or ``"unknown (not a git checkout)"``."""
    try:
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return result.stdout.strip()


def put_on_path(root: Path) -> None:
    """Put the checkout first on ``sys.path`` and this project's root right after it (idempotent)."""
    project = str(Path(__file__).resolve().parents[2])
    for entry in (project, str(root)):
        while entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
