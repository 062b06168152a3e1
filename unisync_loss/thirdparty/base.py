"""What every third-party sync expert shares: its description and the scoring interface of UniSync.

A third-party expert is an ``nn.Module`` whose own state dict has exactly the keys of the
upstream checkpoint it reimplements, plus the methods :class:`~unisync_loss.model.UniSync` offers
for scoring: ``config.window``, ``embed_audio(x, rep)``, ``embed_visual(x, rep)``,
``has_heads(audio, visual)``, ``validate`` and either ``sync_prob(a, v)`` (cosine experts, usable
with :func:`unisync_loss.metrics.score_clip` unchanged) or ``distance(a, v)`` (Euclidean experts,
scored with :mod:`unisync_loss.thirdparty.lse`).

Visual windows follow the project's ``rgb`` contract: ``(B, 3, T, H, W)`` full face crops, RGB in
[0, 1] by default; ``embed_visual`` takes ``channel_order`` / ``value_range`` to accept other
conventions without an extra copy (each expert converts once to what its network was trained on).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from unisync_loss.representations import spec
from unisync_loss.thirdparty.mfcc import MFCC_PER_FRAME, NUM_CEPSTRA

Measure = Literal["cosine", "euclidean"]


@dataclass(frozen=True)
class ThirdPartyConfig:
    """Fixed description of a third-party architecture.

    ``architecture``: registry name (``"wav2lip_syncnet_color"``, ``"syncnet_v2"``); ``window``: T
    in video frames; ``audio`` / ``visual``: the representation names it scores (``"mel"``,
    ``"mfcc"``, ``"rgb"``); ``embed_dim``: embedding size; ``measure``: ``"cosine"`` (higher is
    in sync) or ``"euclidean"`` (lower is in sync); ``native_channel_order`` / ``native_range``:
    the pixel convention of the frames its network was trained on.
    """

    architecture: str
    window: int
    audio: str
    visual: str
    embed_dim: int
    measure: Measure
    native_channel_order: Literal["rgb", "bgr"]
    native_range: tuple[float, float]


class ThirdPartyExpert(nn.Module):
    """Base class: validation, representation dispatch and pixel conventions; subclasses add the networks.

    Subclasses set ``config`` (a class attribute :class:`ThirdPartyConfig`) and implement
    ``_audio_embedding(x)`` on a validated audio window, ``_visual_embedding(frames)`` on frames
    already in the native convention, and ``audio_clip(wave)`` (the whole clip's audio features).
    """

    config: ThirdPartyConfig

    def __init__(self) -> None:
        super().__init__()
        self.source: dict[str, str] = {}  # the checkpoint the weights came from (file name, SHA-256), kept when converting

    @property
    def measure(self) -> Measure:
        """``"cosine"`` or ``"euclidean"``."""
        return self.config.measure

    def has_heads(self, audio: str, visual: str) -> bool:
        """Whether this expert scores the pair ``(audio, visual)``."""
        return audio == self.config.audio and visual == self.config.visual

    def describe_heads(self) -> str:
        """e.g. ``"audio heads [mel], visual heads [rgb]"`` for error messages."""
        return f"audio heads [{self.config.audio}], visual heads [{self.config.visual}]"

    def validate(self, x: Tensor, representation: str, check_finite: bool | None = None) -> None:
        """``ValueError`` unless ``x`` is a batch of windows of ``representation`` this expert takes."""
        if representation not in (self.config.audio, self.config.visual):
            raise ValueError(f"{self.config.architecture} has no {representation!r} head; it has {self.describe_heads()}")
        if representation == "mfcc":
            _validate_mfcc(x, self.config.window, check_finite)
        else:
            representation_spec = spec(representation)
            representation_spec.validate(x, representation_spec.options(None), self.config.window, check_finite)

    def embed_audio(self, x: Tensor, representation: str, *, check_finite: bool | None = None, validate: bool = True) -> Tensor:
        """Audio embedding ``(B, embed_dim)`` of a batch of audio windows of ``representation``."""
        self._check_head(representation, self.config.audio, "audio")
        if validate:
            self.validate(x, representation, check_finite)
        return self._audio_embedding(x.to(self._dtype()))

    def embed_visual(
        self,
        x: Tensor,
        representation: str,
        *,
        channel_order: Literal["rgb", "bgr"] = "rgb",
        value_range: tuple[float, float] = (0.0, 1.0),
        check_finite: bool | None = None,
        validate: bool = True,
    ) -> Tensor:
        """Visual embedding ``(B, embed_dim)`` of full-face windows ``(B, 3, T, H, W)``.

        ``channel_order`` / ``value_range``: the convention of ``x`` (the project's default: RGB in
        [0, 1]); the frames are converted once to the expert's native convention.
        """
        self._check_head(representation, self.config.visual, "visual")
        if validate:  # value checks read [0, 1] frames (channel order changes no value)
            low, high = (float(v) for v in value_range)
            self.validate(x if (low, high) == (0.0, 1.0) else (x - low) / (high - low), representation, check_finite)
        return self._visual_embedding(x.to(self._dtype()), channel_order, value_range)

    def _check_head(self, representation: str, wanted: str, modality: str) -> None:
        if representation != wanted:
            raise ValueError(
                f"{self.config.architecture} takes {modality} {wanted!r}, got {representation!r} "
                f"(it has {self.describe_heads()})"
            )

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _native_pixels(self, frames: Tensor, channel_order: str, value_range: tuple[float, float]) -> Tensor:
        """Flip the channels and rescale the values of ``(B, 3, ...)`` frames to the native convention (only when needed)."""
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        if channel_order != self.config.native_channel_order:
            frames = frames.flip(1)
        low, high = (float(v) for v in value_range)
        native_low, native_high = self.config.native_range
        if (low, high) != (native_low, native_high):
            frames = (frames - low) * ((native_high - native_low) / (high - low)) + native_low
        return frames

    def _audio_embedding(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _visual_embedding(self, frames: Tensor, channel_order: str, value_range: tuple[float, float]) -> Tensor:
        raise NotImplementedError

    def audio_clip(self, wave: Tensor) -> Tensor:
        """The clip's audio features (the canonical clip tensor of ``config.audio``) from a 16 kHz wave ``(S,)``."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "ThirdPartyExpert":
        """Experts stay in eval mode (BatchNorm running statistics are never updated): ``train()`` is a no-op."""
        return super().train(False)


def _validate_mfcc(x: Tensor, window: int, check_finite: bool | None) -> None:
    """``ValueError`` unless ``x`` is ``(B, 1, 13, 4 T)`` float MFCC windows (syncnet_python's audio input)."""
    expected = (None, 1, NUM_CEPSTRA, MFCC_PER_FRAME * window)
    if not isinstance(x, Tensor):
        raise TypeError(f"mfcc: expected a tensor (B, 1, {NUM_CEPSTRA}, {MFCC_PER_FRAME * window}), got {type(x).__name__}")
    problem = None
    if x.ndim != 4 or any(size is not None and x.shape[axis] != size for axis, size in enumerate(expected)):
        problem = "wrong shape"
    elif x.shape[0] == 0:
        problem = "the batch is empty"
    elif not x.is_floating_point():
        problem = f"dtype must be floating point, got {x.dtype}"
    elif (x.device.type == "cpu" if check_finite is None else check_finite) and not bool(torch.isfinite(x).all()):
        problem = "the input contains NaN or Inf"
    if problem is not None:
        raise ValueError(
            f"mfcc: {problem}; expected (B, 1, {NUM_CEPSTRA}, {MFCC_PER_FRAME * window}) "
            f"({MFCC_PER_FRAME * window} MFCC columns at 100 Hz = {window} video frames), got {tuple(x.shape)} {x.dtype}"
        )
