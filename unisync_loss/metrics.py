"""Sync metrics: the AVST/VocaLiST sync-accuracy protocol and the LSE-D / LSE-C analogues.

Sign convention (used everywhere here): offset ``o`` pairs the visual window starting at video
frame ``j`` with the audio window starting at frame ``j + o``. ``o > 0`` means the audio that
matches the picture starts later: audio lags video. A clip in sync has true offset 0. (syncnet_python
reports ``15 - argmin`` over its padded distance profile, i.e. the opposite sign.)

The central object is the offset probability matrix ``(Wv, 2M + 1)``: ``p_sync`` of every visual
window against the audio windows at offsets ``-M .. +M`` (``M = max_offset``, 15 by default),
NaN where the audio candidate falls outside the clip (masked, never zero-padded). For an expert
that measures a Euclidean distance instead (SyncNet v2, ``model.measure == "euclidean"``) the
matrix holds the *negative* distances, so that higher is in sync for both measures: the argmax of
the protocol is the smallest distance, and :func:`clip_sync` takes ``measure`` to turn the matrix
back into distances.

Functional forms: :func:`offset_probabilities`, :func:`sync_accuracy`, :func:`chance_accuracy`
(what guessing uniformly among each window's unmasked candidates would score), :func:`clip_sync`,
:func:`score_clip` (a model and one clip's canonical tensors -> all of the above).
Module form: :class:`SyncAccuracy` (update per clip, ``compute()`` averages over clips).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from unisync_loss.model import UniSync, sync_prob
from unisync_loss.windows import cut_windows, time_length, window_count

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


def offset_probabilities(
    audio_emb: Tensor,
    visual_emb: Tensor,
    max_offset: int = DEFAULT_MAX_OFFSET,
    similarity: Callable[[Tensor, Tensor], Tensor] = sync_prob,
) -> Tensor:
    """p_sync of visual window ``j`` against audio window ``j + o`` for ``o = -M .. M``.

    ``audio_emb`` ``(Wa, E)``: embeddings of the audio windows starting at frames ``0 .. Wa - 1``;
    ``visual_emb`` ``(Wv, E)``: the same for the visual windows. Returns ``(Wv, 2M + 1)`` float32,
    column ``o + M`` for offset ``o``, NaN where ``j + o`` is outside ``[0, Wa)``.
    Uses ``similarity(audio (Wv, K, E), visual (Wv, 1, E))`` (:func:`unisync_loss.model.sync_prob`
    by default; a Euclidean expert passes its negative distance); each embedding is used as given
    (computed once per window by the caller); the gathered candidates take ``Wv * (2M + 1) * E`` floats.
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
    probs = similarity(audio, visual_emb[:, None, :])
    return probs.masked_fill(~inside, float("nan"))


def _max_offset(prob_matrix: Tensor) -> int:
    """M of a ``(W, 2M + 1)`` matrix; ``ValueError`` for anything else."""
    if prob_matrix.ndim != 2 or prob_matrix.shape[1] % 2 != 1 or prob_matrix.shape[0] == 0:
        raise ValueError(f"expected an offset probability matrix (W >= 1, 2M + 1), got {tuple(prob_matrix.shape)}")
    return prob_matrix.shape[1] // 2


def _scored_windows(prob_matrix: Tensor, true_offset: int, tolerance: int, context: int, caller: str) -> Tensor:
    """The rows of ``(Wv, 2M + 1)`` that the accuracy protocol scores (see :func:`sync_accuracy`).

    Averages ``context`` consecutive windows per offset, then keeps the windows whose candidate at
    ``true_offset`` lies inside the clip. Returns ``(W', 2M + 1)``, NaN where masked.
    """
    max_offset = _max_offset(prob_matrix)
    if abs(true_offset) > max_offset:
        raise ValueError(f"{caller}: true_offset {true_offset} is outside the scored offsets -{max_offset}..{max_offset}")
    if tolerance < 0 or context < 1 or context > prob_matrix.shape[0]:
        raise ValueError(
            f"{caller}: need tolerance >= 0 and 1 <= context <= windows ({prob_matrix.shape[0]}), "
            f"got tolerance={tolerance}, context={context}"
        )
    scores = prob_matrix.unfold(0, context, 1).mean(dim=-1) if context > 1 else prob_matrix
    scores = scores[~scores[:, true_offset + max_offset].isnan()]
    if scores.shape[0] == 0:
        raise ValueError(
            f"{caller}: no window has its true audio candidate (offset {true_offset}) inside the clip; "
            f"score visual windows whose audio at the true offset lies in the clip"
        )
    return scores


def sync_accuracy(prob_matrix: Tensor, true_offset: int = 0, tolerance: int = 1, context: int = 1) -> SyncAccuracyResult:
    """AVST/VocaLiST sync accuracy of one clip from its ``(Wv, 2M + 1)`` offset probability matrix.

    Each visual window predicts the argmax of p_sync over its valid (non-NaN) offsets and is correct
    when ``|predicted - true_offset| <= tolerance``. Only windows whose true candidate lies inside
    the clip are scored (in a :func:`score_clip` matrix with a true offset ``s < 0``, the first
    ``|s|`` windows have no true audio and are skipped, never counted wrong). ``context`` > 1 averages the scores of ``context`` consecutive windows per offset first
    (VocaLiST's emulation of longer context: with T-frame windows, a context of C frames is
    ``C - T + 1`` windows), leaving ``Wv - context + 1`` windows; an offset masked in any of them
    stays masked.
    """
    scores = _scored_windows(prob_matrix, true_offset, tolerance, context, "sync_accuracy")
    max_offset = prob_matrix.shape[1] // 2
    predicted = scores.nan_to_num(float("-inf")).argmax(dim=1) - max_offset
    error = (predicted - true_offset).abs()
    return SyncAccuracyResult((error <= tolerance).float().mean(), error.float().mean(), predicted)


def chance_accuracy(prob_matrix: Tensor, true_offset: int = 0, tolerance: int = 1, context: int = 1) -> Tensor:
    """Expected :func:`sync_accuracy` of a guess drawn uniformly among each window's unmasked offsets.

    Same windows and arguments as :func:`sync_accuracy`. A window with ``K`` unmasked candidates,
    ``c`` of them within ``tolerance`` of ``true_offset``, is right by chance with probability
    ``c / K``; the result (0-d float) is the mean over the scored windows. With no masking it is
    ``(2 tolerance + 1) / (2M + 1)`` (3/31 = 9.7 % by default); windows near the clip's edges have
    fewer candidates, so a real clip's chance level is higher.
    """
    scores = _scored_windows(prob_matrix, true_offset, tolerance, context, "chance_accuracy")
    max_offset = prob_matrix.shape[1] // 2
    offsets = torch.arange(-max_offset, max_offset + 1, device=scores.device)
    valid = ~scores.isnan()  # (W', K)
    near_truth = valid & ((offsets - true_offset).abs() <= tolerance)
    return (near_truth.sum(dim=1).float() / valid.sum(dim=1).float()).mean()


def clip_sync(prob_matrix: Tensor, measure: str = "cosine") -> ClipSync:
    """Offset, distance and confidence of one clip (LSE-D / LSE-C analogue) from ``(Wv, 2M + 1)``.

    ``d(o) = 1 - p_sync`` (``measure="cosine"``) or the Euclidean distance (``"euclidean"``: the
    matrix holds negative distances) averaged over the windows with a valid candidate at offset
    ``o``; distance = min over offsets, confidence = median over offsets (NumPy's median, as
    syncnet_python) minus that min, offset = argmin (sign convention: module docstring).
    """
    max_offset = _max_offset(prob_matrix)
    if measure not in ("cosine", "euclidean"):
        raise ValueError(f"clip_sync: measure must be 'cosine' or 'euclidean', got {measure!r}")
    profile = torch.nanmean(1.0 - prob_matrix if measure == "cosine" else -prob_matrix, dim=0)  # (K,), NaN where every window is masked
    best = profile.nan_to_num(float("inf")).argmin()
    distance = profile[best]
    return ClipSync(best - max_offset, distance, torch.nanquantile(profile, 0.5) - distance, profile)


class SyncAccuracy(nn.Module):
    """Sync accuracy over many clips: per-clip results averaged over clips (AVST/VocaLiST protocol).

    ``update(prob_matrix, true_offset)`` per clip (a ``(Wv, 2M + 1)`` matrix from
    :func:`offset_probabilities`); ``compute()`` -> ``{"accuracy", "offset_error", "chance"}``
    (0-d float64 tensors: means over clips of the per-clip values of :func:`sync_accuracy` and
    :func:`chance_accuracy`) plus ``"clips"`` and ``"windows"`` counts; ``reset()`` clears. State
    tensors follow ``.to(device)``.
    """

    accuracy_sum: Tensor
    offset_error_sum: Tensor
    chance_sum: Tensor
    clips: Tensor
    windows: Tensor

    def __init__(self, tolerance: int = 1, context: int = 1) -> None:
        super().__init__()
        self.tolerance = tolerance
        self.context = context
        for name, dtype in (("accuracy_sum", torch.float64), ("offset_error_sum", torch.float64),
                            ("chance_sum", torch.float64), ("clips", torch.long), ("windows", torch.long)):
            self.register_buffer(name, torch.zeros((), dtype=dtype), persistent=False)

    def update(self, prob_matrix: Tensor, true_offset: int = 0) -> SyncAccuracyResult:
        """Add one clip; returns its :class:`SyncAccuracyResult`."""
        result = sync_accuracy(prob_matrix, true_offset, self.tolerance, self.context)
        self.accuracy_sum += result.accuracy.to(self.accuracy_sum)
        self.offset_error_sum += result.offset_error.to(self.offset_error_sum)
        self.chance_sum += chance_accuracy(prob_matrix, true_offset, self.tolerance, self.context).to(self.chance_sum)
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
            "chance": self.chance_sum / clips,
            "clips": clips,
            "windows": int(self.windows),
        }

    def reset(self) -> None:
        """Forget every clip added so far."""
        for state in (self.accuracy_sum, self.offset_error_sum, self.chance_sum, self.clips, self.windows):
            state.zero_()

    def forward(self, prob_matrix: Tensor, true_offset: int = 0) -> SyncAccuracyResult:
        """Same as :meth:`update`."""
        return self.update(prob_matrix, true_offset)


def _embed_windows(embed: Callable[[Tensor, str], Tensor], clip: Tensor, representation: str, count: int, window: int, batch_size: int, device: torch.device) -> Tensor:
    """Embeddings ``(count, E)`` of the windows starting at frames ``0 .. count - 1``, ``batch_size`` at a time."""
    starts = torch.arange(count, device=clip.device)
    return torch.cat([embed(cut_windows(clip, representation, chunk, window).to(device), representation) for chunk in starts.split(batch_size)])


def visual_window_count(
    audio_clip: Tensor, visual_clip: Tensor, audio_rep: str, visual_rep: str, window: int, true_offset: int = 0
) -> int:
    """Rows of :func:`score_clip`'s matrix: visual windows ``0 .. Wv - 1`` up to the last whose true audio fits.

    ``Wv = min(complete visual windows, audio windows - true_offset)`` (0 when negative). The first
    ``-true_offset`` of them (for ``true_offset < 0``) have their true audio before the clip.
    """
    audio_count = window_count(audio_rep, time_length(audio_clip, audio_rep), window)
    visual_count = window_count(visual_rep, time_length(visual_clip, visual_rep), window)
    return max(0, min(visual_count, audio_count - true_offset))


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
    """Score one clip with a sync expert: offset probabilities, sync accuracy, chance and clip sync.

    ``audio_clip`` / ``visual_clip`` are the clip's canonical tensors (``unisync_loss.windows``).
    Every audio window inside the audio is a candidate. The rows of the matrix are the visual
    windows starting at frames ``0 .. Wv - 1``: every complete visual window up to the last one
    whose true audio window (start ``j + true_offset``) still lies inside the clip. Windows at the
    start whose true audio lies before the clip (``true_offset < 0``) are kept in the matrix but
    not scored by the accuracy. So an in-sync clip of ``n`` frames cropped to a true offset ``s``
    (``pretrain.evaluate``'s shifts: ``s`` video frames, or ``|s|`` frames of audio, dropped at the
    start) scores ``n - T + 1 - |s|`` windows for either sign of ``s``. Each window is embedded once
    (``model.embed_audio`` / ``model.embed_visual``, ``batch_size`` windows per call, on the model's
    device, under ``torch.no_grad``). ``window`` defaults to ``model.config.window``.

    A Euclidean expert (``model.measure == "euclidean"``, SyncNet v2 with ``audio_rep="mfcc"``) is
    scored by its ``model.distance``: the matrix holds negative distances and ``distance`` /
    ``confidence`` are in its units (module docstring).

    Returns ``{"probabilities": (Wv, 2M + 1) float32 (NaN = masked), "measure": "cosine" | "euclidean", "accuracy": float,
    "offset_error": float, "chance": float (:func:`chance_accuracy`), "predicted": (scored
    windows,) long, "offset": int, "distance": float, "confidence": float, "windows": Wv}``.
    """
    window = model.config.window if window is None else window
    if batch_size < 1:
        raise ValueError(f"score_clip: batch_size must be >= 1, got {batch_size}")
    audio_count = window_count(audio_rep, time_length(audio_clip, audio_rep), window)
    visual_count = visual_window_count(audio_clip, visual_clip, audio_rep, visual_rep, window, true_offset)
    if visual_count <= max(0, -true_offset):
        raise ValueError(
            f"score_clip: clip too short for T={window} at true offset {true_offset}: {audio_rep} "
            f"{tuple(audio_clip.shape)}, {visual_rep} {tuple(visual_clip.shape)} hold no visual window "
            f"whose true audio window lies inside the clip"
        )
    device = next(model.parameters()).device
    with torch.no_grad():
        audio_emb = _embed_windows(model.embed_audio, audio_clip, audio_rep, audio_count, window, batch_size, device)
        visual_emb = _embed_windows(model.embed_visual, visual_clip, visual_rep, visual_count, window, batch_size, device)
        measure = getattr(model, "measure", "cosine")
        similarity = sync_prob if measure == "cosine" else (lambda audio, visual: -model.distance(audio, visual))
        probs = offset_probabilities(audio_emb, visual_emb, max_offset, similarity)
    accuracy = sync_accuracy(probs, true_offset, tolerance, context)
    sync = clip_sync(probs, measure)
    return {
        "probabilities": probs,
        "measure": measure,
        "accuracy": float(accuracy.accuracy),
        "offset_error": float(accuracy.offset_error),
        "chance": float(chance_accuracy(probs, true_offset, tolerance, context)),
        "predicted": accuracy.predicted,
        "offset": int(sync.offset),
        "distance": float(sync.distance),
        "confidence": float(sync.confidence),
        "windows": visual_count,
    }
