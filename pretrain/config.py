"""Training configuration: a YAML file turned into nested dataclasses, plus ``key=value`` overrides.

A config file has one mapping per section::

    model:     UniSyncConfig fields (unisync_loss.model), incl. each representation's options
    data:      where clips come from (procedural corpus in memory, or a Wav2Lip-layout folder)
    sampling:  pair kinds and their ratios (pretrain.pairs)
    joint:     the (audio, visual) pairs a joint run trains and their shares (several heads, one space)
    init:      start from an exported expert, optionally freezing modules (adding a head)
    augment:   framing augmentation of rgb / parsing windows (pretrain.augment; off by default)
    loss:      BCE + margin weights (pretrain.losses)
    optim:     optimiser, batch, steps, accumulation, clipping, precision, torch.compile
    eval / checkpoint / export / debug, and top-level output_dir, seed, threads, log_every

Overrides use dotted keys, e.g. ``optim.lr=1e-3 loss.margin=0 sampling.cross_speaker=false``;
values are parsed as YAML and converted to the field's type. An unknown key raises a
``ValueError`` listing the valid keys of that section. Keys below ``model.audio`` and
``model.visual`` are free-form representation options, validated when the model is built.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from unisync_loss.model import UniSyncConfig


@dataclass
class DataConfig:
    """Where training clips come from; ``pretrain.data.open_source`` reads this as its spec.

    ``kind="procedural"`` generates the procedural corpus in memory (``speakers`` ..
    ``preset``, ``corpus_seed``); ``kind="folder"`` reads a Wav2Lip-layout ``root``.
    """

    kind: str = "procedural"
    root: str | None = None
    filelist_dir: str | None = None
    image_size: int = 96
    speakers: int = 16
    clips_per_speaker: int = 4
    seconds: float = 3.0
    preset: str = "default"
    corpus_seed: int = 0
    cache: bool = True
    stats_clips: int = 64


@dataclass
class RatioConfig:
    """Share of each pair kind in a batch (normalised to sum 1; see pretrain.pairs)."""

    positive: float = 0.5
    overlap: float = 0.15
    no_overlap: float = 0.15
    cross_speaker: float = 0.2


@dataclass
class SamplingConfig:
    """Pair sampling (the paper's Figure 3).

    ``cross_speaker: false`` drops cross-speaker negatives (their share goes to the
    same-speaker kinds). Overlapping negatives use shifts ``overlap_min_shift <= |s| < T``;
    non-overlapping ones ``T <= |s| <= no_overlap_max_shift`` (``null``: anywhere in the clip),
    or, with probability ``other_clip``, a window of another clip of the same speaker.
    """

    ratios: RatioConfig = field(default_factory=RatioConfig)
    cross_speaker: bool = True
    overlap_min_shift: int = 1
    no_overlap_max_shift: int | None = None
    other_clip: float = 0.5


@dataclass
class AugmentConfig:
    """Framing augmentation of rgb / parsing windows (``pretrain.augment``): off by default.

    Each visual window is seen through a crop rescaled by ``U[1 - framing_scale, 1 + framing_scale]``
    and moved by ``U[-framing_shift, framing_shift]`` crop sides in x and y, the same for all its frames.
    """

    framing_scale: float = 0.0
    framing_shift: float = 0.0


@dataclass
class LossConfig:
    """``bce * BCE(p, y) + margin * (relu(p - negative_margin)^2 [neg] + relu(positive_margin - p)^2 [pos])``.

    ``margin: 0`` is the BCE-only ablation; ``positive_margin: null`` leaves positives to the BCE.
    """

    bce: float = 1.0
    margin: float = 1.0
    negative_margin: float = 0.3
    positive_margin: float | None = None
    eps: float = 1e-6


@dataclass
class OptimConfig:
    """Optimisation. ``batch_size`` is the global number of pairs per micro-step over all processes."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    schedule: str = "cosine"
    batch_size: int = 64
    grad_accum: int = 1
    steps: int = 2000
    grad_clip: float | None = 1.0
    mixed_precision: str | None = None
    compile: bool = False


@dataclass
class EvalConfig:
    """Sync accuracy on ``val`` every ``every`` steps (``clips`` clips), on all of ``test`` at the end."""

    every: int = 200
    clips: int = 8
    test_clips: int | None = None


@dataclass
class CheckpointConfig:
    """``accelerator.save_state`` every ``every`` steps into OUTDIR/checkpoints, keeping the last ``keep``."""

    every: int = 200
    keep: int = 2


@dataclass
class ExportConfig:
    """Where the best checkpoint goes at the end (``null``: the expert cache, default_expert_path)."""

    enabled: bool = True
    path: str | None = None


@dataclass
class DebugConfig:
    """Test hooks: per-rank dumps of sample ids and parameter checksums; a NaN injected at a step."""

    dump_ranks: bool = False
    nan_step: int | None = None


@dataclass
class JointConfig:
    """Joint pretraining: which (audio, visual) pairs a run trains, and their shares of each batch.

    ``pairs`` lists ``[audio, visual]`` pairs of ``model.audio`` x ``model.visual`` (``null``: every
    combination); ``ratios`` their shares of a batch (normalised; ``null``: uniform). All pairs
    share ε2 / ε4: one embedding space. See pretrain.pairs.JointPairSampler.
    """

    pairs: list[list[str]] | None = None
    ratios: list[float] | None = None


@dataclass
class InitConfig:
    """Start from an exported expert instead of random weights (adding a head to a trained space).

    ``expert``: an expert file; the model keeps every head of the expert and of ``model.*`` (new
    heads start from random weights), the shared layers come from the expert. ``freeze``: modules
    of UniSync kept exactly as they are (no gradient, eval mode): ``audio_unified`` (ε4),
    ``visual_unified`` (ε2), ``audio_heads`` / ``visual_heads`` (all heads of a modality) or one
    head such as ``audio_heads.mel``. Heads that no trained pair uses are frozen in any case.
    """

    expert: str | None = None
    freeze: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """The whole training configuration."""

    model: UniSyncConfig
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    init: InitConfig = field(default_factory=InitConfig)
    output_dir: str | None = None
    seed: int = 0
    threads: int | None = None
    log_every: int = 10

    @property
    def audio(self) -> str:
        """The audio representation of a single-pair run (the single key of ``model.audio``)."""
        return _single_key(self.model.audio, "model.audio")

    @property
    def visual(self) -> str:
        """The visual representation of a single-pair run (the single key of ``model.visual``)."""
        return _single_key(self.model.visual, "model.visual")

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (audio, visual) pairs this run trains: ``joint.pairs``, else every ``model.audio`` x ``model.visual``."""
        if self.joint.pairs is None:
            return [(audio, visual) for audio in self.model.audio for visual in self.model.visual]
        return [(audio, visual) for audio, visual in self.joint.pairs]

    @property
    def pair_ratios(self) -> list[float]:
        """Share of each of :attr:`pairs` in a batch (``joint.ratios`` or uniform), not yet normalised."""
        return list(self.joint.ratios) if self.joint.ratios is not None else [1.0] * len(self.pairs)

    @property
    def window(self) -> int:
        """T, the window length in video frames."""
        return self.model.window

    @property
    def name(self) -> str:
        """``<audio>_<visual>``; for a joint run the representations joined by ``+``, e.g. ``mel+hubert_rgb+3dmm``."""
        return f"{'+'.join(self.model.audio)}_{'+'.join(self.model.visual)}"

    @property
    def out_dir(self) -> Path:
        """OUTDIR (``output_dir`` or runs/<name>, see :attr:`name`)."""
        return Path(self.output_dir or f"runs/{self.name}")

    def __post_init__(self) -> None:
        _check_joint(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable); ``from_dict(to_dict())`` round-trips."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a nested dict (missing sections and fields take their defaults)."""
        if "model" not in data:
            raise ValueError("config: section 'model' is required (UniSyncConfig fields: audio, visual, window, ...)")
        return _build(cls, data, prefix="")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config and apply ``key=value`` overrides (see module docstring)."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config {path}: expected a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        apply_override(data, item)
    return TrainConfig.from_dict(data)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``section.key=value`` in the raw config dict ``data``, checking the key against the schema."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-3")
    parts = key.split(".")
    target_type = _resolve_key(parts)
    value = _coerce(yaml.safe_load(text), target_type, key)
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value


def valid_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """All dotted keys of the schema (dict-valued fields end in ``.*``)."""
    keys = []
    for name, hint in _hints(cls).items():
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            keys += valid_keys(hint, dotted + ".")
        elif typing.get_origin(hint) is dict or hint is dict:
            keys.append(dotted + ".*")
        else:
            keys.append(dotted)
    return keys


def _resolve_key(parts: list[str]) -> Any:
    """Type hint of the field named by ``parts``; ``Any`` below a dict-valued field."""
    cls: Any = TrainConfig
    for depth, part in enumerate(parts):
        hints = _hints(cls)
        if part not in hints:
            prefix = ".".join(parts[:depth])
            section = f"section {prefix!r}" if prefix else "the top level"
            raise ValueError(
                f"unknown config key {'.'.join(parts)!r}: {section} has no field {part!r}; "
                f"valid keys: {', '.join(valid_keys(cls, prefix + '.' if prefix else ''))}"
            )
        cls = hints[part]
        if typing.get_origin(cls) is dict or cls is dict:
            return Any
        if not dataclasses.is_dataclass(cls) and depth < len(parts) - 1:
            raise ValueError(f"unknown config key {'.'.join(parts)!r}: {'.'.join(parts[:depth + 1])!r} is a value, not a section")
    if dataclasses.is_dataclass(cls):
        raise ValueError(f"config key {'.'.join(parts)!r} is a section; set one of its fields: {', '.join(valid_keys(cls, '.'.join(parts) + '.'))}")
    return cls


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``data``, recursing into sections and coercing values."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or 'top level'!r}: expected a mapping, got {data!r}")
    if cls is UniSyncConfig:
        return UniSyncConfig.from_dict(data)
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys: {', '.join(valid_keys(cls, prefix))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value if value is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML-parsed ``value`` to type ``hint`` (int -> float, '1e-3' -> float, ...)."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if origin is not None:
        hint = origin
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(value, hint):
        return value
    raise ValueError(f"config key {key!r}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint, in declaration order."""
    resolved = typing.get_type_hints(cls)
    return {f.name: resolved[f.name] for f in dataclasses.fields(cls)}


def _single_key(mapping: dict[str, Any], key: str) -> str:
    if len(mapping) != 1:
        raise ValueError(f"config {key}: a single-pair property, but this joint config has {sorted(mapping)}; use config.pairs")
    return next(iter(mapping))


def _check_joint(config: TrainConfig) -> None:
    """``ValueError`` unless ``joint.pairs`` / ``joint.ratios`` / ``init.freeze`` are well-formed and fit ``model``."""
    joint = config.joint
    if joint.pairs is not None:
        if not joint.pairs or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p) for p in joint.pairs):
            raise ValueError(f"config joint.pairs: expected a non-empty list of [audio, visual] pairs such as [[mel, rgb], [hubert, 3dmm]], got {joint.pairs!r}")
        for audio, visual in joint.pairs:
            if audio not in config.model.audio or visual not in config.model.visual:
                raise ValueError(f"config joint.pairs: [{audio}, {visual}] needs both in the model; "
                                 f"model.audio has {sorted(config.model.audio)}, model.visual {sorted(config.model.visual)}")
        if len({tuple(p) for p in joint.pairs}) != len(joint.pairs):
            raise ValueError(f"config joint.pairs: a pair is listed twice in {joint.pairs!r}")
        used = {name for pair in joint.pairs for name in pair}
        unused = [name for name in [*config.model.audio, *config.model.visual] if name not in used]
        if unused and config.init.expert is None:
            raise ValueError(f"config joint.pairs: model head(s) {unused} are in no pair; list a pair for each, or drop them from model")
    if joint.ratios is not None:
        count = len(config.pairs)
        if len(joint.ratios) != count or any(not isinstance(r, (int, float)) or r <= 0 for r in joint.ratios):
            raise ValueError(f"config joint.ratios: expected {count} positive numbers (one per pair of {config.pairs}), got {joint.ratios!r}")
    if not all(isinstance(name, str) for name in config.init.freeze):
        raise ValueError(f"config init.freeze: expected module names such as [audio_unified, visual_unified], got {config.init.freeze!r}")
    if config.init.freeze and config.init.expert is None:
        raise ValueError("config init.freeze: freezing needs init.expert (freezing random weights trains nothing useful)")
