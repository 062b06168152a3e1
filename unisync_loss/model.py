"""The UniSync dual-stream sync model (arXiv 2503.16357).

Visual stream: a representation-specific encoder ε1 per visual representation, adaptive average
pooling to ``(B, hidden, pooled_len)``, unified extraction layers ε2 shared by all visual
representations -> ``v'`` ``(B, embed_dim)``. Audio stream: ε3 per audio representation, the same
pooling, shared ε4 -> ``a'`` ``(B, embed_dim)``. ``p_sync = cos(ReLU(a'), ReLU(v'))`` in [0, 1].

The encoders normalise with GroupNorm. The embeddings themselves are standardised per dimension
with batch statistics while training (:class:`EmbeddingNorm`, ``embed_norm="batch"``): without
it the cosine of two ReLU vectors has a strong constant solution (p ≈ 0.46 for every pair, loss
stuck near ln 2, the "SyncNet trains badly" plateau) that a CPU-sized run never leaves. In eval
mode, as inside :class:`~unisync_loss.loss.UniSyncLoss`, the running statistics are used, so a
window's score never depends on the rest of the batch. Across processes the batch statistics
are all-reduced, so every rank normalises with the global batch and holds identical buffers.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from unisync_loss.representations import (
    EncoderInput,
    Modality,
    SequencePreprocess,
    check_batch_sizes,
    modality,
    spec,
)

EMBED_NORMS = ("batch", "none")
SYNC_EPS = 1e-6
"""Default epsilon of :func:`sync_prob` (keeps all-zero embeddings at p = 0 with finite gradients)."""


@dataclass
class UniSyncConfig:
    """Architecture of a UniSync model.

    ``audio`` / ``visual`` map representation names to their options (see
    ``unisync_loss.representations``), e.g. ``{"hubert": {"dim": 1024}}`` and
    ``{"landmarks": {"points": 68, "coords": 3, "mouth": list(range(48, 68))}}``; several
    representations per modality give several heads sharing ε2 / ε4. Missing options are filled
    with their defaults. ``window`` is T in video frames; ``hidden`` the encoder width,
    ``pooled_len`` the time steps after pooling, ``unified_layers`` the Conv1d blocks of ε2 / ε4,
    ``embed_dim`` the embedding size, ``embed_norm`` ``"batch"`` (standardise each embedding
    dimension, see :class:`EmbeddingNorm`) or ``"none"``.
    """

    audio: dict[str, dict[str, Any]]
    visual: dict[str, dict[str, Any]]
    window: int = 5
    hidden: int = 128
    embed_dim: int = 128
    pooled_len: int = 5
    unified_layers: int = 2
    embed_norm: str = "batch"

    def __post_init__(self) -> None:
        self.audio = _representation_options(self.audio, "audio")
        self.visual = _representation_options(self.visual, "visual")
        for field in ("window", "hidden", "embed_dim", "pooled_len", "unified_layers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UniSyncConfig.{field} must be a positive integer, got {value!r}")
        if self.embed_norm not in EMBED_NORMS:
            raise ValueError(f"UniSyncConfig.embed_norm must be one of {EMBED_NORMS}, got {self.embed_norm!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict; ``from_dict(to_dict())`` round-trips."""
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UniSyncConfig":
        """Build from a mapping of field names; ``ValueError`` for unknown or missing fields."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"UniSyncConfig: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(fields))}")
        missing = [name for name in ("audio", "visual") if name not in data]
        if missing:
            raise ValueError(f"UniSyncConfig: field(s) {', '.join(missing)} required (representation name -> options)")
        return cls(**copy.deepcopy(dict(data)))


def _representation_options(given: Any, wanted: Modality) -> dict[str, dict[str, Any]]:
    """Check names and modality, fill option defaults: ``{name: options}`` (options may be None)."""
    if not isinstance(given, Mapping) or not given:
        raise ValueError(f"UniSyncConfig.{wanted} must map at least one {wanted} representation name to its options, got {given!r}")
    resolved = {}
    for name, options in given.items():
        if modality(name) != wanted:
            raise ValueError(f"UniSyncConfig.{wanted}: {name!r} is a {modality(name)} representation")
        resolved[name] = spec(name).options(options)
    return resolved


def sync_prob(audio_emb: Tensor, visual_emb: Tensor, eps: float = SYNC_EPS) -> Tensor:
    """``cos(ReLU(a), ReLU(v))`` in float32: ``(B, E), (B, E) -> (B,)`` in [0, 1].

    Each squared norm gets ``eps**2`` added, so an all-zero embedding gives p = 0 with finite
    gradients. Computed in float32 whatever the embedding dtype (bf16 under autocast); the
    elementwise products and sums used here are not lowered by autocast.
    """
    audio = F.relu(audio_emb.float())
    visual = F.relu(visual_emb.float())
    dot = (audio * visual).sum(dim=-1)
    norms = ((audio.square().sum(dim=-1) + eps**2) * (visual.square().sum(dim=-1) + eps**2)).sqrt()
    return (dot / norms).clamp(0.0, 1.0)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def _conv1d_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv1d (k3, same length) + GroupNorm + ReLU: ``(B, in, L) -> (B, out, L)``."""
    return nn.Sequential(nn.Conv1d(in_channels, out_channels, 3, padding=1), _norm(out_channels), nn.ReLU())


def _conv2d_block(in_channels: int, out_channels: int, stride: tuple[int, int]) -> nn.Sequential:
    """Conv2d (k3, pad 1, ``stride``) + GroupNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), _norm(out_channels), nn.ReLU())


def _widths(hidden: int) -> list[int]:
    """Channel widths of the four 2D conv stages: a ramp up to ``hidden``."""
    return [max(hidden // 4, 8), max(hidden // 2, 8), hidden, hidden]


class SequenceEncoder(nn.Module):
    """ε for sequences (hubert, 3dmm, landmarks): ``(B, C, L) -> (B, hidden, L)`` with two Conv1d blocks."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(_conv1d_block(channels, hidden), _conv1d_block(hidden, hidden))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class FrameEncoder(nn.Module):
    """ε1 for image frames (rgb, parsing): ``(B, C, T, h, w) -> (B, hidden, T)``.

    Each frame goes through four stride-2 Conv2d blocks (frames folded into the batch), is
    averaged over space, then one temporal Conv1d block mixes neighbouring frames. With
    ``channels_last`` the frames are folded channels-last (a view when ``x``'s memory is ordered
    ``(B, T, h, w, C)``, as parsing's preprocessor leaves it), the layout in which the 2-D
    convolutions over many input channels run faster on CPU.
    """

    def __init__(self, channels: int, hidden: int, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        widths = _widths(hidden)
        stages = [_conv2d_block(c_in, c_out, (2, 2)) for c_in, c_out in zip([channels] + widths[:-1], widths)]
        self.spatial = nn.Sequential(*stages)
        self.temporal = _conv1d_block(widths[-1], hidden)

    def forward(self, x: Tensor) -> Tensor:
        frames = x.shape[2]
        if self.channels_last:
            images = rearrange(x, "b c t h w -> (b t) h w c").permute(0, 3, 1, 2)
        else:
            images = rearrange(x, "b c t h w -> (b t) c h w")
        features = self.spatial(images).mean(dim=(-2, -1))
        return self.temporal(rearrange(features, "(b t) c -> b c t", t=frames))


class SpectrogramEncoder(nn.Module):
    """ε3 for the log-mel: ``(B, 1, F, S) -> (B, hidden, S)``.

    Four Conv2d blocks halve the frequency axis (time kept), then frequency is folded into the
    channels and a Conv1d block collapses it.
    """

    def __init__(self, height: int, hidden: int) -> None:
        super().__init__()
        widths = _widths(hidden)
        stages = [_conv2d_block(c_in, c_out, (2, 1)) for c_in, c_out in zip([1] + widths[:-1], widths)]
        self.spectral = nn.Sequential(*stages)
        for _ in stages:
            height = (height + 1) // 2
        self.collapse = _conv1d_block(widths[-1] * height, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.collapse(rearrange(self.spectral(x), "b c f s -> b (c f) s"))


def _encoder(layout: EncoderInput, hidden: int) -> nn.Module:
    if layout.layout == "sequence":
        return SequenceEncoder(layout.channels, hidden)
    if layout.layout == "frames":
        return FrameEncoder(layout.channels, hidden, layout.channels_last)
    return SpectrogramEncoder(layout.height, hidden)


class RepresentationHead(nn.Module):
    """Preprocessing + representation-specific encoder (ε1 or ε3): input -> ``(B, hidden, t)``."""

    def __init__(self, name: str, options: Mapping[str, Any], window: int, hidden: int) -> None:
        super().__init__()
        representation = spec(name)
        self.preprocess = representation.preprocessor(options, window)
        self.encoder = _encoder(representation.encoder_input(options, window), hidden)

    def forward(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        return self.encoder(self.preprocess(x).to(dtype))


class EmbeddingNorm(nn.Module):
    """Standardise each embedding dimension: ``(B, E) -> (B, E)``, no learned scale or shift.

    Training mode: mean and variance over the batch, all-reduced over processes when
    ``torch.distributed`` is initialised (every rank then normalises with the statistics of the
    global batch, differentiably), and running averages updated with ``momentum``. Eval mode:
    the running averages, so each window is scored on its own.
    """

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return (x - self.running_mean.to(x.dtype)) * torch.rsqrt(self.running_var.to(x.dtype) + self.eps)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if x.shape[0] < 2 and not distributed:
            raise ValueError(f"EmbeddingNorm: training needs at least 2 windows per batch to standardise embeddings, "
                             f"got a batch of {x.shape[0]}; use a larger batch or model.eval()")
        x32 = x.float()
        moments = torch.stack((x32.sum(dim=0), x32.square().sum(dim=0)))
        count = torch.tensor(float(x.shape[0]), device=x.device)
        if distributed:
            from torch.distributed.nn.functional import all_reduce  # differentiable; needs an initialised group

            moments, count = all_reduce(moments), all_reduce(count)
        mean = moments[0] / count
        var = (moments[1] / count - mean.square()).clamp_min(0.0)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1.0), self.momentum)
        return ((x32 - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)


class UnifiedExtractor(nn.Module):
    """Pooling + shared extraction layers (ε2 or ε4): ``(B, hidden, t) -> (B, embed_dim)``."""

    def __init__(self, hidden: int, pooled_len: int, layers: int, embed_dim: int, embed_norm: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool1d(pooled_len)
        self.layers = nn.Sequential(*[_conv1d_block(hidden, hidden) for _ in range(layers)])
        self.project = nn.Linear(hidden * pooled_len, embed_dim)
        self.norm = EmbeddingNorm(embed_dim) if embed_norm == "batch" else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.extract(self.pool(x))

    def extract(self, pooled: Tensor) -> Tensor:
        """The shared layers after pooling: ``(B, hidden, pooled_len) -> (B, embed_dim)``."""
        return self.norm(self.project(self.layers(pooled).flatten(1)))


def state_shapes(config: UniSyncConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor of ``UniSync(config).state_dict()``, built on the ``meta`` device (nothing allocated).

    Lets a loader compare an untrusted config with the tensors a file really holds before
    allocating anything the config asks for.
    """
    with torch.device("meta"):
        model = UniSync(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


class UniSync(nn.Module):
    """UniSync sync expert with one or more heads per modality.

    ``visual_heads`` (ε1) and ``audio_heads`` (ε3) hold one :class:`RepresentationHead` per
    representation of the config; ``visual_unified`` (ε2) and ``audio_unified`` (ε4) are shared.
    """

    def __init__(self, config: UniSyncConfig) -> None:
        super().__init__()
        self.config = config
        heads = {
            kind: nn.ModuleDict({
                name: RepresentationHead(name, options, config.window, config.hidden)
                for name, options in getattr(config, kind).items()
            })
            for kind in ("audio", "visual")
        }
        self.audio_heads = heads["audio"]
        self.visual_heads = heads["visual"]
        self.audio_unified, self.visual_unified = (
            UnifiedExtractor(config.hidden, config.pooled_len, config.unified_layers, config.embed_dim, config.embed_norm)
            for _ in range(2)
        )

    def validate(self, x: Tensor, representation: str, check_finite: bool | None = None) -> None:
        """``ValueError`` unless ``x`` fits this model's contract for ``representation`` (see representations)."""
        options = self._options(representation)
        preprocess = self._head(representation).preprocess
        statistics = (preprocess.standardize.mean, preprocess.standardize.std) if isinstance(preprocess, SequencePreprocess) else None
        spec(representation).validate(x, options, self.config.window, check_finite, statistics)

    def set_statistics(self, representation: str, mean: Tensor, std: Tensor) -> None:
        """Set the standardisation statistics of ``hubert`` / ``3dmm`` (``(D,)``) or ``rgb`` (``(3,)``)."""
        preprocess = self._head(representation).preprocess
        if not hasattr(preprocess, "set_statistics"):
            raise ValueError(f"{representation}: has no standardisation statistics (only hubert, 3dmm and rgb do)")
        with torch.no_grad():
            preprocess.set_statistics(mean, std)

    def embed_audio(self, x: Tensor, representation: str, *, check_finite: bool | None = None, validate: bool = True) -> Tensor:
        """Audio embedding ``a'`` ``(B, embed_dim)`` of an audio window (validated unless ``validate=False``)."""
        return self._embed(x, representation, "audio", check_finite, validate)

    def embed_visual(self, x: Tensor, representation: str, *, check_finite: bool | None = None, validate: bool = True) -> Tensor:
        """Visual embedding ``v'`` ``(B, embed_dim)`` of a visual window (validated unless ``validate=False``)."""
        return self._embed(x, representation, "visual", check_finite, validate)

    def sync_prob(self, audio_emb: Tensor, visual_emb: Tensor) -> Tensor:
        """``cos(ReLU(a'), ReLU(v'))``: ``(B, E), (B, E) -> (B,)`` float32 in [0, 1]."""
        return sync_prob(audio_emb, visual_emb)

    def forward(
        self,
        audio: Tensor | Sequence[Tensor],
        visual: Tensor | Sequence[Tensor],
        audio_rep: str | Sequence[str],
        visual_rep: str | Sequence[str],
        *,
        check_finite: bool | None = None,
    ) -> Tensor:
        """p_sync ``(B,)`` of matching audio and visual windows (shapes: see ``unisync_loss.representations``).

        A joint batch of several pairs passes lists: ``audio[i]`` (representation ``audio_rep[i]``)
        pairs with ``visual[i]`` (``visual_rep[i]``); the result concatenates the groups' p_sync
        ``(sum B_i,)``, and every group's embedding goes through ε2 / ε4 in one batch (see
        :meth:`embed_groups`), so all representations share one embedding standardisation.
        """
        if not isinstance(audio_rep, str):
            return self._joint_forward(audio, visual, audio_rep, visual_rep, check_finite)
        self.validate(audio, audio_rep, check_finite)
        self.validate(visual, visual_rep, check_finite)
        check_batch_sizes(audio, visual, audio_rep, visual_rep)
        audio_emb = self.embed_audio(audio, audio_rep, validate=False)
        visual_emb = self.embed_visual(visual, visual_rep, validate=False)
        return self.sync_prob(audio_emb, visual_emb)

    def embed_groups(
        self, windows: Sequence[Tensor], representations: Sequence[str], *, check_finite: bool | None = None
    ) -> list[Tensor]:
        """Embeddings of windows of several representations of one modality, through ε2 / ε4 together.

        ``windows[i]`` ``(B_i, ...)`` of representation ``representations[i]`` goes through its own
        head (ε1 / ε3) and the pooling; the pooled ``(B_i, hidden, pooled_len)`` of all groups are
        concatenated and pass the shared layers as one batch (one set of embedding statistics while
        training), then are split again: returns ``[(B_i, embed_dim), ...]``. A single group gives
        exactly :meth:`embed_audio` / :meth:`embed_visual`.
        """
        if len(windows) != len(representations) or not windows:
            raise ValueError(f"embed_groups: need one representation per window group and at least one group, "
                             f"got {len(windows)} groups and {len(representations)} representations")
        kinds = {modality(name) for name in representations}
        if len(kinds) != 1:
            raise ValueError(f"embed_groups: all groups must be of one modality, got {list(representations)}")
        unified = self.audio_unified if kinds == {"audio"} else self.visual_unified
        dtype = unified.project.weight.dtype
        own_dtype = dtype != torch.float32 and torch.is_autocast_enabled(windows[0].device.type)
        with torch.autocast(windows[0].device.type, enabled=False) if own_dtype else contextlib.nullcontext():
            pooled = []
            for x, name in zip(windows, representations):
                self.validate(x, name, check_finite)
                pooled.append(unified.pool(self._head(name)(x, dtype)))
            embeddings = unified.extract(torch.cat(pooled) if len(pooled) > 1 else pooled[0])
        return list(embeddings.split([x.shape[0] for x in windows]))

    def _joint_forward(
        self,
        audio: Sequence[Tensor],
        visual: Sequence[Tensor],
        audio_reps: Sequence[str],
        visual_reps: Sequence[str],
        check_finite: bool | None,
    ) -> Tensor:
        """p_sync of a joint batch: groups of (audio, visual) windows, one pair of representations each (see forward)."""
        if isinstance(visual_reps, str) or not len(audio) == len(visual) == len(audio_reps) == len(visual_reps):
            raise ValueError(f"UniSync: a joint batch needs lists of equal length for audio, visual, audio_rep and visual_rep, "
                             f"got {len(audio)}, {len(visual)}, {audio_reps!r}, {visual_reps!r}")
        for a, v, a_rep, v_rep in zip(audio, visual, audio_reps, visual_reps):
            check_batch_sizes(a, v, a_rep, v_rep)
        audio_emb = self.embed_groups(audio, audio_reps, check_finite=check_finite)
        visual_emb = self.embed_groups(visual, visual_reps, check_finite=check_finite)
        return self.sync_prob(torch.cat(audio_emb), torch.cat(visual_emb))

    def has_heads(self, audio: str, visual: str) -> bool:
        """Whether this model can score the pair ``(audio, visual)``."""
        return audio in self.audio_heads and visual in self.visual_heads

    def describe_heads(self) -> str:
        """e.g. ``"audio heads [mel, hubert], visual heads [landmarks]"`` for error messages."""
        return f"audio heads [{', '.join(self.audio_heads)}], visual heads [{', '.join(self.visual_heads)}]"

    def _embed(self, x: Tensor, representation: str, wanted: Modality, check_finite: bool | None, validate: bool) -> Tensor:
        if modality(representation) != wanted:
            raise ValueError(f"{representation!r} is a {modality(representation)} representation, not {wanted}")
        if validate:
            self.validate(x, representation, check_finite)
        unified = self.audio_unified if wanted == "audio" else self.visual_unified
        dtype = unified.project.weight.dtype
        # Weights in float16 / bfloat16 (``.half()``) under an autocast of another dtype would mix dtypes
        # in GroupNorm: such a model runs in its own dtype, outside the autocast.
        own_dtype = dtype != torch.float32 and torch.is_autocast_enabled(x.device.type)
        with torch.autocast(x.device.type, enabled=False) if own_dtype else contextlib.nullcontext():
            return unified(self._head(representation)(x, dtype))

    def _head(self, representation: str) -> RepresentationHead:
        heads = self.audio_heads if modality(representation) == "audio" else self.visual_heads
        if representation not in heads:
            raise ValueError(f"this UniSync model has no {representation!r} head; it has {self.describe_heads()}")
        return heads[representation]

    def _options(self, representation: str) -> dict[str, Any]:
        self._head(representation)
        return getattr(self.config, modality(representation))[representation]
