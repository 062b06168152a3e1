"""Third-party checkpoint files: safe reading, exact key matching, conversion to ``.safetensors``, one loader for every expert.

``load_sync_expert(spec)`` is the single entry point for code that takes an ``--expert`` option:

=================================  ================================================================
spec                               result
=================================  ================================================================
``wav2lip:PATH``                   Wav2Lip's ``SyncNet_color`` from its checkpoint (``lipsync_expert.pth``)
``syncnet_v2:PATH``                syncnet_python's SyncNet v2 from ``syncnet_v2.model``
``PATH.safetensors``               a converted third-party expert, or a UniSync expert file
anything else                      :func:`unisync_loss.experts.load_expert` (a path or a cached name)
=================================  ================================================================

Torch checkpoints are read with ``torch.load(weights_only=True)``: only tensors and plain
containers are unpickled; anything else (a pickled ``nn.Module``, a payload that would run code)
is refused with :class:`~unisync_loss.experts.ExpertFileError` before any of it executes. The state
dict may sit under ``"state_dict"`` (Wav2Lip's ``{"state_dict", "optimizer", "global_step",
"global_epoch"}``) or be the file itself (syncnet_python's ``torch.save(state_dict)``); a
``module.`` prefix on every key (``nn.DataParallel``) is removed. Keys must then match the
architecture exactly: nothing missing (BatchNorm's ``num_batches_tracked``, which old PyTorch did
not save and which no eval computation reads, excepted), nothing unexpected, every shape equal.

:func:`convert_checkpoint` writes the expert once as ``.safetensors`` with a JSON header under
the metadata key ``"unisync_thirdparty_expert"`` (architecture, representations, measure, the
source file's name and SHA-256, the weights' licence), loadable later without ``torch.load``.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from torch import Tensor

from unisync_loss.atomic import save_state_dict
from unisync_loss.experts import ExpertFileError, load_expert
from unisync_loss.model import UniSync
from unisync_loss.thirdparty.base import ThirdPartyExpert
from unisync_loss.thirdparty.syncnet_v2 import SyncNetV2
from unisync_loss.thirdparty.wav2lip_syncnet import Wav2LipSyncNet

METADATA_KEY = "unisync_thirdparty_expert"
FORMAT_VERSION = 1
SPEC_PREFIXES: dict[str, type[ThirdPartyExpert]] = {"wav2lip": Wav2LipSyncNet, "syncnet_v2": SyncNetV2}
"""``PREFIX:PATH`` spec prefixes and the architecture each loads."""
ARCHITECTURES: dict[str, type[ThirdPartyExpert]] = {cls.config.architecture: cls for cls in SPEC_PREFIXES.values()}
UPSTREAM = {
    "wav2lip_syncnet_color": "Rudrabha/Wav2Lip models/syncnet.py SyncNet_color (architecture read at 5c90fa9)",
    "syncnet_v2": "joonson/syncnet_python SyncNetModel.py S (architecture read at 6efbb1c)",
}
LICENCES = {
    "wav2lip_syncnet_color": "Wav2Lip's expert checkpoint: personal / research / non-commercial use only "
                             "(Rudrabha/Wav2Lip README; trained on LRS2, commercial use prohibited)",
    "syncnet_v2": "SyncNet v2 weights (syncnet_v2.model, VGG Oxford): a separate download under the authors' "
                  "research terms; the syncnet_python code is MIT",
}
OPTIONAL_KEY_SUFFIX = "num_batches_tracked"


def read_torch_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors.

    ``ExpertFileError`` when the file is missing, is not a torch checkpoint, or holds pickled
    objects other than tensors and plain containers (refused without running them).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExpertFileError(f"checkpoint not found: looked at {path.resolve()}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # old checkpoints; harmless
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # the restricted unpickler stopped before running anything
        asked = re.search(r"GLOBAL ([\w.]+)", str(error))
        reason = f"it asks for the Python object {asked.group(1)}" if asked else "it is not a pickle of tensors"
        raise ExpertFileError(
            f"{path}: refused: not a checkpoint of plain tensors and containers ({reason}); unpickling anything "
            "else could run code, so nothing in it was executed. If you trust the file, re-save its state dict "
            "where it was made: torch.save(model.state_dict(), PATH)"
        ) from error
    except Exception as error:  # torch reports other damage with assorted types (EOFError, KeyError, RuntimeError)
        raise ExpertFileError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})") from error


def state_dict_of(checkpoint: Any, path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict in a loaded checkpoint: ``checkpoint["state_dict"]`` or the checkpoint itself, ``module.`` prefixes removed."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping) or not state:
        raise ExpertFileError(f"{path}: expected a state dict (name -> tensor) or a dict with 'state_dict', got {type(state).__name__}")
    not_tensors = [str(name) for name, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise ExpertFileError(f"{path}: the state dict holds non-tensor entries: {', '.join(not_tensors[:5])}")
    if all(str(name).startswith("module.") for name in state):
        return {name[len("module."):]: value for name, value in state.items()}
    return dict(state)


def load_exact(model: ThirdPartyExpert, state: Mapping[str, Tensor], source: str | os.PathLike, *, optional_missing: bool = True) -> None:
    """Copy ``state`` into ``model`` after checking names and shapes against the architecture.

    ``ExpertFileError`` listing missing, unexpected or mis-shaped tensors; ``num_batches_tracked``
    may be missing when ``optional_missing`` (kept at the model's value).
    """
    expected = model.state_dict()
    missing = sorted(name for name in set(expected) - set(state) if not (optional_missing and name.endswith(OPTIONAL_KEY_SUFFIX)))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{name} {tuple(state[name].shape)} (needs {tuple(expected[name].shape)})"
             for name in expected if name in state and state[name].shape != expected[name].shape]
    problems = [f"{len(items)} {label} {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}" for label, items in
                (("missing tensor(s)", missing), ("unexpected tensor(s)", unexpected), ("mis-shaped tensor(s)", wrong)) if items]
    if problems:
        required = {name for name in state if not name.endswith(OPTIONAL_KEY_SUFFIX)}
        other = [prefix for prefix, cls in SPEC_PREFIXES.items() if cls is not type(model) and _required_keys(cls) == required]
        hint = f" (it is a {other[0]} state dict: use {other[0]}:PATH)" if other else ""
        raise ExpertFileError(f"{source}: not a {model.config.architecture} state dict{hint}: {'; '.join(problems)}")
    model.load_state_dict({**expected, **state}, strict=True)


def _required_keys(cls: type[ThirdPartyExpert]) -> set[str]:
    """State-dict keys of an architecture but ``num_batches_tracked`` (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        return {name for name in cls().state_dict() if not name.endswith(OPTIONAL_KEY_SUFFIX)}


def _frozen(model: ThirdPartyExpert, map_location: str | torch.device) -> ThirdPartyExpert:
    return model.to(map_location).eval().requires_grad_(False)


def load_thirdparty_checkpoint(prefix: str, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ThirdPartyExpert:
    """A frozen expert of the architecture named by ``prefix`` (``"wav2lip"`` or ``"syncnet_v2"``) from a torch checkpoint or its conversion."""
    if prefix not in SPEC_PREFIXES:
        raise ExpertFileError(f"unknown third-party expert {prefix!r}; known: {', '.join(SPEC_PREFIXES)}")
    if Path(path).suffix == ".safetensors":
        model = load_converted(path, map_location)
        if not isinstance(model, SPEC_PREFIXES[prefix]):
            raise ExpertFileError(f"{path}: holds a {model.config.architecture} expert, not {prefix}")
        return model
    model = SPEC_PREFIXES[prefix]()
    load_exact(model, state_dict_of(read_torch_checkpoint(path), path), path)
    model.source = {"file": Path(path).name, "sha256": _sha256(path)}
    return _frozen(model, map_location)


def save_converted(model: ThirdPartyExpert, path: str | os.PathLike) -> Path:
    """Write a third-party expert as ``.safetensors`` with its JSON header (atomically); returns the path."""
    path = Path(path)
    architecture = model.config.architecture
    header = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "window": model.config.window,
        "audio": model.config.audio,
        "visual": model.config.visual,
        "measure": model.config.measure,
        "embed_dim": model.config.embed_dim,
        "upstream": UPSTREAM[architecture],
        "source": model.source,
        "licence": LICENCES[architecture],
    }
    save_state_dict(model, path, {METADATA_KEY: json.dumps(header)})
    return path


def read_converted_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """The third-party header of a ``.safetensors`` file, or ``None`` when it has none (e.g. a UniSync expert)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ExpertFileError(f"{path}: not a readable safetensors file (truncated or corrupt?): {error}") from error
    if METADATA_KEY not in metadata:
        return None
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ExpertFileError(f"{path}: the {METADATA_KEY!r} metadata is not valid JSON ({error})") from error
    if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
        raise ExpertFileError(f"{path}: third-party expert header of an unknown format ({str(header)[:80]}); this unisync-loss reads version {FORMAT_VERSION}")
    if header.get("architecture") not in ARCHITECTURES:
        raise ExpertFileError(f"{path}: unknown architecture {header.get('architecture')!r}; known: {', '.join(ARCHITECTURES)}")
    return header


def load_converted(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ThirdPartyExpert:
    """A frozen third-party expert from its ``.safetensors`` conversion (no unpickling; every tensor checked).

    The JSON header is kept as ``model.expert_header`` (as :func:`unisync_loss.experts.load_expert` does).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ExpertFileError(f"expert file not found: looked at {path.resolve()}")
    header = read_converted_header(path)
    if header is None:
        raise ExpertFileError(f"{path}: a safetensors file but not a converted third-party expert (no {METADATA_KEY!r} metadata)")
    model = ARCHITECTURES[header["architecture"]]()
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for damaged data
        raise ExpertFileError(f"{path}: tensor data is unreadable (truncated or corrupt file?): {error}") from error
    load_exact(model, state, path, optional_missing=False)
    model.source = header.get("source", {})
    model.expert_header = header
    return _frozen(model, map_location)


def convert_checkpoint(spec: str, out: str | os.PathLike) -> Path:
    """Load ``spec`` (``"wav2lip:PATH"`` / ``"syncnet_v2:PATH"``) safely and write it to ``out`` as ``.safetensors``."""
    if Path(out).suffix != ".safetensors":
        raise ValueError(f"convert_checkpoint: the output must end in .safetensors, got {out}")
    model = load_sync_expert(spec)
    if not isinstance(model, ThirdPartyExpert):
        raise ValueError(f"convert_checkpoint: {spec!r} is not a third-party checkpoint; use wav2lip:PATH or syncnet_v2:PATH")
    return save_converted(model, out)


def load_sync_expert(spec: str | os.PathLike, map_location: str | torch.device = "cpu") -> UniSync | ThirdPartyExpert:
    """Any sync expert, frozen and in eval mode, from a spec (module docstring table)."""
    text = str(spec)
    prefix, _, rest = text.partition(":")
    if prefix in SPEC_PREFIXES and rest:
        return load_thirdparty_checkpoint(prefix, rest, map_location)
    path = Path(text).expanduser()
    if path.suffix == ".safetensors" and path.is_file() and read_converted_header(path) is not None:
        return load_converted(path, map_location)
    if path.is_file() and path.suffix in (".pth", ".pt", ".model", ".ckpt", ".tar"):
        raise ExpertFileError(
            f"{path}: a torch checkpoint; say which architecture it holds: "
            f"{' or '.join(f'{name}:{path}' for name in SPEC_PREFIXES)}"
        )
    return load_expert(text, map_location)


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
