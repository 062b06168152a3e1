"""Source-filter speech synthesis at 16 kHz from an :class:`~pretrain.synth.articulation.Utterance`.

Sources (time domain, all vectorised):

* voiced: a glottal impulse train from an f0 contour (speaker median f0, phrase declination reset
  after pauses, pitch accents on stressed vowels, slow drift, per-period jitter and shimmer),
  mixed with breathy aspiration noise; its loudness follows voicing and jaw opening;
* aspiration after voiceless plosive releases (through the vocal tract, like the voiced source);
* frication noise during fricatives and a decaying noise burst at every plosive release.

Filters (short-time Fourier domain, one spectral envelope per 8 ms frame, overlap-add with
``torch.stft`` / ``torch.istft``): the voiced path goes through a cascade of four formant
resonators whose frequencies follow the mouth (jaw up → F1 up; spreading → F2 up; rounding → F2 and
F3 down; closure → F1 down and −30 dB), scaled by the speaker's vocal-tract length, with a glottal
spectral tilt; nasals and voice bars use a low-frequency murmur envelope instead; the noise path is
shaped by the place of articulation. Background noise (amplitude ∝ 1/f above 100 Hz, like room
rumble) is added at a given SNR and the result is peak-normalised.

The articulation comes from :func:`~pretrain.synth.articulation.articulation_at`, the same
analytic trajectory the face is driven by, so audio and mouth share their timing exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pretrain.synth.articulation import (ALVEOLAR, BILABIAL, LABIODENTAL, PAUSE, VELAR, Utterance, articulation_at,
                                        smoothed_boxes)

SAMPLE_RATE = 16_000
CONTROL_RATE = 1000
"""Rate (Hz) at which gains and the f0 contour are computed before interpolation to samples / frames."""
N_FFT = 512
HOP = 128
PEAK = 0.9
"""Peak amplitude after normalisation (headroom below 1)."""

# Noise spectra per place of articulation: (centre Hz, half-power bandwidth Hz, gain) at tract scale 1.
_NOISE_SHAPES = {BILABIAL: (1000.0, 2500.0, 0.8), LABIODENTAL: (4500.0, 7000.0, 0.7),
                 ALVEOLAR: (5500.0, 3000.0, 1.0), VELAR: (2100.0, 700.0, 1.0)}
_BURST_GAIN = {BILABIAL: 0.35, ALVEOLAR: 0.5, VELAR: 0.45}
_BURST_DECAY_S = 0.007
_ASPIRATION_DECAY_S = 0.025
_ASPIRATION_GAIN = 0.12
PULSE_GAIN = 8.0
"""Glottal impulse amplitude at full loudness and f0 = 100 Hz."""


@dataclass(frozen=True)
class Voice:
    """A speaker's voice.

    Attributes:
        f0_hz: median fundamental frequency (Hz).
        f0_range: total f0 span in semitones; the contour stays within ``f0_hz · 2^(±f0_range / 24)``.
        tract_scale: vocal-tract length relative to 17.5 cm; formant frequencies are divided by it.
        tilt_db: extra spectral tilt of the voiced source in dB per octave above 500 Hz (≤ 0 is darker).
        jitter: per-period standard deviation of the glottal period, as a fraction of the period.
        shimmer: per-period standard deviation of pulse amplitude, as a fraction.
        breathiness: standard deviation of the aspiration noise mixed into the voiced source at full
            loudness (0.01 clear – 0.1 breathy; the pulses carry ``PULSE_GAIN``).
        speaking_rate: tempo factor for :func:`~pretrain.synth.articulation.sample_utterance`.
    """

    f0_hz: float
    f0_range: float
    tract_scale: float
    tilt_db: float
    jitter: float
    shimmer: float
    breathiness: float
    speaking_rate: float

    @property
    def f0_bounds(self) -> tuple[float, float]:
        """(lowest, highest) f0 in Hz the contour can take, before jitter."""
        half = 2.0 ** (self.f0_range / 24.0)
        return self.f0_hz / half, self.f0_hz * half


def sample_voice(rng: np.random.Generator) -> Voice:
    """A random adult voice: low (f0 85–140 Hz, long tract) or high (f0 165–250 Hz, short tract), equally likely."""
    if rng.random() < 0.5:
        f0, tract = rng.uniform(85.0, 140.0), rng.uniform(1.0, 1.12)
    else:
        f0, tract = rng.uniform(165.0, 250.0), rng.uniform(0.82, 0.95)
    return Voice(f0_hz=f0, f0_range=rng.uniform(4.0, 9.0), tract_scale=tract, tilt_db=rng.uniform(-2.5, 0.5),
                 jitter=rng.uniform(0.004, 0.015), shimmer=rng.uniform(0.03, 0.1), breathiness=rng.uniform(0.01, 0.08),
                 speaking_rate=rng.uniform(0.85, 1.2))


def _f0_contour(utterance: Utterance, voice: Voice, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """f0 in Hz at ``times``: declination per phrase (reset after pauses) + accents + drift, clipped to the range."""
    half = voice.f0_range / 2.0
    pause_ends = utterance.end[utterance.classes == PAUSE]
    pauses = pause_ends.size
    phrase_start = np.concatenate([[0.0], pause_ends])
    phrase_len = np.diff(np.concatenate([phrase_start, [utterance.duration]])).clip(min=0.3)
    phrase = np.clip(np.searchsorted(phrase_start, times, side="right") - 1, 0, pauses)
    position = np.clip((times - phrase_start[phrase]) / phrase_len[phrase], 0.0, 1.0)
    declination = 0.5 * half * (1.0 - 2.0 * position) + rng.uniform(-0.2, 0.2, size=pauses + 1)[phrase] * half
    accents = smoothed_boxes(utterance, times, 0.04) @ utterance.accent
    knots = rng.normal(size=int(utterance.duration / 0.25) + 2)
    drift = 0.15 * half * np.interp(times, np.arange(knots.size) * 0.25, knots)
    semitones = np.clip(declination + accents + drift, -half, half)
    return voice.f0_hz * 2.0 ** (semitones / 12.0)


def _pulse_train(f0: np.ndarray, amplitude: np.ndarray, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """Glottal impulses (n,) from per-sample f0 (Hz) and amplitude, with jitter and shimmer."""
    n = f0.size
    cycles = np.cumsum(f0 / SAMPLE_RATE)
    onsets = np.flatnonzero(np.diff(np.floor(cycles))) + 1
    period = SAMPLE_RATE / f0[onsets]
    positions = np.rint(onsets + voice.jitter * period * rng.standard_normal(onsets.size)).astype(np.int64)
    gains = amplitude[onsets] * np.clip(1.0 + voice.shimmer * rng.standard_normal(onsets.size), 0.2, None)
    inside = (positions >= 0) & (positions < n)
    return np.bincount(positions[inside], weights=gains[inside], minlength=n)


def _resonance(freqs: torch.Tensor, centre: torch.Tensor, bandwidth: torch.Tensor | float) -> torch.Tensor:
    """Magnitude of a two-pole resonator with unit gain at 0 Hz, broadcast over (..., bins)."""
    half = bandwidth / 2.0
    denominator = ((freqs - centre) ** 2 + half ** 2) * ((freqs + centre) ** 2 + half ** 2)
    return (centre ** 2 + half ** 2) * torch.rsqrt(denominator)


def _oral_envelope(mouth: torch.Tensor, freqs: torch.Tensor, tract_scale: float) -> torch.Tensor:
    """Vocal-tract magnitude response from mouth parameters (frames, 4) -> (frames, bins).

    Formants F1–F4 follow jaw / spread / round / closure and are divided by ``tract_scale``; closure
    also widens B1 and attenuates the whole response by up to 30 dB.
    """
    jaw, spread, round_, closure = mouth.T
    formants = torch.stack([
        (250.0 + 600.0 * jaw - 60.0 * round_) * (1.0 - 0.4 * closure),
        1350.0 + 1100.0 * spread - 650.0 * round_ - 250.0 * jaw,
        2500.0 + 400.0 * spread - 300.0 * round_,
        3500.0 + 200.0 * spread - 150.0 * round_,
    ]) / tract_scale
    b1 = 60.0 + 40.0 * jaw + 80.0 * closure
    bandwidths = torch.stack([b1, *(torch.full_like(b1, b) for b in (90.0, 120.0, 200.0))])
    response = _resonance(freqs, formants[..., None], bandwidths[..., None]).prod(dim=0)
    return response * (1.0 - 0.97 * closure)[:, None]


def _control_signals(utterance: Utterance, control: np.ndarray, strength: float) -> tuple[np.ndarray, ...]:
    """Articulation and source gains on the control grid ``control`` (seconds, (c,)).

    Returns:
        mouth (c, 4), voiced loudness (c,) (voicing × (0.3 + 0.7 · jaw)), turbulence gain (c,)
        (frication + release bursts), aspiration gain (c,) (after voiceless releases).
    """
    mouth = articulation_at(utterance, control, strength)
    loudness = (smoothed_boxes(utterance, control, 0.008) @ utterance.voicing) * (0.3 + 0.7 * mouth[:, 0])
    frication = smoothed_boxes(utterance, control, 0.006) @ utterance.frication
    since = control[:, None] - utterance.end[utterance.burst][None, :]
    after = np.where(since >= 0.0, since, np.inf)
    burst_gain = np.array([_BURST_GAIN[c] for c in utterance.classes[utterance.burst]])
    burst = np.exp(-after / _BURST_DECAY_S) @ burst_gain
    aspiration = np.exp(-after / _ASPIRATION_DECAY_S) @ (_ASPIRATION_GAIN * utterance.aspirated[utterance.burst])
    return mouth, loudness, frication + burst, aspiration


def _envelopes(utterance: Utterance, voice: Voice, mouth: torch.Tensor,
               frame_t: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude responses (frames, bins) of the voiced path and of the turbulence-noise path.

    Voiced: glottal tilt × (oral formant envelope, cross-faded to a 250 Hz murmur for nasals and
    voice bars). Noise: the place-of-articulation spectra of the nearest consonants.
    """
    freqs = torch.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    scale = voice.tract_scale
    source_tilt = (torch.rsqrt(1.0 + (freqs / 300.0) ** 2) * freqs ** 2 / (freqs ** 2 + 60.0 ** 2)
                   * 10.0 ** (voice.tilt_db / 20.0 * torch.log2(torch.clamp(freqs, min=500.0) / 500.0)))
    murmur_w = smoothed_boxes(utterance, frame_t, 0.01) @ utterance.murmur.astype(np.float64)
    murmur_w = torch.from_numpy(murmur_w).float()[:, None]
    murmur = _resonance(freqs, torch.tensor(250.0 / scale), 120.0)
    voiced = ((1.0 - murmur_w) * _oral_envelope(mouth, freqs, scale) + murmur_w * murmur) * source_tilt
    places = np.array(list(_NOISE_SHAPES))
    place_w = smoothed_boxes(utterance, frame_t, 0.015) @ (utterance.classes[:, None] == places[None]).astype(float)
    place_w = torch.from_numpy(place_w / (place_w.sum(axis=1, keepdims=True) + 1e-3)).float()
    shapes = torch.stack([gain / (1.0 + ((freqs - centre / scale) / (width / 2.0)) ** 2)
                          for centre, width, gain in _NOISE_SHAPES.values()])
    return voiced, place_w @ shapes


def synthesize(utterance: Utterance, voice: Voice, rng: np.random.Generator, snr_db: float | None = 30.0,
               strength: float = 1.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Synthesise the utterance with ``voice``: (round(duration · 16000),) float32, peak ``PEAK``.

    Args:
        utterance: timed units (see :func:`~pretrain.synth.articulation.sample_utterance`).
        voice: the speaker's voice.
        rng: the only source of randomness (same state → identical samples).
        snr_db: ratio of speech power (over the whole clip) to background-noise power in dB; None for no noise.
        strength: articulation strength, as in :func:`~pretrain.synth.articulation.mouth_track`.
        sample_rate: must be 16000 (the corpus rate); present so callers state it.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"synthesize: expected sample_rate {SAMPLE_RATE}, got {sample_rate}")
    n = int(round(utterance.duration * SAMPLE_RATE))
    control = np.arange(int(np.ceil(utterance.duration * CONTROL_RATE)) + 2) / CONTROL_RATE
    sample_t = (np.arange(n) + 0.5) / SAMPLE_RATE
    mouth, loudness, turbulence_gain, aspiration = _control_signals(utterance, control, strength)
    f0 = np.interp(sample_t, control, _f0_contour(utterance, voice, control, rng))
    loudness = np.interp(sample_t, control, loudness)

    # Sources: impulses scaled by 1/sqrt(f0) so loudness does not depend on pitch, plus noises.
    pulses = _pulse_train(f0, PULSE_GAIN * loudness * np.sqrt(100.0 / f0), voice, rng)
    noise = rng.standard_normal((2, n))
    glottal = pulses + noise[0] * (voice.breathiness * loudness + np.interp(sample_t, control, aspiration))
    turbulence = noise[1] * np.interp(sample_t, control, turbulence_gain)

    window = torch.hann_window(N_FFT)
    spec = torch.stft(torch.from_numpy(np.stack([glottal, turbulence])).float(), N_FFT, HOP, window=window,
                      return_complex=True)
    frame_t = (np.arange(spec.shape[-1]) * HOP + 0.5) / SAMPLE_RATE
    frame_mouth = np.stack([np.interp(frame_t, control, mouth[:, c]) for c in range(4)], axis=1)
    voiced_env, noise_env = _envelopes(utterance, voice, torch.from_numpy(frame_mouth).float(), frame_t)
    filtered = spec[0] * voiced_env.T + spec[1] * noise_env.T
    speech = torch.istft(filtered, N_FFT, HOP, window=window, length=n).double().numpy()

    if snr_db is not None:
        background = np.fft.irfft(np.fft.rfft(rng.standard_normal(n))
                                  / np.maximum(np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE), 100.0), n)
        power = np.mean(speech ** 2)
        speech = speech + background * np.sqrt(power / (np.mean(background ** 2) * 10.0 ** (snr_db / 10.0)))
    peak = np.max(np.abs(speech))
    return (speech * (PEAK / peak if peak > 0 else 0.0)).astype(np.float32)
