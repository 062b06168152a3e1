"""Difficulty presets of the procedural corpus: noise, articulation strength, nuisance motion, AV offsets.

A :class:`Preset` holds every knob that makes a clip easier or harder to judge for sync. Ranges
``(low, high)`` are sampled uniformly: per speaker for habits (articulation strength, head-motion
style, blink rate, personal audio-visual offset), per clip for the background-noise SNR.

Every nuisance (head pose, blinks, brows, smile, expression drift, lighting) is drawn from random
streams that never see the utterance, so on every preset nothing but the mouth (and the chin that
follows the jaw) correlates with the audio. The presets differ in how hard the mouth is to read:

* ``easy``: clean audio, full articulation, a nearly still head, no personal AV offset;
* ``default``: moderate noise and nuisance, personal offsets of a few ms (well inside one frame);
* ``hard``: noisy audio, weak articulation, large head motion and lighting changes, personal
  offsets up to about half a frame, so a SyncNet-style recipe does not saturate.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Difficulty settings of the procedural corpus.

    Attributes:
        name: preset name, recorded in the manifest.
        snr_db: (low, high) speech-to-background-noise ratio in dB, drawn per clip.
        strength: (low, high) articulation strength per speaker (scales jaw / spread / round of the
            mouth *and* the formant movements of the voice; closures always seal the lips).
        av_offset_ms: the speaker's personal audio-visual lead/lag is drawn uniformly in
            ``±av_offset_ms`` milliseconds (positive: the mouth moves ahead of the audio).
        av_jitter_ms: per-clip Gaussian jitter (standard deviation, ms) around the personal offset.
        rot_deg: (yaw, pitch, roll) head-rotation standard deviations in degrees.
        trans: head translation standard deviation in model units (face half width ≈ 0.9).
        scale_jitter: relative standard deviation of the head scale.
        head_motion: (low, high) per-speaker factor on ``rot_deg`` and ``trans`` (head-motion style).
        head_smoothness_s: correlation time of head motion, seconds.
        blink_rate_hz: (low, high) per-speaker mean blink rate, blinks per second.
        brow_amp, smile_amp: standard deviation of the slow brow and smile coefficients.
        drift_amp: standard deviation of the random expression-drift coefficients (9..63).
        light_amp: strength of the per-clip directional light gradient.
        light_drift: standard deviation of the slow drift of that gradient.
        flicker: standard deviation of the slow overall brightness variation.
        image_size: default height = width of the face crops in pixels.
    """

    name: str
    snr_db: tuple[float, float]
    strength: tuple[float, float]
    av_offset_ms: float
    av_jitter_ms: float
    rot_deg: tuple[float, float, float]
    trans: float
    scale_jitter: float
    head_motion: tuple[float, float]
    head_smoothness_s: float
    blink_rate_hz: tuple[float, float]
    brow_amp: float
    smile_amp: float
    drift_amp: float
    light_amp: float
    light_drift: float
    flicker: float
    image_size: int = 96

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of every field (tuples become lists), as written into the manifest."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


PRESETS: dict[str, Preset] = {
    "easy": Preset(
        name="easy", snr_db=(35.0, 45.0), strength=(0.9, 1.0), av_offset_ms=0.0, av_jitter_ms=0.0,
        rot_deg=(3.0, 2.0, 1.0), trans=0.01, scale_jitter=0.01, head_motion=(0.8, 1.2), head_smoothness_s=1.0,
        blink_rate_hz=(0.1, 0.3), brow_amp=0.1, smile_amp=0.05, drift_amp=0.2,
        light_amp=0.08, light_drift=0.02, flicker=0.01),
    "default": Preset(
        name="default", snr_db=(15.0, 30.0), strength=(0.7, 1.0), av_offset_ms=10.0, av_jitter_ms=3.0,
        rot_deg=(8.0, 5.0, 3.0), trans=0.03, scale_jitter=0.02, head_motion=(0.6, 1.4), head_smoothness_s=0.8,
        blink_rate_hz=(0.15, 0.5), brow_amp=0.3, smile_amp=0.2, drift_amp=0.5,
        light_amp=0.15, light_drift=0.05, flicker=0.03),
    "hard": Preset(
        name="hard", snr_db=(0.0, 12.0), strength=(0.4, 0.75), av_offset_ms=20.0, av_jitter_ms=8.0,
        rot_deg=(15.0, 10.0, 6.0), trans=0.06, scale_jitter=0.04, head_motion=(0.6, 1.6), head_smoothness_s=0.6,
        blink_rate_hz=(0.2, 0.8), brow_amp=0.6, smile_amp=0.4, drift_amp=1.0,
        light_amp=0.3, light_drift=0.1, flicker=0.08),
}
"""The three presets by name."""


def get_preset(preset: str | Preset) -> Preset:
    """A :class:`Preset` from its name (``easy`` | ``default`` | ``hard``) or passed through."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)} or a Preset, got {preset!r}")
    return PRESETS[preset]
