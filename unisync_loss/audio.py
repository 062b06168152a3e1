"""Audio time base, 16-bit PCM WAV I/O and the Wav2Lip-compatible log-mel front end.

Video runs at 25 fps, audio at 16 kHz. The log-mel has 80 frames per second
(hop 200 samples), HuBERT-style features 50 per second, so one video frame
covers 3.2 mel frames and exactly 2 HuBERT frames.

The log-mel reproduces Wav2Lip's ``audio.melspectrogram`` (librosa >= 0.10) in torch:
pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``; centred STFT (``n_fft = win = 800``, hop 200,
periodic Hann, zero padding of 400 samples each side: librosa >= 0.10 defaults to
``pad_mode="constant"``); magnitude; 80 Slaney mel bands 55-7600 Hz with Slaney area
normalisation; ``20 log10(max(1e-5, x)) - 20`` dB; symmetric scaling of [-100, 0] dB to
[-4, 4] with clipping. A wave of ``S`` samples gives ``1 + S // 200`` frames.
"""
from __future__ import annotations

import math
import wave as wave_io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

SAMPLE_RATE = 16_000
VIDEO_FPS = 25
MEL_FPS = 80
HUBERT_FPS = 50
N_MELS = 80
HUBERT_PER_FRAME = HUBERT_FPS // VIDEO_FPS
"""HuBERT rows (50 Hz) per video frame (25 fps): the window of frame ``i`` starts at row ``2 i``."""

N_FFT = 800
HOP_LENGTH = 200
WIN_LENGTH = 800
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
AMPLITUDE_FLOOR = 1e-5

_PCM16_SCALE = 32768.0


def mel_steps(window: int) -> int:
    """Number of mel frames in a window of ``window`` video frames (16 for 5, 52 for 16)."""
    return (16 * window + 4) // 5


def mel_start(frame: int) -> int:
    """First mel frame of the window that starts at video frame ``frame`` (Wav2Lip's int(80·i/25))."""
    return (16 * frame) // 5


def num_mel_frames(num_samples: int) -> int:
    """Frames of the log-mel of ``num_samples`` samples: ``1 + num_samples // 200``."""
    return 1 + num_samples // HOP_LENGTH


def _hz_to_slaney_mel(hz: Tensor) -> Tensor:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    linear = hz * 3.0 / 200.0
    logarithmic = 15.0 + torch.log(hz.clamp_min(1000.0) / 1000.0) * 27.0 / math.log(6.4)
    return torch.where(hz >= 1000.0, logarithmic, linear)


def _slaney_mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of :func:`_hz_to_slaney_mel`."""
    linear = mel * 200.0 / 3.0
    logarithmic = 1000.0 * torch.exp((mel.clamp_min(15.0) - 15.0) * math.log(6.4) / 27.0)
    return torch.where(mel >= 15.0, logarithmic, linear)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> Tensor:
    """Slaney-style triangular mel filterbank with area normalisation: ``(n_mels, 1 + n_fft // 2)`` float64.

    Band ``m`` rises linearly from centre ``m - 1`` to centre ``m`` and falls to centre ``m + 1``
    (centres equally spaced on the Slaney mel scale between ``fmin`` and ``fmax``, edges
    included), scaled by ``2 / (f[m + 1] - f[m - 1])`` so every band has the same area.
    Equal to ``librosa.filters.mel(sr=..., n_fft=..., n_mels=..., fmin=..., fmax=...)``.
    """
    bins = torch.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2, dtype=torch.float64)
    low, high = _hz_to_slaney_mel(torch.tensor([fmin, fmax], dtype=torch.float64))
    edges = _slaney_mel_to_hz(torch.linspace(float(low), float(high), n_mels + 2, dtype=torch.float64))
    widths = edges.diff()  # (n_mels + 1,)
    distance = edges[:, None] - bins[None, :]  # (n_mels + 2, bins): centre minus bin frequency
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    weights = torch.minimum(rising, falling).clamp_min(0.0)
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


class LogMel(nn.Module):
    """Wav2Lip-compatible log-mel: ``(S,) -> (80, 1 + S // 200)`` or ``(B, S) -> (B, 80, 1 + S // 200)``.

    Input: float waveform at 16 kHz in [-1, 1], on any device. Output: float log-mel in [-4, 4]
    in the input's dtype, differentiable w.r.t. the wave (zero gradient where the clipping or
    the amplitude floor is active). The window ``(800,)`` and filterbank ``(80, 401)`` are
    buffers built once, so ``.to(device)`` moves them.

    ``compute_dtype``: precision of the STFT and mel projection. float32 (default) matches the
    float64 librosa reference to ~1e-5 on speech; pass ``torch.float64`` for bit-level studies.
    """

    window: Tensor
    filterbank: Tensor

    def __init__(self, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not compute_dtype.is_floating_point:
            raise ValueError(f"LogMel: compute_dtype must be a floating dtype, got {compute_dtype}")
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float64).to(compute_dtype), persistent=False)
        self.register_buffer("filterbank", mel_filterbank().to(compute_dtype), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        """``(S,)`` or ``(B, S)`` float -> ``(80, F)`` or ``(B, 80, F)``, ``F = 1 + S // 200``."""
        if not isinstance(wave, Tensor) or wave.ndim not in (1, 2) or not wave.is_floating_point():
            got = f"{tuple(wave.shape)} {wave.dtype}" if isinstance(wave, Tensor) else type(wave).__name__
            raise ValueError(f"log_mel: expected a float waveform (S,) or (B, S) at {SAMPLE_RATE} Hz, got {got}")
        batched = wave if wave.ndim == 2 else wave[None]
        x = batched.to(self.window.dtype)
        emphasised = torch.cat([x[:, :1], x[:, 1:] - PREEMPHASIS * x[:, :-1]], dim=1)
        spectrum = torch.stft(
            emphasised,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        ).abs()  # (B, 401, F)
        mel = torch.matmul(self.filterbank, spectrum)  # (B, 80, F)
        decibels = 20.0 * torch.log10(mel.clamp_min(AMPLITUDE_FLOOR)) - REF_LEVEL_DB
        scaled = (2.0 * MAX_ABS_VALUE) * (decibels - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
        out = scaled.clamp(-MAX_ABS_VALUE, MAX_ABS_VALUE).to(wave.dtype)
        return out if wave.ndim == 2 else out[0]


_LOG_MEL_CACHE: dict[tuple[torch.device, torch.dtype], LogMel] = {}


def log_mel(wave: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Functional :class:`LogMel`: ``(S,) -> (80, 1 + S' // 200)``, ``(B, S) -> (B, 80, 1 + S' // 200)``.

    ``sample_rate`` is the rate of ``wave``; audio at another rate than 16 kHz is resampled first
    (:func:`resample`, ``S'`` samples at 16 kHz), so ``log_mel(*read_wav(path))`` is right for any
    file. Reuses one module per (device, dtype) of ``wave``; float64 waves are computed in float64.
    """
    if not isinstance(wave, Tensor):
        raise ValueError(f"log_mel: expected a float waveform tensor (S,) or (B, S), got {type(wave).__name__}")
    if sample_rate != SAMPLE_RATE:
        wave = resample(wave, sample_rate, SAMPLE_RATE)
    compute_dtype = torch.float64 if wave.dtype == torch.float64 else torch.float32
    key = (wave.device, compute_dtype)
    module = _LOG_MEL_CACHE.get(key)
    if module is None:
        module = _LOG_MEL_CACHE[key] = LogMel(compute_dtype).to(wave.device)
    return module(wave)


def read_wav(path: str | Path, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """Read a 16-bit PCM WAV file -> ``(wave (S,) float32 in [-1, 1), sample_rate)``.

    Several channels are averaged to mono. ``sample_rate=None`` returns the file's own samples
    and rate; with ``sample_rate`` given, a file at another rate is resampled to it
    (:func:`resample`) and that rate is returned. A file that is not a WAV (empty, truncated
    header, another container) raises ValueError naming it. Other encodings (24-bit, float, compressed):
    ``unisync_loss.media.read_audio`` reads them through PyAV.
    """
    try:
        f = wave_io.open(str(path), "rb")
    except (EOFError, wave_io.Error) as error:  # the wave module names neither the file nor the problem
        problem = "empty or truncated header" if isinstance(error, EOFError) else error
        raise ValueError(f"{path}: unreadable WAV ({problem}); expected a 16-bit PCM WAV file") from error
    with f:
        width, channels, rate, frames = f.getsampwidth(), f.getnchannels(), f.getframerate(), f.getnframes()
        if width != 2:
            raise ValueError(
                f"{path}: {8 * width}-bit samples; expected 16-bit PCM "
                "(unisync_loss.media.read_audio reads other encodings through PyAV)"
            )
        data = f.readframes(frames)
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels).astype(np.float32)
    wave = torch.from_numpy(samples.mean(axis=1) / _PCM16_SCALE)
    if sample_rate is not None and rate != sample_rate:
        return resample(wave, rate, sample_rate), sample_rate
    return wave, rate


def resample(wave: Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE, lowpass_width: int = 6, rolloff: float = 0.99) -> Tensor:
    """Band-limited resampling ``(..., S) -> (..., ceil(S · new_rate / orig_rate))``, on ``wave``'s device.

    Windowed-sinc interpolation (Hann-squared window of ``lowpass_width`` zero crossings, cut-off at
    ``rolloff`` times the lower Nyquist frequency), computed as one strided convolution with one
    kernel per output phase after reducing the rates by their gcd (44.1 kHz -> 16 kHz: 160
    phases of 441 input samples). Same scheme as ``torchaudio.functional.resample``'s default.
    """
    for label, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise ValueError(f"resample: {label} must be a positive integer in Hz, got {rate!r}")
    if not isinstance(wave, Tensor) or not wave.is_floating_point() or wave.ndim == 0:
        got = f"{tuple(wave.shape)} {wave.dtype}" if isinstance(wave, Tensor) else type(wave).__name__
        raise ValueError(f"resample: expected a float waveform (..., S), got {got}")
    if orig_rate == new_rate:
        return wave
    common = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // common, new_rate // common
    cutoff = min(orig, new) * rolloff
    width = math.ceil(lowpass_width * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64, device=wave.device) / orig  # (L,)
    phases = -torch.arange(new, dtype=torch.float64, device=wave.device)[:, None] / new  # (new, 1)
    t = ((phases + taps) * cutoff).clamp(-lowpass_width, lowpass_width)  # (new, L) in input-rate cycles
    window = torch.cos(t * math.pi / lowpass_width / 2).square()
    nonzero = torch.where(t == 0, torch.ones_like(t), t)
    kernels = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * nonzero) / (math.pi * nonzero))  # sinc
    kernels = (kernels * window * (cutoff / orig)).to(wave.dtype)[:, None, :]  # (new, 1, L)
    flat = wave.reshape(-1, wave.shape[-1])
    padded = torch.nn.functional.pad(flat[:, None, :], (width, width + orig))
    out = torch.nn.functional.conv1d(padded, kernels, stride=orig)  # (B, new, frames)
    length = math.ceil(new * wave.shape[-1] / orig)
    return out.transpose(1, 2).reshape(flat.shape[0], -1)[:, :length].reshape(*wave.shape[:-1], length)


def write_wav(path: str | Path, wave: Tensor, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write a mono wave ``(S,)`` (float in [-1, 1], clipped) as 16-bit PCM WAV; returns the path."""
    if not isinstance(wave, Tensor) or wave.ndim != 1 or not wave.is_floating_point():
        got = f"{tuple(wave.shape)} {wave.dtype}" if isinstance(wave, Tensor) else type(wave).__name__
        raise ValueError(f"write_wav: expected a float mono wave (S,), got {got}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise ValueError(f"write_wav: sample_rate must be a positive integer, got {sample_rate!r}")
    pcm = (wave.detach().double().cpu() * (_PCM16_SCALE - 1)).round().clamp(-_PCM16_SCALE, _PCM16_SCALE - 1)
    path = Path(path)
    with wave_io.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.to(torch.int16).numpy().astype("<i2").tobytes())
    return path
