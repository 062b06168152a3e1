"""One clip (a 16 kHz wave and its face frames) scored by a third-party expert, whatever its measure.

Cosine experts (Wav2Lip's) go through :func:`unisync_loss.metrics.score_clip` unchanged (offsets
-M..M masked at the clip's ends, ``d = 1 - p_sync``); SyncNet v2 goes through syncnet_python's own
protocol (:func:`unisync_loss.thirdparty.lse.score_clip_syncnet`: zero-padded embeddings,
Euclidean distance), so its LSE-D / LSE-C are the numbers papers report. Both results carry
``offset`` (this project's sign: ``o > 0`` means the audio lags the video), ``distance``,
``confidence``, ``windows`` and ``measure``.
"""
from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from unisync_loss.metrics import DEFAULT_MAX_OFFSET, score_clip
from unisync_loss.thirdparty.base import ThirdPartyExpert
from unisync_loss.thirdparty.lse import score_clip_syncnet


def score_clip_thirdparty(
    expert: ThirdPartyExpert,
    wave: Tensor,
    frames: Tensor,
    *,
    channel_order: Literal["rgb", "bgr"] = "rgb",
    max_offset: int = DEFAULT_MAX_OFFSET,
    batch_size: int = 20,
) -> dict[str, Any]:
    """Score a clip: ``wave`` ``(S,)`` float 16 kHz in [-1, 1]; ``frames`` ``(n, 3, H, W)`` uint8 or float in [0, 1] face crops at 25 fps.

    ``max_offset`` is syncnet_python's ``vshift`` for SyncNet v2. Returns the dict of
    :func:`~unisync_loss.metrics.score_clip` (cosine experts) or of
    :func:`~unisync_loss.thirdparty.lse.score_clip_syncnet` (Euclidean experts), plus ``"measure"``.
    """
    if expert.measure == "euclidean":
        result = score_clip_syncnet(expert, wave, frames, channel_order=channel_order, vshift=max_offset, batch_size=batch_size)
    else:
        rgb = frames.flip(1) if channel_order == "bgr" else frames
        config = expert.config
        result = score_clip(expert, expert.audio_clip(wave), rgb, config.audio, config.visual,
                            batch_size=batch_size, max_offset=max_offset)
    return {**result, "measure": expert.measure}
