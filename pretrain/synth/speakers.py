"""Speakers of the procedural corpus: a voice, a face and speaking habits.

A speaker is deterministic given ``(seed, index)`` (:func:`make_speaker`): the same corpus seed
always yields the same 100 people, however many clips or workers are used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pretrain.synth.face import FaceIdentity, sample_identity
from pretrain.synth.presets import Preset, get_preset
from pretrain.synth.speech import Voice, sample_voice

SPEAKER_STREAM = 1
"""Tag mixed into the seed of speaker draws, so they never share a random stream with clip draws."""


@dataclass(frozen=True)
class Habits:
    """How a speaker talks and moves.

    Attributes:
        strength: articulation strength (scales jaw / spread / round of mouth and formants; 1 = full).
        av_offset_s: personal audio-visual lead/lag in seconds; positive = the mouth moves ahead of the
            voice (the face shows at time t what the audio sounds at t + av_offset_s).
        head_motion: factor on the preset's head rotation and translation amplitudes.
        blink_rate_hz: mean blink rate, blinks per second.
    """

    strength: float
    av_offset_s: float
    head_motion: float
    blink_rate_hz: float


@dataclass(frozen=True)
class Speaker:
    """One person of the corpus.

    Attributes:
        speaker_id: folder name, ``spk003``.
        index: position in the corpus (seeds the speaker's clips).
        voice: f0, vocal-tract scale, tilt, jitter, breathiness, speaking rate (:class:`~pretrain.synth.speech.Voice`).
        face: shape coefficients and colours (:class:`~pretrain.synth.face.FaceIdentity`).
        habits: articulation strength, personal AV offset, head-motion style, blink rate.
    """

    speaker_id: str
    index: int
    voice: Voice
    face: FaceIdentity
    habits: Habits

    @property
    def speaking_rate(self) -> float:
        """Tempo factor of the speaker's utterances (1 ≈ 4.5 syllables per second); part of the voice."""
        return self.voice.speaking_rate


def speaker_id(index: int) -> str:
    """Folder name of speaker ``index``: ``spk000``, ``spk001``, ..."""
    return f"spk{index:03d}"


def sample_speaker(rng: np.random.Generator, speaker_id: str, preset: str | Preset, index: int = 0) -> Speaker:
    """Draw a speaker: voice, face, and habits within the ranges of ``preset``.

    Args:
        rng: the only source of randomness.
        speaker_id: name recorded in the clips (``spk003``).
        preset: preset name or :class:`~pretrain.synth.presets.Preset`.
        index: the speaker's position in the corpus.
    """
    preset = get_preset(preset)
    voice = sample_voice(rng)
    face = sample_identity(rng)
    habits = Habits(
        strength=float(rng.uniform(*preset.strength)),
        av_offset_s=float(rng.uniform(-preset.av_offset_ms, preset.av_offset_ms)) / 1000.0,
        head_motion=float(rng.uniform(*preset.head_motion)),
        blink_rate_hz=float(rng.uniform(*preset.blink_rate_hz)),
    )
    return Speaker(speaker_id=speaker_id, index=index, voice=voice, face=face, habits=habits)


def make_speaker(seed: int, index: int, preset: str | Preset) -> Speaker:
    """Speaker ``index`` of the corpus with ``seed``: deterministic in (seed, index, preset)."""
    if seed < 0 or index < 0:
        raise ValueError(f"make_speaker: expected seed >= 0 and index >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, SPEAKER_STREAM, index])
    return sample_speaker(rng, speaker_id(index), preset, index)
