"""``UniSyncLoss``: a frozen UniSync expert as a differentiable lip-sync loss for generator training.

>>> sync_loss = UniSyncLoss("hubert", "3dmm", weights="path/to/expert.safetensors")
>>> loss = sync_loss(hubert_window, generated_coeffs)   # (B, 2T, D), (B, T, D) -> scalar

The expert is loaded once, held outside the module tree (it never shows up in a parent's
``parameters()``, ``state_dict()`` or optimizer), stays in eval mode whatever ``train()`` a parent
calls, and follows ``.to(device / dtype)``, ``.cuda()``, ``.half()``.
"""
from __future__ import annotations

import copy
import os
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from unisync_loss.experts import ExpertFileError, load_expert, resolve_expert, trained_pairs
from unisync_loss.model import UniSync
from unisync_loss.representations import (
    AUDIO_REPRESENTATIONS,
    EXPERT_LANDMARK_CONVENTION,
    LANDMARK_CONVENTIONS,
    USER_LANDMARK_CONVENTION,
    VISUAL_REPRESENTATIONS,
    canonical_rgb,
    check_batch_sizes,
    flip_landmark_convention,
    modality,
)

Reduction = Literal["mean", "sum", "none"]
LossKind = Literal["log", "linear"]


class UniSyncLoss(nn.Module):
    """Lip-sync loss ``-log p_sync`` (Wav2Lip's BCE against 1) or ``1 - p_sync`` from a frozen expert.

    Args:
        audio: audio representation, ``"mel"`` ``(B, 1, 80, mel_steps(T))`` or ``"hubert"`` ``(B, 2T, D)``.
        visual: visual representation, ``"rgb"`` ``(B, 3, T, H, W)``, ``"parsing"`` ``(B, K, T, H, W)``
            probabilities or ``(B, T, H, W)`` labels, ``"landmarks"`` ``(B, T, N, C)``, ``"3dmm"`` ``(B, T, D)``.
        weights: ``None`` (the expert exported to the cache, see ``unisync_loss.experts.resolve_expert``),
            ``"procedural"`` (the bundled procedural-corpus expert), a path to an expert file, or an
            already-built :class:`UniSync` (copied and frozen; later changes to it do not reach the loss;
            handy for tests and pretraining evaluation).
        reduction: ``"mean"`` / ``"sum"`` over the batch, or ``"none"`` for the ``(B,)`` losses.
        kind: ``"log"``: ``-log(max(p_sync, eps))``; ``"linear"``: ``1 - p_sync``.
        channel_order: ``"rgb"`` or ``"bgr"`` for rgb frames (Wav2Lip's frames are BGR).
        value_range: ``(low, high)`` of rgb frame values, e.g. ``(0, 255)`` or ``(-1, 1)``.
        landmark_convention: ``"y_down"`` (image coordinates, as face detectors give; default) or
            ``"y_up"`` (model coordinates, as the procedural corpus): landmarks are turned to the
            convention recorded in the expert when the two differ.
        check_finite: value checks (NaN/Inf, value ranges, degenerate landmark windows, see
            ``unisync_loss.representations``): ``None`` only for CPU tensors (no device sync),
            ``True`` always, ``False`` never. Shape checks always run.
        eps: floor of p_sync inside the log (bounds the loss by ``-log(eps)``).
        allow_untrained_pair: a joint expert serves the pairs it was trained on (its header's
            ``pairs``); a combination of its heads it never trained raises ``ExpertFileError``
            unless this is ``True`` (the pair then goes through the shared space untested: measure
            it first, see the README's "Joint pretraining").

    Raises ``ExpertFileError`` when no usable expert is found or it lacks a head for the pair, and
    ``TypeError`` / ``ValueError`` naming the argument for a bad one. The loss may be built under
    ``torch.inference_mode()`` and still be used for training (the expert's tensors are made outside it).
    """

    def __init__(
        self,
        audio: str,
        visual: str,
        weights: str | os.PathLike | UniSync | None = None,
        *,
        reduction: Reduction = "mean",
        kind: LossKind = "log",
        channel_order: Literal["rgb", "bgr"] = "rgb",
        value_range: tuple[float, float] = (0.0, 1.0),
        landmark_convention: Literal["y_down", "y_up"] = USER_LANDMARK_CONVENTION,
        check_finite: bool | None = None,
        eps: float = 1e-7,
        allow_untrained_pair: bool = False,
    ) -> None:
        super().__init__()
        if modality(audio) != "audio" or modality(visual) != "visual":
            raise ValueError(f"UniSyncLoss(audio, visual): audio must be one of {AUDIO_REPRESENTATIONS} and visual one of "
                             f"{VISUAL_REPRESENTATIONS}, got audio={audio!r}, visual={visual!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if kind not in ("log", "linear"):
            raise ValueError(f"kind must be 'log' or 'linear', got {kind!r}")
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        low, high = _value_range(value_range)
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be None, True or False, got {check_finite!r}")
        if landmark_convention not in LANDMARK_CONVENTIONS:
            raise ValueError(f"landmark_convention must be one of {LANDMARK_CONVENTIONS}, got {landmark_convention!r}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
        self.audio = audio
        self.visual = visual
        self.reduction = reduction
        self.kind = kind
        self.channel_order = channel_order
        self.value_range = (low, high)
        self.check_finite = check_finite
        self.eps = eps
        with torch.inference_mode(False):  # trainable graphs need normal (not inference) tensors
            expert, self.source = _frozen_expert(audio, visual, weights, allow_untrained_pair)
        object.__setattr__(self, "_expert", expert)
        expert_convention = expert.config.visual.get("landmarks", {}).get("convention", EXPERT_LANDMARK_CONVENTION)
        self.flip_landmarks = visual == "landmarks" and landmark_convention != expert_convention

    @property
    def expert(self) -> UniSync:
        """The frozen expert (not a registered submodule)."""
        return self._expert

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        """Loss of matching windows: scalar for ``"mean"`` / ``"sum"``, ``(B,)`` for ``"none"`` (float32)."""
        p_sync = self.sync_prob(audio, visual)
        losses = -torch.log(p_sync.clamp_min(self.eps)) if self.kind == "log" else 1.0 - p_sync
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses

    def sync_prob(self, audio: Tensor, visual: Tensor) -> Tensor:
        """p_sync ``(B,)`` float32 in [0, 1] of matching audio and visual windows."""
        self._validate(audio, self.audio)
        visual = self._checked_visual(visual)
        check_batch_sizes(audio, visual, self.audio, self.visual)
        audio_emb = self._expert.embed_audio(audio, self.audio, validate=False)
        visual_emb = self._expert.embed_visual(visual, self.visual, validate=False)
        return self._expert.sync_prob(audio_emb, visual_emb)

    def embed_audio(self, audio: Tensor) -> Tensor:
        """Expert audio embedding ``a'`` ``(B, embed_dim)`` (before the ReLU of p_sync)."""
        self._validate(audio, self.audio)
        return self._expert.embed_audio(audio, self.audio, validate=False)

    def embed_visual(self, visual: Tensor) -> Tensor:
        """Expert visual embedding ``v'`` ``(B, embed_dim)`` (before the ReLU of p_sync)."""
        return self._expert.embed_visual(self._checked_visual(visual), self.visual, validate=False)

    def _validate(self, x: Tensor, representation: str) -> None:
        expert_device = self._expert.audio_unified.project.weight.device
        if isinstance(x, Tensor) and x.device != expert_device:
            raise ValueError(
                f"{representation}: input on {x.device} but the expert is on {expert_device}; "
                "move the loss with .to(device)"
            )
        self._expert.validate(x, representation, self.check_finite)

    def _checked_visual(self, visual: Tensor) -> Tensor:
        """The visual input validated; rgb first brought to RGB in [0, 1] (value checks then see the contract's range)."""
        if self.visual == "rgb" and isinstance(visual, Tensor) and visual.dim() == 5:
            visual = canonical_rgb(visual, self.channel_order, self.value_range)
        self._validate(visual, self.visual)
        if self.flip_landmarks:
            return flip_landmark_convention(visual)
        return visual

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> "UniSyncLoss":
        """Apply ``.to()`` / ``.cuda()`` / ``.half()`` / ... to the held expert as well."""
        super()._apply(fn, recurse)
        self._expert._apply(fn, recurse)
        return self

    def extra_repr(self) -> str:
        return (
            f"audio={self.audio!r}, visual={self.visual!r}, kind={self.kind!r}, reduction={self.reduction!r}, "
            f"expert={self.source}"
        )


def _value_range(value_range: object) -> tuple[float, float]:
    """``(low, high)`` as floats with ``high > low``; ``TypeError`` / ``ValueError`` naming ``value_range``."""
    try:
        low, high = (float(v) for v in value_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(
            f"value_range must be a (low, high) pair of numbers such as (0, 255) or (-1, 1), got {value_range!r}"
        ) from None
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {tuple(value_range)!r}")  # type: ignore[arg-type]
    return low, high


def _frozen_expert(
    audio: str, visual: str, weights: str | os.PathLike | UniSync | None, allow_untrained_pair: bool
) -> tuple[UniSync, str]:
    """The expert in eval mode with frozen parameters, and a description of where it came from."""
    if weights is not None and not isinstance(weights, (str, os.PathLike, UniSync)):
        hint = " (a state_dict? save the model with unisync_loss.experts.save_expert and pass the file)" if isinstance(weights, dict) else ""
        raise TypeError(
            f"weights must be None, 'procedural', a path to an expert .safetensors file or a UniSync model, "
            f"got {type(weights).__module__}.{type(weights).__qualname__}{hint}"
        )
    if isinstance(weights, UniSync):
        expert, source = copy.deepcopy(weights).eval().requires_grad_(False), "a given UniSync instance"
        if not expert.has_heads(audio, visual):
            raise ValueError(f"the given UniSync has {expert.describe_heads()}; it cannot score ({audio}, {visual})")
        _check_trained(expert, audio, visual, allow_untrained_pair, source)
        return expert, source
    path = resolve_expert(audio, visual, weights)
    expert = load_expert(path)
    if not expert.has_heads(audio, visual):
        raise ExpertFileError(f"{path}: the expert has {expert.describe_heads()}; it cannot score ({audio}, {visual})")
    _check_trained(expert, audio, visual, allow_untrained_pair, str(path))
    return expert, str(path)


def _check_trained(expert: UniSync, audio: str, visual: str, allowed: bool, source: str) -> None:
    """``ExpertFileError`` when a loaded expert's header says it never trained ``(audio, visual)`` and that is not allowed."""
    header = getattr(expert, "expert_header", None)
    if header is None or allowed:
        return
    pairs = trained_pairs(header)
    if (audio, visual) not in pairs:
        raise ExpertFileError(
            f"{source}: the expert has heads for {audio} and {visual} but was trained on the pairs "
            f"{', '.join(f'{a} x {v}' for a, v in pairs)}, never on {audio} x {visual}; pass "
            "allow_untrained_pair=True to score this pair through the shared space anyway (measure it first)"
        )
