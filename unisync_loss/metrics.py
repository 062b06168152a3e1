"""Sync metrics: the AVST/VocaLiST sync-accuracy protocol and the LSE-D / LSE-C analogues.

Sign convention (used everywhere here): offset ``o`` pairs the visual window starting at video
frame ``j`` with the audio window starting at frame ``j + o``. ``o > 0`` means the audio that
matches the picture starts later: audio lags video. A clip in sync has true offset 0. (syncnet_python
reports ``15 - argmin`` over its padded distance profile, i.e. the opposite sign.)

The central object is the offset probability matrix ``(Wv, 2M + 1)``: ``p_sync`` of every visual
window against the audio windows at offsets ``-M .. +M`` (``M = max_offset``, 15 by default),
NaN where the audio candidate falls outside the clip (masked, never zero-padded).

Functional forms: :func:`offset_probabilities`, :func:`sync_accuracy`, :func:`clip_sync`,
:func:`score_clip` (a model and one clip's canonical tensors -> all of the above).
Module form: :class:`SyncAccuracy` (update per clip, ``compute()`` averages over clips).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from unisync_loss.model import UniSync, sync_prob
from unisync_loss.windows import cut_windows, num_valid_windows, time_length, window_count

DEFAULT_MAX_OFFSET = 15
"""Offsets -15 .. +15 video frames (31 candidates), as in AVST / VocaLiST and syncnet_python."""


class SyncAccuracyResult(NamedTuple):
    """Per-clip result of :func:`sync_accuracy`.

    ``accuracy``: 0-d float, fraction of windows whose predicted offset is within the tolerance;
    ``offset_error``: 0-d float, mean ``|predicted - true|`` in frames; ``predicted``: ``(W,)``
    long predicted offset of each scored (context-averaged) window.
    """

    accuracy: Tensor
    offset_error: Tensor
    predicted: Tensor


class ClipSync(NamedTuple):
    """Per-clip result of :func:`clip_sync` (the LSE-D / LSE-C analogue).

    ``offset``: 0-d long, best offset in frames (sign convention: module docstring);
    ``distance``: 0-d float, ``min_o d(o)`` (lower is better); ``confidence``: 0-d float,
    ``median_o d(o) - min_o d(o)`` (higher is better); ``profile``: ``(2M + 1,)`` mean
    ``d(o) = 1 - p_sync`` per offset, NaN where no window has a candidate at that offset.
    """

    offset: Tensor
    distance: Tensor
    confidence: Tensor
    profile: Tensor


def offset_probabilities(audio_emb: Tensor, visual_emb: Tensor, max_offset: int = DEFAULT_MAX_OFFSET) -> Tensor:
    """p_sync of visual window ``j`` against audio window ``j + o`` for ``o = -M .. M``.

    ``audio_emb`` ``(Wa, E)``: embeddings of the audio windows starting at frames ``0 .. Wa - 1``;
    ``visual_emb`` ``(Wv, E)``: the same for the visual windows. Returns ``(Wv, 2M + 1)`` float32,
    column ``o + M`` for offset ``o``, NaN where ``j + o`` is outside ``[0, Wa)``.
    Uses :func:`unisync_loss.model.sync_prob`; each embedding is used as given (computed once
    per window by the caller); the gathered candidates take ``Wv * (2M + 1) * E`` floats.
    """
    if audio_emb.ndim != 2 or visual_emb.ndim != 2 or audio_emb.shape[1] != visual_emb.shape[1]:
        raise ValueError(
            f"offset_probabilities: expected audio (Wa, E) and visual (Wv, E) embeddings, "
            f"got {tuple(audio_emb.shape)} and {tuple(visual_emb.shape)}"
        )
    if isinstance(max_offset, bool) or not isinstance(max_offset, int) or max_offset < 0:
        raise ValueError(f"offset_probabilities: max_offset must be a non-negative integer, got {max_offset!r}")
    if audio_emb.shape[0] == 0:
        raise ValueError("offset_probabilities: got no audio window (Wa = 0)")
    device = visual_emb.device
    offsets = torch.arange(-max_offset, max_offset + 1, device=device)
    candidates = torch.arange(visual_emb.shape[0], device=device)[:, None] + offsets  # (Wv, K)
    inside = (candidates >= 0) & (candidates < audio_emb.shape[0])
    audio = audio_emb.to(device)[candidates.clamp(0, audio_emb.shape[0] - 1)]  # (Wv, K, E)
    probs = sync_prob(audio, visual_emb[:, None, :])
    return probs.masked_fill(~inside, float("nan"))


def _max_offset(prob_matrix: Tensor) -> int:
    """M of a ``(W, 2M + 1)`` matrix; ``ValueError`` for anything else."""
    if prob_matrix.ndim != 2 or prob_matrix.shape[1] % 2 != 1 or prob_matrix.shape[0] == 0:
        raise ValueError(f"expected an offset probability matrix (W >= 1, 2M + 1), got {tuple(prob_matrix.shape)}")
    return prob_matrix.shape[1] // 2


def sync_accuracy(prob_matrix: Tensor, true_offset: int = 0, tolerance: int = 1, context: int = 1) -> SyncAccuracyResult:
    """AVST/VocaLiST sync accuracy of one clip from its ``(Wv, 2M + 1)`` offset probability matrix.

    Each visual window predicts the argmax of p_sync over its valid (non-NaN) offsets and is correct
    when ``|predicted - true_offset| <= tolerance``. Only windows whose true candidate lies inside
    the clip are scored (all of them for an in-sync clip cut by :func:`score_clip`; with a true
    offset ``s > 0`` the last ``s`` windows have no true audio and are skipped, never counted
    wrong). ``context`` > 1 averages the scores of ``context`` consecutive windows per offset first
    (VocaLiST's emulation of longer context: with T-frame windows, a context of C frames is
    ``C - T + 1`` windows), leaving ``Wv - context + 1`` windows; an offset masked in any of them
    stays masked.
    """
    max_offset = _max_offset(prob_matrix)
    if abs(true_offset) > max_offset:
        raise ValueError(f"sync_accuracy: true_offset {true_offset} is outside the scored offsets -{max_offset}..{max_offset}")
    if tolerance < 0 or context < 1 or context > prob_matrix.shape[0]:
        raise ValueError(
            f"sync_accuracy: need tolerance >= 0 and 1 <= context <= windows ({prob_matrix.shape[0]}), "
            f"got tolerance={tolerance}, context={context}"
        )
    scores = prob_matrix.unfold(0, context, 1).mean(dim=-1) if context > 1 else prob_matrix
    scores = scores[~scores[:, true_offset + max_offset].isnan()]
    if scores.shape[0] == 0:
        raise ValueError(
            f"sync_accuracy: no window has its true audio candidate (offset {true_offset}) inside the clip; "
            f"score visual windows whose audio at the true offset lies in the clip"
        )
    predicted = scores.nan_to_num(float("-inf")).argmax(dim=1) - max_offset
    error = (predicted - true_offset).abs()
    return SyncAccuracyResult((error <= tolerance).float().mean(), error.float().mean(), predicted)


def clip_sync(prob_matrix: Tensor) -> ClipSync:
    """Offset, distance and confidence of one clip (LSE-D / LSE-C analogue) from ``(Wv, 2M + 1)``.

    ``d(o) = 1 - p_sync`` averaged over the windows with a valid candidate at offset ``o``;
    distance = min over offsets, confidence = median over offsets (NumPy's median, as
    syncnet_python) minus that min, offset = argmin (sign convention: module docstring).
    """
    max_offset = _max_offset(prob_matrix)
    profile = torch.nanmean(1.0 - prob_matrix, dim=0)  # (K,), NaN where every window is masked
    best = profile.nan_to_num(float("inf")).argmin()
    distance = profile[best]
    return ClipSync(best - max_offset, distance, torch.nanquantile(profile, 0.5) - distance, profile)


class SyncAccuracy(nn.Module):
    """Sync accuracy over many clips: per-clip results averaged over clips (AVST/VocaLiST protocol).

    ``update(prob_matrix, true_offset)`` per clip (a ``(Wv, 2M + 1)`` matrix from
    :func:`offset_probabilities`); ``compute()`` -> ``{"accuracy", "offset_error"}`` (0-d float64
    tensors: means over clips of the per-clip values of :func:`sync_accuracy`) plus ``"clips"`` and
    ``"windows"`` counts; ``reset()`` clears. State tensors follow ``.to(device)``.
    """

    accuracy_sum: Tensor
    offset_error_sum: Tensor
    clips: Tensor
    windows: Tensor

    def __init__(self, tolerance: int = 1, context: int = 1) -> None:
        super().__init__()
        self.tolerance = tolerance
        self.context = context
        for name, dtype in (("accuracy_sum", torch.float64), ("offset_error_sum", torch.float64), ("clips", torch.long), ("windows", torch.long)):
            self.register_buffer(name, torch.zeros((), dtype=dtype), persistent=False)

    def update(self, prob_matrix: Tensor, true_offset: int = 0) -> SyncAccuracyResult:
        """Add one clip; returns its :class:`SyncAccuracyResult`."""
        result = sync_accuracy(prob_matrix, true_offset, self.tolerance, self.context)
        self.accuracy_sum += result.accuracy.to(self.accuracy_sum)
        self.offset_error_sum += result.offset_error.to(self.offset_error_sum)
        self.clips += 1
        self.windows += result.predicted.numel()
        return result

    def compute(self) -> dict[str, Any]:
        """Means over the clips added since the last reset; ``ValueError`` when there is none."""
        clips = int(self.clips)
        if clips == 0:
            raise ValueError("SyncAccuracy.compute: no clip was added (call update first)")
        return {
            "accuracy": self.accuracy_sum / clips,
            "offset_error": self.offset_error_sum / clips,
            "clips": clips,
            "windows": int(self.windows),
        }

    def reset(self) -> None:
        """Forget every clip added so far."""
        for state in (self.accuracy_sum, self.offset_error_sum, self.clips, self.windows):
            state.zero_()

    def forward(self, prob_matrix: Tensor, true_offset: int = 0) -> SyncAccuracyResult:
        """Same as :meth:`update`."""
        return self.update(prob_matrix, true_offset)


def _embed_windows(embed: Callable[[Tensor, str], Tensor], clip: Tensor, representation: str, count: int, window: int, batch_size: int, device: torch.device) -> Tensor:
    """Embeddings ``(count, E)`` of the windows starting at frames ``0 .. count - 1``, ``batch_size`` at a time."""
    starts = torch.arange(count, device=clip.device)
    return torch.cat([embed(cut_windows(clip, representation, chunk, window).to(device), representation) for chunk in starts.split(batch_size)])


def score_clip(
    model: UniSync,
    audio_clip: Tensor,
    visual_clip: Tensor,
    audio_rep: str,
    visual_rep: str,
    window: int | None = None,
    batch_size: int = 256,
    max_offset: int = DEFAULT_MAX_OFFSET,
    true_offset: int = 0,
    tolerance: int = 1,
    context: int = 1,
) -> dict[str, Any]:
    """Score one clip with a sync expert: offset probabilities, sync accuracy and clip sync.

    ``audio_clip`` / ``visual_clip`` are the clip's canonical tensors (``unisync_loss.windows``).
    Every audio window inside the audio is a candidate; the scored visual windows are those
    whose own (offset-0) audio window also lies inside the clip, starts ``0 .. Wv - 1``. Each
    window is embedded once (``model.embed_audio`` / ``model.embed_visual``, ``batch_size``
    windows per call, on the model's device, under ``torch.no_grad``). ``window`` defaults to
    ``model.config.window``.

    Returns ``{"probabilities": (Wv, 2M + 1) float32 (NaN = masked), "accuracy": float,
    "offset_error": float, "predicted": (scored windows,) long, "offset": int, "distance": float,
    "confidence": float, "windows": Wv}``.
    """
    window = model.config.window if window is None else window
    if batch_size < 1:
        raise ValueError(f"score_clip: batch_size must be >= 1, got {batch_size}")
    audio_count = window_count(audio_rep, time_length(audio_clip, audio_rep), window)
    visual_count = num_valid_windows({audio_rep: audio_clip, visual_rep: visual_clip}, window)
    if visual_count == 0:
        raise ValueError(
            f"score_clip: clip too short for T={window}: {audio_rep} {tuple(audio_clip.shape)}, "
            f"{visual_rep} {tuple(visual_clip.shape)} hold no complete window"
        )
    device = next(model.parameters()).device
    with torch.no_grad():
        audio_emb = _embed_windows(model.embed_audio, audio_clip, audio_rep, audio_count, window, batch_size, device)
        visual_emb = _embed_windows(model.embed_visual, visual_clip, visual_rep, visual_count, window, batch_size, device)
        probs = offset_probabilities(audio_emb, visual_emb, max_offset)
    accuracy = sync_accuracy(probs, true_offset, tolerance, context)
    sync = clip_sync(probs)
    return {
        "probabilities": probs,
        "accuracy": float(accuracy.accuracy),
        "offset_error": float(accuracy.offset_error),
        "predicted": accuracy.predicted,
        "offset": int(sync.offset),
        "distance": float(sync.distance),
        "confidence": float(sync.confidence),
        "windows": visual_count,
    }
