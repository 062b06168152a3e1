"""LSE-D / LSE-C and the AV offset exactly as syncnet_python computes them (``SyncNetInstance.evaluate``).

What papers report as LSE-D / LSE-C is SyncNet v2 run by syncnet_python (read at commit 6efbb1c):

1. ``min_length = min(video frames, floor(audio samples / 640))``; the windows scored are the
   video frames ``i = 0 .. min_length - 6`` (``range(0, min_length - 5)``: one window fewer than
   would fit, kept so the numbers match). Visual window ``i``: frames ``i .. i + 4``; audio
   window ``i``: MFCC columns ``4 i .. 4 i + 19``.
2. The audio embeddings are zero-padded by ``vshift`` (15) windows on both sides (zero vectors,
   not masked), and visual window ``i`` is compared with padded rows ``i .. i + 2 vshift``, i.e.
   the audio windows ``i - vshift .. i + vshift``, by ``pairwise_distance`` (Euclidean, eps 1e-6).
3. ``mdist`` = mean over windows per shift; LSE-D = ``min(mdist)``; LSE-C = ``median(mdist) -
   min(mdist)``; AV offset = ``vshift - argmin(mdist)``.

Sign conventions: syncnet_python's offset is ``vshift - k`` for the best padded index ``k``; this
project's offset ``o`` pairs visual window ``j`` with audio window ``j + o`` (``o > 0``: audio
lags video), i.e. ``o = k - vshift = -(syncnet_python's offset)``. Both are returned.
"""
from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from unisync_loss.thirdparty.mfcc import cut_mfcc_windows
from unisync_loss.thirdparty.syncnet_v2 import SyncNetV2

DEFAULT_VSHIFT = 15
SAMPLES_PER_FRAME = 640
"""16 kHz samples per 25 fps video frame."""
DEFAULT_BATCH_SIZE = 20


class SyncNetScores(NamedTuple):
    """syncnet_python's clip result (0-d tensors and profiles).

    ``syncnet_offset``: its "AV offset" (``vshift - argmin``); ``offset``: the same in this
    project's sign (``-syncnet_offset``); ``lse_d``: min over shifts of the mean distance;
    ``lse_c``: median minus min; ``profile``: ``(2 vshift + 1,)`` mean distance per shift, entry
    ``k`` = this project's offset ``k - vshift``; ``distances``: ``(W, 2 vshift + 1)`` per window.
    """

    syncnet_offset: Tensor
    offset: Tensor
    lse_d: Tensor
    lse_c: Tensor
    profile: Tensor
    distances: Tensor


def syncnet_distances(audio_emb: Tensor, visual_emb: Tensor, vshift: int = DEFAULT_VSHIFT) -> Tensor:
    """Distances ``(W, 2 vshift + 1)`` of visual window ``i`` to audio windows ``i - vshift .. i + vshift``.

    ``audio_emb`` / ``visual_emb``: ``(W, E)`` embeddings of the same window starts. Audio windows
    outside ``[0, W)`` are zero vectors (syncnet_python pads the embeddings with zeros).
    """
    if audio_emb.ndim != 2 or audio_emb.shape != visual_emb.shape or audio_emb.shape[0] == 0:
        raise ValueError(
            f"syncnet_distances: expected audio and visual embeddings of the same shape (W >= 1, E), "
            f"got {tuple(audio_emb.shape)} and {tuple(visual_emb.shape)}"
        )
    if isinstance(vshift, bool) or not isinstance(vshift, int) or vshift < 0:
        raise ValueError(f"syncnet_distances: vshift must be a non-negative integer, got {vshift!r}")
    shifts = 2 * vshift + 1
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))  # (W + 2 vshift, E)
    rows = torch.arange(audio_emb.shape[0], device=audio_emb.device)[:, None] + torch.arange(shifts, device=audio_emb.device)
    return F.pairwise_distance(visual_emb[:, None, :].expand(-1, shifts, -1), padded[rows])


def syncnet_scores(distances: Tensor) -> SyncNetScores:
    """Offset, LSE-D and LSE-C from the ``(W, 2 vshift + 1)`` distances of :func:`syncnet_distances`."""
    if distances.ndim != 2 or distances.shape[1] % 2 != 1 or distances.shape[0] == 0:
        raise ValueError(f"syncnet_scores: expected distances (W >= 1, 2 vshift + 1), got {tuple(distances.shape)}")
    vshift = distances.shape[1] // 2
    profile = distances.mean(dim=0)
    lse_d, best = torch.min(profile, 0)
    syncnet_offset = vshift - best
    return SyncNetScores(syncnet_offset, -syncnet_offset, lse_d, torch.median(profile) - lse_d, profile, distances)


def scored_window_count(num_frames: int, num_samples: int) -> int:
    """Windows syncnet_python scores for a clip: ``min(num_frames, num_samples // 640) - 5`` (may be <= 0)."""
    return min(num_frames, num_samples // SAMPLES_PER_FRAME) - 5


def score_clip_syncnet(
    expert: SyncNetV2,
    wave: Tensor,
    frames: Tensor,
    *,
    channel_order: Literal["rgb", "bgr"] = "rgb",
    vshift: int = DEFAULT_VSHIFT,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Score one clip with SyncNet v2 as syncnet_python does (module docstring).

    ``wave``: ``(S,)`` float mono audio at 16 kHz in [-1, 1]; ``frames``: ``(n, 3, H, W)`` face
    crops at 25 fps, uint8 (0-255) or float in [0, 1], ``channel_order`` RGB by default (pass
    ``"bgr"`` for OpenCV-decoded frames); resized to 224 x 224 when needed. Embeddings are
    computed ``batch_size`` windows at a time on the expert's device under ``torch.no_grad``.

    Returns ``{"offset": int (this project's sign), "syncnet_offset": int (syncnet_python's
    "AV offset"), "lse_d": float, "lse_c": float, "distance": float (= lse_d),
    "confidence": float (= lse_c), "profile": (2 vshift + 1,) float32, "distances": (W, 2 vshift + 1),
    "windows": W}``.
    """
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or not (frames.dtype == torch.uint8 or frames.is_floating_point()):
        got = f"{tuple(frames.shape)} {frames.dtype}" if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"score_clip_syncnet: expected face frames (n, 3, H, W) uint8 or float in [0, 1], got {got}")
    if batch_size < 1:
        raise ValueError(f"score_clip_syncnet: batch_size must be >= 1, got {batch_size}")
    features = expert.audio_clip(wave)
    count = scored_window_count(frames.shape[0], wave.shape[0])
    if count < 1:
        raise ValueError(
            f"score_clip_syncnet: clip too short: {frames.shape[0]} frames and {wave.shape[0] / 16000:.3f} s of audio; "
            "syncnet_python needs at least 6 frames and 6 x 40 ms of audio"
        )
    value_range = (0.0, 255.0) if frames.dtype == torch.uint8 else (0.0, 1.0)
    device = next(expert.parameters()).device
    window = expert.config.window
    audio_emb, visual_emb = [], []
    with torch.no_grad():
        for starts in torch.arange(count).split(batch_size):
            audio_emb.append(expert.embed_audio(cut_mfcc_windows(features, starts, window).to(device), "mfcc"))
            clips = frames[starts[:, None] + torch.arange(window)].permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
            visual_emb.append(expert.embed_visual(clips.to(device).float(), "rgb", channel_order=channel_order, value_range=value_range))
        scores = syncnet_scores(syncnet_distances(torch.cat(audio_emb), torch.cat(visual_emb), vshift))
    return {
        "offset": int(scores.offset),
        "syncnet_offset": int(scores.syncnet_offset),
        "lse_d": float(scores.lse_d),
        "lse_c": float(scores.lse_c),
        "distance": float(scores.lse_d),
        "confidence": float(scores.lse_c),
        "profile": scores.profile,
        "distances": scores.distances,
        "windows": count,
    }
