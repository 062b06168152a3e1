"""One procedural talking-head clip: a single utterance rendered as audio and as a moving face.

Pipeline of :func:`generate_clip` (one random stream per stage, all derived from
``(seed, speaker index, clip index)``):

1. an utterance (babble of timed speech units) at the speaker's speaking rate;
2. audio at 16 kHz from it by the source-filter synthesiser (the articulation is sampled at the
   audio rate inside the synthesiser), background noise at a per-clip SNR, peak-normalised;
3. the stand-in HuBERT features of that audio (50 Hz, 1024-d) — a stand-in, not HuBERT;
4. the same articulation sampled at 25 fps, shifted by the clip's audio-visual offset (the speaker's
   personal lead/lag plus per-clip jitter), drives expression components 0..3; blinks, brows,
   smile and drift (components 4..63), head pose and lighting come from streams that never see the
   utterance;
5. 3D landmarks of the speaker's face, posed, projected to pixels, rasterised to RGB crops and
   CelebAMask-HQ parsing labels.

Audio and video therefore share one analytic articulation with known timing: video frame ``i``
(interval ``[i/25, (i+1)/25)`` s) shows the mouth the audio produces at ``i/25 + av_offset_s``.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pretrain.synth.articulation import mouth_track, sample_utterance, unit_labels
from pretrain.synth.face import FaceModel, apply_pose, expression_track, pose_track, project
from pretrain.synth.hubert_standin import hubert_standin
from pretrain.synth.presets import Preset, get_preset
from pretrain.synth.render import render_frames, sample_scene
from pretrain.synth.speakers import Speaker
from pretrain.synth.speech import synthesize
from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS, log_mel

CLIP_STREAM = 2
"""Tag mixed into the seed of clip draws (speakers use another tag)."""
REPRESENTATION_NAMES = ("mel", "hubert", "rgb", "parsing", "landmarks", "3dmm")
STAGES = ("speech", "hubert", "face", "render")
"""Names of the stages timed by :func:`generate_clip` (``timings`` argument)."""


@dataclass(frozen=True)
class Clip:
    """All canonical tensors of one clip (``n`` video frames at 25 fps, ``S`` samples at 16 kHz).

    Attributes:
        clip_id: ``spk003/clip007``.
        speaker_id: ``spk003``.
        wave: (S,) float32 in [-1, 1], 16 kHz, background noise included.
        hubert: (2n, 1024) float32 stand-in HuBERT features (50 Hz).
        rgb: (n, 3, H, W) uint8 RGB face crops.
        parsing: (n, H, W) uint8 CelebAMask-HQ labels (10 mouth interior, 11 upper lip, 12 lower lip, ...).
        landmarks: (n, 68, 3) float32 posed iBUG-68 points in model units (x right, y up, z to the camera).
        landmarks2d: (n, 68, 2) float32 (x, y) image pixels (origin top-left, y down).
        coeffs: (n, 64) float32 expression coefficients (the ``3dmm`` representation); 0..3 = jaw,
            spread, round, closure as shown by the face.
        mouth: (n, 4) float32 ground-truth articulation (jaw, spread, round, closure) in [0, 1] shown
            by frame i (strength applied, shifted by ``av_offset_s``).
        units: (n,) int64 speech-unit class under each frame (indices into
            ``pretrain.synth.articulation.UNIT_CLASSES``), in the face's timeline.
        pose: (n, 7) float32 head pose: yaw, pitch, roll (degrees), tx, ty, tz (model units), scale.
        av_offset_s: this clip's audio-visual offset in seconds (the speaker's personal lead/lag plus
            per-clip jitter); positive = the mouth moves ahead of the audio.
        snr_db: speech-to-background-noise ratio of the audio, dB.
    """

    clip_id: str
    speaker_id: str
    wave: Tensor
    hubert: Tensor
    rgb: Tensor
    parsing: Tensor
    landmarks: Tensor
    landmarks2d: Tensor
    coeffs: Tensor
    mouth: Tensor
    units: Tensor
    pose: Tensor
    av_offset_s: float
    snr_db: float

    @property
    def n_frames(self) -> int:
        """Number of video frames ``n``."""
        return self.rgb.shape[0]

    @property
    def seconds(self) -> float:
        """Duration of the audio in seconds."""
        return self.wave.shape[0] / SAMPLE_RATE

    def representation(self, name: str) -> Tensor:
        """Canonical unbatched tensor of representation ``name`` (SPEC "Time base and canonical tensors").

        mel (80, 1 + S // 200) float32 (computed by ``unisync_loss.audio.log_mel``), hubert (2n, 1024),
        rgb (n, 3, H, W) uint8, parsing (n, H, W) uint8, landmarks (n, 68, 3), 3dmm (n, 64).
        """
        if name == "mel":
            return log_mel(self.wave)
        tensors = {"hubert": self.hubert, "rgb": self.rgb, "parsing": self.parsing, "landmarks": self.landmarks,
                   "3dmm": self.coeffs}
        if name not in tensors:
            raise ValueError(f"Clip.representation: expected one of {REPRESENTATION_NAMES}, got {name!r}")
        return tensors[name]


@contextmanager
def timed(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[stage]`` (seconds) when ``timings`` is given."""
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def generate_clip(speaker: Speaker, seconds: float, preset: str | Preset, seed: int, image_size: int | None = None,
                  clip_index: int = 0, timings: dict[str, float] | None = None) -> Clip:
    """Generate one clip of ``speaker`` (see the module docstring).

    Args:
        speaker: from :func:`~pretrain.synth.speakers.make_speaker`.
        seconds: duration; ``n = round(25 · seconds)`` frames, ``round(16000 · seconds)`` samples.
        preset: preset name or :class:`~pretrain.synth.presets.Preset` (noise, nuisance amplitudes).
        seed: corpus seed; the clip is deterministic in (seed, speaker.index, clip_index).
        image_size: crop height = width in pixels; None takes the preset's (96).
        clip_index: position of the clip among the speaker's clips (names it ``clip007``).
        timings: when given, seconds spent per stage (:data:`STAGES`) are added to it.
    Returns:
        the :class:`Clip`.
    """
    preset = get_preset(preset)
    image_size = preset.image_size if image_size is None else image_size
    n = int(round(seconds * VIDEO_FPS))
    if n < 1 or image_size < 16 or seed < 0 or clip_index < 0:
        raise ValueError(f"generate_clip: expected seconds >= {1 / VIDEO_FPS}, image_size >= 16, seed >= 0 and "
                         f"clip_index >= 0, got seconds={seconds}, image_size={image_size}, seed={seed}, "
                         f"clip_index={clip_index}")
    streams = np.random.SeedSequence([seed, CLIP_STREAM, speaker.index, clip_index]).spawn(6)
    rng_clip, rng_utterance, rng_voice, rng_expression, rng_pose, rng_scene = (np.random.default_rng(s) for s in streams)
    habits = speaker.habits
    snr_db = float(rng_clip.uniform(*preset.snr_db))
    av_offset_s = habits.av_offset_s + float(rng_clip.normal(0.0, preset.av_jitter_ms)) / 1000.0

    with timed(timings, "speech"):
        utterance = sample_utterance(rng_utterance, seconds, speaker.speaking_rate)
        wave = synthesize(utterance, speaker.voice, rng_voice, snr_db=snr_db, strength=habits.strength)
    with timed(timings, "hubert"):
        hubert = hubert_standin(wave, n)
    with timed(timings, "face"):
        mouth = mouth_track(utterance, VIDEO_FPS, habits.strength, av_offset_s)
        coeffs = expression_track(mouth, rng_expression, strength=1.0, blink_rate_hz=habits.blink_rate_hz,
                                  brow_amp=preset.brow_amp, smile_amp=preset.smile_amp, drift_amp=preset.drift_amp)
        motion = habits.head_motion
        pose = pose_track(rng_pose, n, rot_deg=tuple(motion * r for r in preset.rot_deg), trans=motion * preset.trans,
                          scale_jitter=preset.scale_jitter, smoothness=preset.head_smoothness_s)
        landmarks = apply_pose(FaceModel.default().landmarks(speaker.face.id_coeffs, coeffs), pose)
        landmarks2d = project(landmarks, image_size)
    with timed(timings, "render"):
        scene = sample_scene(rng_scene, n, light_amp=preset.light_amp, light_drift=preset.light_drift,
                             flicker=preset.flicker)
        rgb, parsing = render_frames(landmarks2d, speaker.face, scene, image_size)

    pose_columns = np.concatenate([pose.angles_deg, pose.translation, pose.scale[:, None]], axis=1)
    return Clip(
        clip_id=f"{speaker.speaker_id}/clip{clip_index:03d}",
        speaker_id=speaker.speaker_id,
        wave=torch.from_numpy(wave),
        hubert=torch.from_numpy(hubert),
        rgb=rgb,
        parsing=parsing,
        landmarks=torch.from_numpy(landmarks),
        landmarks2d=torch.from_numpy(landmarks2d),
        coeffs=torch.from_numpy(coeffs),
        mouth=torch.from_numpy(mouth),
        units=torch.from_numpy(unit_labels(utterance, VIDEO_FPS, av_offset_s)),
        pose=torch.from_numpy(pose_columns.astype(np.float32)),
        av_offset_s=av_offset_s,
        snr_db=snr_db,
    )
