"""Run-time shims that let GeneFace's audio-to-motion training import and run on today's software.

Nothing in the checkout is edited: each shim changes a module object in this process only, and
only when needed (``needed_shims`` says which would apply, ``apply_shims`` applies them and
returns their descriptions). They must be applied before GeneFace's task modules are imported.

* ``numpy``: aliases removed by NumPy 1.24 / 2.0 that GeneFace still uses (``np.Inf`` in
  ``utils/commons/trainer.py``, ``np.int`` in ``utils/commons/pitch_utils.py``, ``np.long`` in
  ``data_util/face3d_helper.py``) point to the builtin equivalents again.
* ``tkinter.tix``: ``modules/audio2motion/transformer_models.py`` imports ``X_REGION`` from it (unused);
  a stub module stands in where Tk or ``tix`` is absent (Python >= 3.13, headless images).
* ``torch.utils.tensorboard``: a ``SummaryWriter`` that writes nothing, where tensorboard is not installed.
* ``Face3DHelper``: GeneFace builds one per task and dataset with ``use_gpu=True`` (CUDA and the BFM
  ``.mat`` files needed); the audio-to-motion path only slices landmarks with it, so a CPU helper that
  slices the same iBUG points (eyes 17-47, mouth 48-67) and has nothing else replaces it.
"""
from __future__ import annotations

import importlib
import sys
import types

import numpy as np
from torch import Tensor

NUMPY_ALIASES = {"Inf": float("inf"), "int": int, "long": int, "float": float, "bool": bool}
"""NumPy aliases GeneFace uses that recent NumPy removed, and what they meant."""

IBUG_EYE_REGION = slice(17, 48)
IBUG_MOUTH_REGION = slice(48, 68)


class SlicingFace3DHelper:
    """CPU replacement for GeneFace's ``Face3DHelper`` offering only its landmark slicing.

    Accepts GeneFace's constructor arguments (``bfm_dir``, ``use_gpu``) and ignores them. Any other
    method of the original (mesh reconstruction, BFM access) is absent: an ``AttributeError`` names it.
    """

    def __init__(self, bfm_dir: str = "deep_3drecon/BFM", use_gpu: bool = True) -> None:
        self.bfm_dir = bfm_dir

    @staticmethod
    def get_eye_mouth_lm_from_lm3d(lm3d: Tensor | np.ndarray) -> tuple[Tensor | np.ndarray, Tensor | np.ndarray]:
        """``(T, 68, 3)`` -> eyes ``(T, 31, 3)`` (points 17-47), mouth ``(T, 20, 3)`` (points 48-67)."""
        return lm3d[:, IBUG_EYE_REGION], lm3d[:, IBUG_MOUTH_REGION]

    @staticmethod
    def get_eye_mouth_lm_from_lm3d_batch(lm3d: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T, 68, 3)`` -> eyes ``(B, T, 31, 3)``, mouth ``(B, T, 20, 3)``."""
        return lm3d[:, :, IBUG_EYE_REGION], lm3d[:, :, IBUG_MOUTH_REGION]


class _NullSummaryWriter:
    """Stands in for ``torch.utils.tensorboard.SummaryWriter`` when tensorboard is missing: writes nothing."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def needed_shims() -> list[str]:
    """Descriptions of the shims this environment needs (the Face3DHelper one always applies)."""
    needed = [f"numpy.{name}" for name in NUMPY_ALIASES if name not in np.__dict__]
    if not _importable("tkinter.tix"):
        needed.append("tkinter.tix (stub module with X_REGION)")
    if not _importable("torch.utils.tensorboard"):
        needed.append("torch.utils.tensorboard (SummaryWriter that writes nothing)")
    needed.append("data_util.face3d_helper.Face3DHelper -> SlicingFace3DHelper (CPU, no BFM files)")
    return needed


def apply_shims() -> list[str]:
    """Apply every needed shim (idempotent); returns their descriptions. Needs the checkout on ``sys.path``."""
    applied = needed_shims()
    for name, value in NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    if not _importable("tkinter.tix"):
        if not _importable("tkinter"):
            tkinter = types.ModuleType("tkinter")
            tkinter.__path__ = []
            sys.modules["tkinter"] = tkinter
        tix = types.ModuleType("tkinter.tix")
        tix.X_REGION = "x"
        sys.modules["tkinter.tix"] = tix
    if not _importable("torch.utils.tensorboard"):
        tensorboard = types.ModuleType("torch.utils.tensorboard")
        tensorboard.SummaryWriter = _NullSummaryWriter
        sys.modules["torch.utils.tensorboard"] = tensorboard
    face3d_helper = importlib.import_module("data_util.face3d_helper")
    face3d_helper.Face3DHelper = SlicingFace3DHelper
    return applied
