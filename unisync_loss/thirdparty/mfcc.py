"""syncnet_python's audio front end in torch: ``python_speech_features.mfcc`` with its defaults.

syncnet_python reads 16 kHz mono 16-bit audio with ``scipy.io.wavfile`` (integer samples, not
[-1, 1]) and calls ``python_speech_features.mfcc(audio, 16000)`` (version 0.6 defaults):

* pre-emphasis ``y[0] = x[0]``, ``y[n] = x[n] - 0.97 x[n-1]``;
* frames of 400 samples (25 ms) every 160 samples (10 ms), no window function (rectangular);
  ``1 + ceil((S - 400) / 160)`` frames (one frame when ``S <= 400``), the last zero-padded;
* power spectrum ``|rfft(frame, 512)|^2 / 512``; frame energy = its sum;
* 26 triangular filters equally spaced on the HTK mel scale ``2595 log10(1 + f / 700)`` from 0 to
  8000 Hz, edges at FFT bins ``floor(513 f / 16000)``, peak 1 (no area normalisation);
* natural log (exact zeros replaced by float64 eps first), orthonormal DCT-II, first 13
  coefficients, sinusoidal lifter ``1 + 11 sin(pi n / 22)``, then coefficient 0 replaced by the
  log frame energy.

Result: 13 coefficients at 100 frames per second, 4 per video frame at 25 fps; syncnet_python's
window of video frame ``i`` is columns ``4 i .. 4 i + 19``. :func:`mfcc` takes the project's float
waves in [-1, 1] and multiplies by 32768 first, so a wave read with
:func:`unisync_loss.audio.read_wav` gives the numbers syncnet_python computes from the same file.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400
FRAME_STEP = 160
N_FFT = 512
NUM_FILTERS = 26
NUM_CEPSTRA = 13
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22
MFCC_PER_FRAME = 4
"""MFCC columns (100 Hz) per video frame (25 fps)."""
PCM16_SCALE = 32768.0
FLOAT64_EPS = torch.finfo(torch.float64).eps


def _hz_to_htk_mel(hz: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _htk_mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mfcc_filterbank() -> Tensor:
    """The 26 triangular filters over the 257 FFT bins: ``(26, 257)`` float64 (see module docstring)."""
    top = _hz_to_htk_mel(torch.tensor(SAMPLE_RATE / 2, dtype=torch.float64))
    edges_hz = _htk_mel_to_hz(torch.linspace(0.0, float(top), NUM_FILTERS + 2, dtype=torch.float64))
    edges = torch.floor((N_FFT + 1) * edges_hz / SAMPLE_RATE)  # FFT bin of each edge, (28,)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bins = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)
    rising = torch.where((bins >= left) & (bins < centre), (bins - left) / (centre - left).clamp_min(1.0), 0.0)
    falling = torch.where((bins >= centre) & (bins < right), (right - bins) / (right - centre).clamp_min(1.0), 0.0)
    return rising + falling


def _dct_matrix(inputs: int, outputs: int) -> Tensor:
    """Orthonormal DCT-II rows ``(outputs, inputs)`` float64 (scipy's ``dct(type=2, norm="ortho")``)."""
    n = torch.arange(inputs, dtype=torch.float64)
    k = torch.arange(outputs, dtype=torch.float64)[:, None]
    matrix = torch.cos(math.pi * k * (2.0 * n + 1.0) / (2.0 * inputs)) * math.sqrt(2.0 / inputs)
    matrix[0] /= math.sqrt(2.0)
    return matrix


def num_mfcc_frames(num_samples: int) -> int:
    """Columns of :func:`mfcc` for ``num_samples`` samples: ``1 + ceil((S - 400) / 160)``, at least 1."""
    if num_samples <= FRAME_LENGTH:
        return 1
    return 1 + math.ceil((num_samples - FRAME_LENGTH) / FRAME_STEP)


def mfcc(wave: Tensor) -> Tensor:
    """MFCC of a 16 kHz mono wave as syncnet_python computes it: ``(S,)`` in [-1, 1] -> ``(13, F)`` float32.

    ``F = num_mfcc_frames(S)`` columns at 100 Hz. Computed in float64 on ``wave``'s device.
    """
    if not isinstance(wave, Tensor) or wave.ndim != 1 or not wave.is_floating_point() or wave.shape[0] == 0:
        got = f"{tuple(wave.shape)} {wave.dtype}" if isinstance(wave, Tensor) else type(wave).__name__
        raise ValueError(f"mfcc: expected a non-empty float mono wave (S,) at {SAMPLE_RATE} Hz in [-1, 1], got {got}")
    samples = wave.to(torch.float64) * PCM16_SCALE  # the integer scale scipy's wavfile.read gives
    emphasised = torch.cat([samples[:1], samples[1:] - PREEMPHASIS * samples[:-1]])
    frames = num_mfcc_frames(samples.shape[0])
    padded = torch.nn.functional.pad(emphasised, (0, (frames - 1) * FRAME_STEP + FRAME_LENGTH - samples.shape[0]))
    power = torch.fft.rfft(padded.unfold(0, FRAME_LENGTH, FRAME_STEP), n=N_FFT).abs().square() / N_FFT  # (F, 257)
    energy = power.sum(dim=1)
    energy = torch.where(energy == 0, FLOAT64_EPS, energy)
    bands = power @ mfcc_filterbank().to(power.device).T  # (F, 26)
    bands = torch.where(bands == 0, FLOAT64_EPS, bands)
    cepstra = bands.log() @ _dct_matrix(NUM_FILTERS, NUM_CEPSTRA).to(power.device).T  # (F, 13)
    lifter = 1.0 + (CEPSTRAL_LIFTER / 2.0) * torch.sin(math.pi * torch.arange(NUM_CEPSTRA, dtype=torch.float64) / CEPSTRAL_LIFTER)
    cepstra = cepstra * lifter.to(power.device)
    cepstra[:, 0] = energy.log()
    return cepstra.T.to(torch.float32).contiguous()


def mfcc_window_count(columns: int, window: int = 5) -> int:
    """Windows of ``window`` video frames (``4 window`` columns, start every 4 columns) in ``columns`` MFCC columns."""
    span = MFCC_PER_FRAME * window
    return 0 if columns < span else (columns - span) // MFCC_PER_FRAME + 1


def cut_mfcc_windows(clip: Tensor, starts: Tensor | Sequence[int], window: int = 5) -> Tensor:
    """MFCC windows ``(W, 1, 13, 4 window)`` of the video frames ``starts`` from a clip's ``(13, F)`` MFCC.

    The window of video frame ``i`` is columns ``4 i .. 4 i + 4 window - 1`` (syncnet_python's
    ``vframe*4 : vframe*4+20``); ``ValueError`` for a malformed clip or a window outside it.
    """
    if not isinstance(clip, Tensor) or clip.ndim != 2 or clip.shape[0] != NUM_CEPSTRA or not clip.is_floating_point():
        got = f"{tuple(clip.shape)} {clip.dtype}" if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"mfcc: expected a clip's MFCC ({NUM_CEPSTRA}, F) float, got {got}")
    starts = torch.as_tensor(starts, device=clip.device).long()
    count = mfcc_window_count(clip.shape[1], window)
    if starts.ndim != 1 or (starts.numel() and (int(starts.min()) < 0 or int(starts.max()) >= count)):
        got = f"starts in [{int(starts.min())}, {int(starts.max())}]" if starts.numel() else f"shape {tuple(starts.shape)}"
        raise ValueError(
            f"mfcc: window starts must be a 1-D sequence in [0, {count - 1}] for a clip of {clip.shape[1]} columns "
            f"with T={window}, got {got}"
        )
    columns = MFCC_PER_FRAME * starts[:, None] + torch.arange(MFCC_PER_FRAME * window, device=clip.device)
    return clip[:, columns].permute(1, 0, 2).unsqueeze(1)  # (13, W, L) -> (W, 1, 13, L)
