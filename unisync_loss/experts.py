"""Expert files: save / load UniSync experts as ``.safetensors`` and find them by representation pair.

An expert file holds the model's state dict (weights and the preprocessing statistics, as tensors)
and, under the metadata key ``"unisync_expert"``, a JSON header::

    {"format_version": 1, "audio": {"hubert": {"dim": 1024}}, "visual": {"3dmm": {"dim": 64}},
     "window": 5, "embed_dim": 128, "config": {... UniSyncConfig.to_dict() ...},
     "pairs": [["hubert", "3dmm"]],
     "training": {... free-form summary: data, steps, eval accuracy ...}}

``pairs`` lists the (audio, visual) pairs the expert was trained on. A joint expert holds several
heads per modality sharing ε2 / ε4, and serves every pair it lists; a combination of its heads
that no training step paired is *untrained* (:func:`trained_pairs`; ``UniSyncLoss`` refuses it
unless asked explicitly). A header without ``pairs`` (older files) counts every combination of
its heads as trained.

Loading never unpickles anything; a file that is missing, truncated, corrupt, not an expert, of
another format version or whose tensors do not match its config raises :class:`ExpertFileError`
and no model is returned. A hostile file cannot exhaust memory: the architecture in the header is
built on the ``meta`` device (nothing allocated) and compared with the stored tensor shapes and
dtypes before any tensor is read; weights must be finite and standard deviations / variances
positive.

Where experts live: ``expert_home()`` is ``$UNISYNC_HOME`` or ``$XDG_CACHE_HOME/unisync``
(``~/.cache/unisync``); pretraining exports to ``expert_home()/experts/{audio}_{visual}.safetensors``.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import safe_open

from unisync_loss.atomic import save_state_dict
from unisync_loss.model import UniSync, UniSyncConfig, state_shapes
from unisync_loss.representations import modality

FORMAT_VERSION = 1
METADATA_KEY = "unisync_expert"
EXPERT_SUFFIX = ".safetensors"
BUNDLED_DIR = Path(__file__).resolve().parent / "experts"
MAX_HEADER_DEPTH = 32
"""Deepest nesting of lists / objects accepted in a header (a real one is about 5 levels deep)."""
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
"""safetensors dtype codes an expert's tensors may have (every tensor of a UniSync is floating point)."""


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


def save_expert(
    model: UniSync,
    path: str | os.PathLike,
    training: dict[str, Any] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Write ``model`` to ``path`` as an expert file (atomically: a temp file then rename); returns the path.

    ``training`` is a JSON-serialisable summary (data, steps, eval accuracy, ...) kept in the header.
    ``pairs``: the (audio, visual) pairs the model was trained on (default: every combination of its heads).
    """
    path = Path(path)
    config = model.config.to_dict()
    pairs = [list(pair) for pair in (pairs if pairs is not None else _all_pairs(config))]
    unknown = [pair for pair in pairs if not model.has_heads(*pair)]
    if unknown or not pairs:
        raise ValueError(f"save_expert: pairs must be non-empty (audio, visual) pairs of the model's heads "
                         f"({model.describe_heads()}), got {pairs}")
    header = {
        "format_version": FORMAT_VERSION,
        "audio": config["audio"],
        "visual": config["visual"],
        "window": config["window"],
        "embed_dim": config["embed_dim"],
        "config": config,
        "pairs": pairs,
        "training": training or {},
    }
    try:
        metadata = {METADATA_KEY: json.dumps(header)}
    except TypeError as error:
        raise ValueError(f"save_expert: the training summary must be JSON-serialisable ({error})") from error
    save_state_dict(model, path, metadata)
    return path


def trained_pairs(header: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (audio, visual) pairs an expert header says it was trained on (all head combinations if it does not say)."""
    if "pairs" not in header:
        return _all_pairs(header)
    return [(audio, visual) for audio, visual in header["pairs"]]


def _all_pairs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(audio, visual) for audio in config["audio"] for visual in config["visual"]]


def read_expert_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of an expert file (no tensors loaded); ``ExpertFileError`` if it is not a valid expert."""
    path = _existing_file(path)
    with _open(path) as handle:
        return _header(path, handle.metadata())


def load_expert(path_or_name: str | os.PathLike, map_location: str | torch.device = "cpu") -> UniSync:
    """Load an expert file as a frozen :class:`UniSync` (eval mode, ``requires_grad`` False) on ``map_location``.

    ``path_or_name`` is a file path or any name ``unisync experts`` lists: a bundled expert
    (``"procedural_hubert_3dmm"``) or one exported under ``expert_home()/experts``
    (``"hubert_3dmm"`` -> ``expert_home()/experts/hubert_3dmm.safetensors``). The header and every tensor are checked
    before any weight is copied; a mismatch raises :class:`ExpertFileError`. The JSON header
    (including the training summary) is kept as ``model.expert_header``.
    """
    path = _existing_file(path_or_name)
    with _open(path) as handle:
        header = _header(path, handle.metadata())
        config, shapes = _architecture(path, header, stored_count=len(handle.keys()))
        _check_stored_tensors(path, handle, shapes)
        try:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except Exception as error:  # safetensors reports damaged data with its own exception types
            raise ExpertFileError(f"{path}: tensor data is unreadable (truncated or corrupt file?): {error}") from error
    for name, tensor in tensors.items():
        _check_values(path, name, tensor)
    with torch.inference_mode(False):  # real parameters even when called under inference_mode
        model = UniSync(config)
        model.load_state_dict(tensors, strict=True)
    model.expert_header = header
    return model.to(map_location).eval().requires_grad_(False)


def _architecture(path: Path, header: dict[str, Any], stored_count: int) -> tuple[UniSyncConfig, dict[str, tuple[int, ...]]]:
    """The header's config and the tensor shapes it implies (built on the meta device: nothing allocated)."""
    try:
        config = UniSyncConfig.from_dict(header["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExpertFileError(f"{path}: the architecture config in the header is invalid ({error})") from error
    if config.unified_layers > stored_count:  # each layer holds tensors: bounds the modules built even on meta
        raise ExpertFileError(
            f"{path}: the header asks for {config.unified_layers} unified layers, but the file holds only "
            f"{stored_count} tensor(s); expected a config that matches the stored tensors"
        )
    try:
        return config, state_shapes(config)
    except (RuntimeError, OverflowError) as error:  # sizes beyond what torch can even describe
        raise ExpertFileError(
            f"{path}: the architecture in the header cannot be built ({error}); expected sizes that match the stored tensors"
        ) from error


def _check_stored_tensors(path: Path, handle: Any, expected: dict[str, tuple[int, ...]]) -> None:
    """Names, shapes and dtypes of the stored tensors against ``expected`` (read from headers only)."""
    stored = set(handle.keys())
    missing = sorted(set(expected) - stored)
    unexpected = sorted(stored - set(expected))
    if missing:
        raise ExpertFileError(f"{path}: missing tensor(s) {', '.join(missing)} required by its config")
    if unexpected:
        raise ExpertFileError(f"{path}: unexpected tensor(s) {', '.join(unexpected)} not in its config")
    for name, shape in expected.items():
        stored_slice = handle.get_slice(name)
        found = tuple(stored_slice.get_shape())
        if found != shape:
            raise ExpertFileError(f"{path}: tensor {name} has shape {found}, its config needs {shape}")
        dtype = stored_slice.get_dtype()
        if dtype not in FLOAT_DTYPES:
            raise ExpertFileError(f"{path}: tensor {name} has dtype {dtype}, expected a floating dtype ({', '.join(FLOAT_DTYPES)})")


def _check_values(path: Path, name: str, tensor: torch.Tensor) -> None:
    """Weights finite; standard deviations positive and variances non-negative (they divide inputs)."""
    if not bool(torch.isfinite(tensor).all()):
        raise ExpertFileError(f"{path}: tensor {name} holds NaN or Inf values, expected finite weights")
    if name.endswith("standardize.std") and not bool((tensor > 0).all()):
        raise ExpertFileError(f"{path}: tensor {name} has a minimum of {tensor.min().item():g}, expected standard deviations > 0")
    if name.endswith("running_var") and not bool((tensor >= 0).all()):
        raise ExpertFileError(f"{path}: tensor {name} has a minimum of {tensor.min().item():g}, expected variances >= 0")


def resolve_expert(audio: str, visual: str, weights: str | os.PathLike | None = None) -> Path:
    """Find the expert file for ``(audio, visual)``.

    ``weights=None``: ``default_expert_path(audio, visual)``, else any expert in ``experts_dir()``
    whose header holds both representations (first by file name; an unusable file there is skipped
    with a warning naming it and its problem). ``weights="procedural"``: the
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
    skipped = []
    for candidate in candidates:
        try:
            header = read_expert_header(candidate)
        except ExpertFileError as error:
            warnings.warn(f"skipping an unusable file in the expert cache: {error}", stacklevel=3)
            skipped.append(candidate.name)
            continue
        if (audio, visual) in trained_pairs(header):
            return candidate
    unusable = f"; skipped {len(skipped)} unusable file(s): {', '.join(skipped)}" if skipped else ""
    raise ExpertFileError(
        f"no expert for ({audio}, {visual}) found: looked at {default} and at the {len(candidates)} other "
        f"expert file(s) in {folder}{unusable} (set $UNISYNC_HOME to change the cache). {_how_to_get(audio, visual)}"
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
    too_deep = f"{path}: the {METADATA_KEY!r} metadata is nested too deeply (expected at most {MAX_HEADER_DEPTH} levels)"
    try:
        header = json.loads(metadata[METADATA_KEY])
    except RecursionError:  # nested deeper than Python's recursion limit
        raise ExpertFileError(too_deep) from None
    except json.JSONDecodeError as error:
        raise ExpertFileError(f"{path}: the {METADATA_KEY!r} metadata is not valid JSON ({error})") from error
    if _json_depth(header) > MAX_HEADER_DEPTH:
        raise ExpertFileError(too_deep)
    if not isinstance(header, dict):
        raise ExpertFileError(f"{path}: the {METADATA_KEY!r} metadata is not a JSON object, got {type(header).__name__}")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ExpertFileError(
            f"{path}: expert format version {version!r}, this unisync-loss reads version {FORMAT_VERSION}"
        )
    for key in ("audio", "visual", "config"):
        if not isinstance(header.get(key), dict):
            raise ExpertFileError(f"{path}: the expert header lacks its {key!r} section (expected a JSON object, got {_kind(header.get(key))})")
    for key in ("window", "embed_dim"):
        value = header.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExpertFileError(f"{path}: the expert header's {key!r} must be a positive integer, got {_kind(value)}")
    pairs = header.get("pairs", [])
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and pair[0] in header["audio"] and pair[1] in header["visual"] for pair in pairs
    ) or ("pairs" in header and not pairs):
        raise ExpertFileError(f"{path}: the expert header's 'pairs' must list [audio, visual] pairs of its heads "
                              f"(audio {sorted(header['audio'])}, visual {sorted(header['visual'])}), got {_kind(header.get('pairs'))}")
    if not isinstance(header.get("training", {}), dict):
        raise ExpertFileError(f"{path}: the expert header's 'training' section must be a JSON object, got {_kind(header['training'])}")
    return header


def _kind(value: Any) -> str:
    """``"missing"`` for None, else the value's repr (shortened) and JSON type, for error messages."""
    if value is None:
        return "missing"
    text = repr(value)
    return f"{text[:40]}{'...' if len(text) > 40 else ''} ({type(value).__name__})"


def _json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0), computed without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_HEADER_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest
