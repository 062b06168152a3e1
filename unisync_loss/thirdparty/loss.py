"""``ThirdPartySyncLoss``: Wav2Lip's or SyncNet v2's expert as a loss, called like ``UniSyncLoss`` (A/B comparisons).

>>> wav2lip = ThirdPartySyncLoss("wav2lip:checkpoints/lipsync_expert.pth", channel_order="bgr")
>>> loss = wav2lip(mel_window, generated_frames)        # (B, 1, 80, 16), (B, 3, 5, H, W) -> scalar
>>> unisync = UniSyncLoss("mel", "rgb", weights="mel_rgb.safetensors", channel_order="bgr")
>>> loss = unisync(mel_window, generated_frames)        # same tensors, same call

As in :class:`~unisync_loss.loss.UniSyncLoss`, the expert is loaded once, held outside the module
tree (never in a parent's ``parameters()``, ``state_dict()`` or optimizer), always in eval mode,
and follows ``.to(device / dtype)``; a call does no file I/O and no host sync.
"""
from __future__ import annotations

import copy
import os
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from unisync_loss.experts import ExpertFileError
from unisync_loss.representations import check_batch_sizes
from unisync_loss.thirdparty.base import ThirdPartyExpert
from unisync_loss.thirdparty.checkpoints import load_sync_expert

Reduction = Literal["mean", "sum", "none"]
KINDS = {"cosine": ("log", "linear"), "euclidean": ("distance",)}
"""Loss kinds each measure allows; the first is the default."""


class ThirdPartySyncLoss(nn.Module):
    """Lip-sync loss from a frozen third-party expert.

    Args:
        expert: a spec for :func:`~unisync_loss.thirdparty.load_sync_expert` (``"wav2lip:PATH"``,
            ``"syncnet_v2:PATH"``, a converted ``.safetensors``) or a :class:`ThirdPartyExpert`
            instance (copied and frozen).
        reduction: ``"mean"`` / ``"sum"`` over the batch, or ``"none"`` for the ``(B,)`` losses.
        kind: cosine experts (Wav2Lip's): ``"log"`` = ``-log(max(cos, eps))``, exactly Wav2Lip's
            ``get_sync_loss`` (BCE against 1; default), or ``"linear"`` = ``1 - cos``; Euclidean
            experts (SyncNet v2): ``"distance"``, the Euclidean distance of the embeddings
            (syncnet_python's per-window LSE-D at offset 0; default).
        channel_order, value_range: convention of the frames given (Wav2Lip's: ``"bgr"``, ``(0, 1)``).
        check_finite: NaN/Inf checks: ``None`` only for CPU tensors, ``True`` always, ``False`` never.
        eps: floor of the cosine inside the log.

    Inputs: Wav2Lip's expert: mel ``(B, 1, 80, 16)`` and frames ``(B, 3, 5, H, W)`` (full faces;
    the lower half is used); SyncNet v2: MFCC ``(B, 1, 13, 20)``
    (:func:`~unisync_loss.thirdparty.cut_mfcc_windows`) and frames ``(B, 3, 5, H, W)``.
    """

    def __init__(
        self,
        expert: str | os.PathLike | ThirdPartyExpert,
        *,
        reduction: Reduction = "mean",
        kind: str | None = None,
        channel_order: Literal["rgb", "bgr"] = "rgb",
        value_range: tuple[float, float] = (0.0, 1.0),
        check_finite: bool | None = None,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {tuple(value_range)!r}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
        frozen = _frozen_expert(expert)
        allowed = KINDS[frozen.measure]
        kind = allowed[0] if kind is None else kind
        if kind not in allowed:
            raise ValueError(f"kind must be one of {allowed} for {frozen.config.architecture} ({frozen.measure} expert), got {kind!r}")
        self.reduction = reduction
        self.kind = kind
        self.channel_order = channel_order
        self.value_range = (low, high)
        self.check_finite = check_finite
        self.eps = eps
        self.source = str(expert) if not isinstance(expert, ThirdPartyExpert) else "a given expert instance"
        object.__setattr__(self, "_expert", frozen)

    @property
    def expert(self) -> ThirdPartyExpert:
        """The frozen expert (not a registered submodule)."""
        return self._expert

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        """Loss of matching windows: scalar for ``"mean"`` / ``"sum"``, ``(B,)`` for ``"none"`` (float32)."""
        audio_emb, visual_emb = self._embed_pair(audio, visual)
        if self.kind == "distance":
            losses = self._expert.distance(audio_emb, visual_emb)
        else:
            cosine = self._expert.sync_prob(audio_emb, visual_emb)
            losses = -torch.log(cosine.clamp_min(self.eps)) if self.kind == "log" else 1.0 - cosine
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses

    def sync_prob(self, audio: Tensor, visual: Tensor) -> Tensor:
        """Cosine ``(B,)`` in [0, 1] of matching windows (cosine experts only)."""
        if self._expert.measure != "cosine":
            raise ValueError(f"{self._expert.config.architecture} is a {self._expert.measure} expert: use distance()")
        return self._expert.sync_prob(*self._embed_pair(audio, visual))

    def distance(self, audio: Tensor, visual: Tensor) -> Tensor:
        """Euclidean distance ``(B,)`` of matching windows (Euclidean experts only; lower is in sync)."""
        if self._expert.measure != "euclidean":
            raise ValueError(f"{self._expert.config.architecture} is a {self._expert.measure} expert: use sync_prob()")
        return self._expert.distance(*self._embed_pair(audio, visual))

    def embed_audio(self, audio: Tensor) -> Tensor:
        """Expert audio embedding ``(B, embed_dim)``."""
        self._validate(audio, self._expert.config.audio)
        return self._expert.embed_audio(audio, self._expert.config.audio, validate=False)

    def embed_visual(self, visual: Tensor) -> Tensor:
        """Expert visual embedding ``(B, embed_dim)`` of frames in this loss's ``channel_order`` / ``value_range``."""
        self._validate(visual, self._expert.config.visual)
        return self._expert.embed_visual(visual, self._expert.config.visual, channel_order=self.channel_order,
                                         value_range=self.value_range, validate=False)

    def _embed_pair(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        config = self._expert.config
        self._validate(audio, config.audio)
        self._validate(visual, config.visual)
        check_batch_sizes(audio, visual, config.audio, config.visual)
        audio_emb = self._expert.embed_audio(audio, config.audio, validate=False)
        visual_emb = self._expert.embed_visual(visual, config.visual, channel_order=self.channel_order,
                                               value_range=self.value_range, validate=False)
        return audio_emb, visual_emb

    def _validate(self, x: Tensor, representation: str) -> None:
        self._expert.validate(x, representation, self.check_finite)
        expert_device = next(self._expert.parameters()).device
        if x.device != expert_device:
            raise ValueError(
                f"{representation}: input on {x.device} but the expert is on {expert_device}; move the loss with .to(device)"
            )

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "ThirdPartySyncLoss":
        """Apply ``.to()`` / ``.cuda()`` / ``.half()`` / ... to the held expert as well."""
        super()._apply(fn, recurse)
        self._expert._apply(fn, recurse)
        return self

    def extra_repr(self) -> str:
        return (f"expert={self._expert.config.architecture}, kind={self.kind!r}, reduction={self.reduction!r}, "
                f"source={self.source}")


def _frozen_expert(expert: str | os.PathLike | ThirdPartyExpert) -> ThirdPartyExpert:
    """A frozen, eval-mode copy of a given expert, or the expert a spec names (a third-party one)."""
    if isinstance(expert, ThirdPartyExpert):
        return copy.deepcopy(expert).eval().requires_grad_(False)
    loaded = load_sync_expert(expert)
    if not isinstance(loaded, ThirdPartyExpert):
        raise ExpertFileError(f"{expert}: a UniSync expert; use UniSyncLoss for it (ThirdPartySyncLoss takes wav2lip:PATH or syncnet_v2:PATH)")
    return loaded
