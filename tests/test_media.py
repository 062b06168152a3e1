"""Media reading: the 25 fps rule, audio to 16 kHz mono, alignment of audio and video, resampling."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from media_files import write_video  # noqa: E402
from unisync_loss.audio import SAMPLE_RATE, log_mel, read_wav, resample, write_wav  # noqa: E402
from unisync_loss.media import MediaError, read_audio, read_media, read_video, source_frame_indices  # noqa: E402


def _numbered_frames(n: int, size: int = 32) -> np.ndarray:
    """Frames whose brightness encodes their index (index * 4), readable after lossy coding."""
    return np.repeat((np.arange(n, dtype=np.uint8) * 4)[:, None, None, None], size, 1).repeat(size, 2).repeat(3, 3)


def _onset_wave(seconds: float, onset_s: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t) * (t >= onset_s)).astype(np.float32)


def test_frame_rate_rule() -> None:
    assert source_frame_indices(np.arange(50) / 25, 25).tolist() == list(range(50))
    thirty = source_frame_indices(np.arange(60) / 30, 30)
    assert thirty.tolist() == [math.floor(1.2 * i) for i in range(50)]
    assert source_frame_indices(np.arange(100) / 50, 50).tolist() == list(range(0, 100, 2))
    missing = np.delete(np.arange(10) / 25, 1)  # frame 1 undecodable: frame 0 covers it
    assert source_frame_indices(missing, 25).tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]


def test_30fps_stereo_44k_video_comes_out_at_25fps_16k_mono_aligned(tmp_path: Path) -> None:
    frames = _numbered_frames(60)  # 2 s at 30 fps
    stereo = np.stack([_onset_wave(2.0, 1.0, 44_100), _onset_wave(2.0, 1.0, 44_100)], axis=1)
    media = read_media(write_video(tmp_path / "a.mp4", frames, stereo, fps=30, sample_rate=44_100, channels=2))
    assert media.frames.shape == (50, 32, 32, 3) and media.frames.dtype == torch.uint8 and media.source_fps == 30
    shown = (media.frames[:, 16, 16, 0].float() / 4).round().long()
    assert shown.tolist() == [math.floor(1.2 * i) for i in range(50)]
    onset = int(np.argmax(media.wave.abs().numpy() > 0.25))
    assert abs(onset - SAMPLE_RATE) <= 8  # the AAC priming is trimmed, 44.1 kHz -> 16 kHz keeps the time
    assert abs(media.wave.shape[0] - 2 * SAMPLE_RATE) <= 1100


def test_separate_wav_and_wav_rates(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", _numbered_frames(25), None)
    wav = write_wav(tmp_path / "a.wav", torch.from_numpy(_onset_wave(1.0, 0.5, 22_050)), sample_rate=22_050)
    media = read_media(video, wav)
    assert media.frames.shape[0] == 25 and abs(int(np.argmax(media.wave.numpy() > 0.25)) - 8000) <= 8
    wave, rate = read_wav(wav, sample_rate=SAMPLE_RATE)
    assert rate == SAMPLE_RATE and wave.shape == (SAMPLE_RATE,)
    torch.testing.assert_close(log_mel(*read_wav(wav)), log_mel(wave))  # the rate is part of the call
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(video)


def test_resample_keeps_in_band_tones_and_removes_aliases() -> None:
    t = torch.arange(44_100) / 44_100
    tone = torch.sin(2 * math.pi * 1000 * t)
    out = resample(tone, 44_100, SAMPLE_RATE)
    t16 = torch.arange(out.shape[0]) / SAMPLE_RATE
    assert out.shape == (SAMPLE_RATE,)
    assert (out - torch.sin(2 * math.pi * 1000 * t16))[200:-200].abs().max() < 2e-3
    assert resample(torch.sin(2 * math.pi * 10_000 * t), 44_100, SAMPLE_RATE)[200:-200].abs().max() < 0.02
    assert resample(tone, 16_000, 16_000) is tone
    with pytest.raises(ValueError, match="orig_rate must be a positive integer"):
        resample(tone, 0)


def test_read_video_scales_to_max_side(tmp_path: Path) -> None:
    video = read_video(write_video(tmp_path / "big.mp4", np.zeros((5, 120, 200, 3), np.uint8), None), max_side=100)
    assert video.frames.shape == (5, 60, 100, 3) and video.source_size == (120, 200)
