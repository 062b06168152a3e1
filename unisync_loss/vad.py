"""Voice activity per video frame with Silero VAD (the ``vad`` extra), to leave windows without speech out of a score.

Silero VAD's model file ships inside its wheel (``pip install "unisync-loss[vad]"``: ``silero-vad``,
MIT licence); it is loaded from there, never downloaded. ``unisync score --vad`` keeps only the
windows whose own frames hold speech: silent windows have a flat p_sync across offsets and only
dilute the offset profile (lower confidence), and music or noise without speech is not what a lip
sync expert can judge.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import torch
from torch import Tensor

from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS

VAD_EXTRA = 'pip install "unisync-loss[vad]"'


@lru_cache(maxsize=1)
def _model():
    try:
        from silero_vad import load_silero_vad
    except ImportError as error:
        raise ImportError(f"--vad needs Silero VAD: {VAD_EXTRA}") from error
    with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit.load, which the packaged model needs, deprecated
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load.*")
        return load_silero_vad()


def speech_frames(wave: Tensor, n_frames: int) -> Tensor:
    """``(n_frames,)`` bool: video frames (25 fps) that overlap speech in ``wave`` ``(S,)`` at 16 kHz."""
    from silero_vad import get_speech_timestamps

    speech = torch.zeros(n_frames, dtype=torch.bool)
    samples_per_frame = SAMPLE_RATE / VIDEO_FPS
    for stamp in get_speech_timestamps(wave.float(), _model(), sampling_rate=SAMPLE_RATE):
        first = int(stamp["start"] // samples_per_frame)
        last = int(-(-stamp["end"] // samples_per_frame))  # ceil
        speech[first:last] = True
    return speech
