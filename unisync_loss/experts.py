"""Expert files: save / load UniSync experts as ``.safetensors`` and find them by representation pair.

An expert file holds the model's state dict (weights and the preprocessing statistics, as tensors)
and, under the metadata key ``"unisync_expert"``, a JSON header::

    {"format_version": 1, "audio": {"hubert": {"dim": 1024}}, "visual": {"3dmm": {"dim": 64}},
     "window": 5, "embed_dim": 128, "config": {... UniSyncConfig.to_dict() ...},
     "training": {... free-form summary: data, steps, eval accuracy ...}}

Loading never unpickles anything; a file that is missing, truncated, corrupt, not an expert, of
another format version or whose tensors do not match its config raises :class:`ExpertFileError`
and no model is returned.

Where experts live: ``expert_home()`` is ``$UNISYNC_HOME`` or ``$XDG_CACHE_HOME/unisync``
(``~/.cache/unisync``); pretraining exports to ``expert_home()/experts/{audio}_{visual}.safetensors``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unisync_loss.model import UniSync, UniSyncConfig
from unisync_loss.representations import modality

FORMAT_VERSION = 1
METADATA_KEY = "unisync_expert"
EXPERT_SUFFIX = ".safetensors"
BUNDLED_DIR = Path(__file__).resolve().parent / "experts"


class ExpertFileError(ValueError):
    """An expert file is missing, unreadable, not an expert, or does not match its own header."""


def expert_home() -> Path:
    """``$UNISYNC_HOME`` if set, else ``$XDG_CACHE_HOME/unisync`` (default ``~/.cache/unisync``)."""
    if os.environ.get("UNISYNC_HOME"):
        return Path(os.environ["UNISYNC_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "unisync"


def experts_dir() -> Path:
    """The folder of cached experts, ``expert_home() / "experts"``."""
    return expert_home() / "experts"


def default_expert_path(audio: str, visual: str) -> Path:
    """Cache path of the expert for a pair: ``expert_home()/experts/{audio}_{visual}.safetensors``."""
    _check_pair(audio, visual)
    return experts_dir() / f"{audio}_{visual}{EXPERT_SUFFIX}"


def bundled_expert_path(audio: str, visual: str) -> Path:
    """Path of the expert trained on the procedural corpus shipped with the package (may not exist)."""
    _check_pair(audio, visual)
    return BUNDLED_DIR / f"procedural_{audio}_{visual}{EXPERT_SUFFIX}"


def save_expert(model: UniSync, path: str | os.PathLike, training: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` as an expert file (atomically: a temp file then rename); returns the path.

    ``training`` is a JSON-serialisable summary (data, steps, eval accuracy, ...) kept in the header.
    """
    path = Path(path)
    config = model.config.to_dict()
    header = {
        "format_version": FORMAT_VERSION,
        "audio": config["audio"],
        "visual": config["visual"],
        "window": config["window"],
        "embed_dim": config["embed_dim"],
        "config": config,
        "training": training or {},
    }
    try:
        metadata = {METADATA_KEY: json.dumps(header)}
    except TypeError as error:
        raise ValueError(f"save_expert: the training summary must be JSON-serialisable ({error})") from error
    tensors = {name: value.detach().to("cpu").contiguous().clone() for name, value in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temp, metadata=metadata)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return path


def read_expert_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of an expert file (no tensors loaded); ``ExpertFileError`` if it is not a valid expert."""
    path = _existing_file(path)
    with _open(path) as handle:
        return _header(path, handle.metadata())


def load_expert(path_or_name: str | os.PathLike, map_location: str | torch.device = "cpu") -> UniSync:
    """Load an expert file as a frozen :class:`UniSync` (eval mode, ``requires_grad`` False) on ``map_location``.

    ``path_or_name`` is a file path or the name of a cached expert (``"hubert_3dmm"`` ->
    ``expert_home()/experts/hubert_3dmm.safetensors``). The header and every tensor are checked
    before any weight is copied; a mismatch raises :class:`ExpertFileError`. The JSON header
    (including the training summary) is kept as ``model.expert_header``.
    """
    path = _existing_file(path_or_name)
    with _open(path) as handle:
        header = _header(path, handle.metadata())
        try:
            model = UniSync(UniSyncConfig.from_dict(header["config"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ExpertFileError(f"{path}: the architecture config in the header is invalid ({error})") from error
        expected = model.state_dict()
        stored = set(handle.keys())
        missing = sorted(set(expected) - stored)
        unexpected = sorted(stored - set(expected))
        if missing:
            raise ExpertFileError(f"{path}: missing tensor(s) {', '.join(missing)} required by its config")
        if unexpected:
            raise ExpertFileError(f"{path}: unexpected tensor(s) {', '.join(unexpected)} not in its config")
        for name, target in expected.items():
            shape = tuple(handle.get_slice(name).get_shape())
            if shape != tuple(target.shape):
                raise ExpertFileError(f"{path}: tensor {name} has shape {shape}, its config needs {tuple(target.shape)}")
        try:
            tensors = {name: handle.get_tensor(name) for name in expected}
        except Exception as error:  # safetensors reports damaged data with its own exception types
            raise ExpertFileError(f"{path}: tensor data is unreadable (truncated or corrupt file?): {error}") from error
    model.load_state_dict(tensors, strict=True)
    model.expert_header = header
    return model.to(map_location).eval().requires_grad_(False)


def resolve_expert(audio: str, visual: str, weights: str | os.PathLike | None = None) -> Path:
    """Find the expert file for ``(audio, visual)``.

    ``weights=None``: ``default_expert_path(audio, visual)``, else any expert in ``experts_dir()``
    whose header holds both representations (first by file name). ``weights="procedural"``: the
    bundled procedural-corpus expert. Anything else: that file path, or a name ``unisync experts``
    lists (:func:`named_expert_paths`). ``ExpertFileError`` (listing
    where it looked and how to get an expert) when nothing is found.
    """
    _check_pair(audio, visual)
    if weights is None:
        return _find_cached(audio, visual)
    if str(weights) == "procedural":
        path = bundled_expert_path(audio, visual)
        if not path.is_file():
            raise ExpertFileError(
                f"no bundled procedural expert for ({audio}, {visual}): looked at {path}. {_how_to_get(audio, visual)}"
            )
        return path
    try:
        return _existing_file(weights)
    except ExpertFileError as error:
        raise ExpertFileError(f"{error}. {_how_to_get(audio, visual)}") from None


def _find_cached(audio: str, visual: str) -> Path:
    default = default_expert_path(audio, visual)
    if default.is_file():
        return default
    folder = experts_dir()
    candidates = sorted(folder.glob(f"*{EXPERT_SUFFIX}")) if folder.is_dir() else []
    for candidate in candidates:
        try:
            header = read_expert_header(candidate)
        except ExpertFileError:
            continue
        if audio in header["audio"] and visual in header["visual"]:
            return candidate
    raise ExpertFileError(
        f"no expert for ({audio}, {visual}) found: looked at {default} and at the {len(candidates)} other "
        f"expert file(s) in {folder} (set $UNISYNC_HOME to change the cache). {_how_to_get(audio, visual)}"
    )


def _how_to_get(audio: str, visual: str) -> str:
    return (
        f"Train one with `python -m pretrain.train --config pretrain/configs/{audio}_{visual}.yaml` "
        f"(run from the unisync-loss checkout; it exports to {default_expert_path(audio, visual)}), "
        "or pass weights=PATH to an expert file."
    )


def _check_pair(audio: str, visual: str) -> None:
    if modality(audio) != "audio":
        raise ValueError(f"{audio!r} is not an audio representation")
    if modality(visual) != "visual":
        raise ValueError(f"{visual!r} is not a visual representation")


def named_expert_paths(name: str) -> list[Path]:
    """Where the expert called ``name`` may be, in lookup order: the cache, then the bundled experts.

    ``name`` is a file name with or without ``.safetensors``, as ``unisync experts`` lists it:
    ``"hubert_3dmm"`` -> ``experts_dir()/hubert_3dmm.safetensors``, ``"procedural_hubert_3dmm"`` ->
    also ``BUNDLED_DIR/procedural_hubert_3dmm.safetensors``.
    """
    file_name = name if name.endswith(EXPERT_SUFFIX) else f"{name}{EXPERT_SUFFIX}"
    return [experts_dir() / file_name, BUNDLED_DIR / file_name]


def _existing_file(path_or_name: str | os.PathLike) -> Path:
    """An existing file path as given, else a bare name looked up with :func:`named_expert_paths`."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    looked = [path.resolve()]
    if len(path.parts) == 1:
        for candidate in named_expert_paths(path.name):
            if candidate.is_file():
                return candidate
            looked.append(candidate)
    raise ExpertFileError(f"expert file not found: looked at {', '.join(str(p) for p in looked)}")


def _open(path: Path):
    """``safe_open`` with its errors (bad header, truncated buffer) turned into ExpertFileError."""
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError and OS errors
        raise ExpertFileError(f"{path}: not a readable safetensors file (truncated or corrupt?): {error}") from error


def _header(path: Path, metadata: dict[str, str] | None) -> dict[str, Any]:
    if not metadata or METADATA_KEY not in metadata:
        raise ExpertFileError(f"{path}: a safetensors file but not a UniSync expert (no {METADATA_KEY!r} metadata)")
    try:
        header = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ExpertFileError(f"{path}: the {METADATA_KEY!r} metadata is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise ExpertFileError(f"{path}: the {METADATA_KEY!r} metadata is not a JSON object")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ExpertFileError(
            f"{path}: expert format version {version!r}, this unisync-loss reads version {FORMAT_VERSION}"
        )
    for key in ("audio", "visual", "config"):
        if not isinstance(header.get(key), dict):
            raise ExpertFileError(f"{path}: the expert header lacks its {key!r} section")
    return header
