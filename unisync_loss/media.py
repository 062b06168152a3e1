"""Reading real media with PyAV: video frames at 25 fps and audio at 16 kHz mono.

Everything downstream (windows, metrics, the face pipeline) works on video at 25 fps and audio at
16 kHz; this module brings any file PyAV (FFmpeg) can decode onto that time base.

**Frame-rate rule.** Output frame ``i`` is the source frame *on screen* at ``t_i = t_0 + i / 25``
s, where ``t_0`` is the timestamp of the first decoded frame: the last source frame whose
timestamp is ``<= t_i`` (plus 1 ms for timestamp rounding). The output has
``floor((t_end - t_0) · 25)`` frames, ``t_end`` = last timestamp + one source frame duration.
A 25 fps file comes out unchanged; 30 fps drops every sixth frame (output ``i`` = source
``floor(1.2 i)``); 50 fps keeps every other frame; a frame missing from the stream (e.g. an
undecodable one) is covered by the one before it, so audio and video stay aligned.

**Audio.** The first audio stream (or a separate file) is decoded, averaged to mono and resampled
to 16 kHz with :func:`unisync_loss.audio.resample`. Sample 0 of the result is the instant of the
first video frame: audio that starts earlier is cut, audio that starts later gets silence in
front (both reported in :attr:`Media.audio_shift_s`). A separate audio file is taken to start
with the first video frame.

Frames are RGB ``(n, H, W, 3)`` uint8 (the decoder layout), scaled so that the longer side is at
most ``max_side`` pixels (PyAV's scaler, once per frame while decoding), which keeps a long 1080p
clip in memory: 640 px, 25 fps = 17 MB per second.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS, resample

DEFAULT_MAX_SIDE = 640
"""Longer side of decoded frames in pixels (a face of a 1080p talking-head clip keeps > 150 px)."""
_TIMESTAMP_SLACK_S = 1e-3


class MediaError(ValueError):
    """A media file is missing, unreadable, or lacks what was asked of it (one line for users)."""


@dataclass(frozen=True)
class Media:
    """One clip on the common time base.

    Attributes:
        frames: ``(n, H, W, 3)`` uint8 RGB frames at 25 fps.
        wave: ``(S,)`` float32 mono audio at 16 kHz, sample 0 at frame 0.
        source_fps: the video stream's own average frame rate.
        source_size: ``(height, width)`` of the source frames before scaling.
        audio_shift_s: seconds of audio cut from its start (> 0) or of silence put in front (< 0)
            to align sample 0 with the first frame.
    """

    frames: Tensor
    wave: Tensor
    source_fps: float
    source_size: tuple[int, int]
    audio_shift_s: float = 0.0

    @property
    def seconds(self) -> float:
        """Video duration in seconds (frames / 25)."""
        return self.frames.shape[0] / VIDEO_FPS


def _import_av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError('reading video needs PyAV: pip install "unisync-loss[media]"') from error
    return av


def _open(path: str | Path):
    """Open a container; ``MediaError`` for a missing or undecodable file."""
    av = _import_av()
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise MediaError(f"{path}: not a readable media file ({error})") from error


def _scaled_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """``(height, width)`` shrunk so the longer side is at most ``max_side`` (even sizes, never enlarged)."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


def source_frame_indices(timestamps: Tensor | np.ndarray, source_fps: float, fps: float = VIDEO_FPS) -> np.ndarray:
    """Index of the source frame shown at each output frame (the module's frame-rate rule).

    ``timestamps``: ``(m,)`` increasing presentation times in seconds of the decoded source
    frames; ``source_fps`` gives the duration of the last one. Returns ``(n,)`` int64.
    """
    times = np.asarray(timestamps, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"source_frame_indices: expected (m >= 1,) timestamps, got shape {times.shape}")
    end = times[-1] + 1.0 / source_fps
    count = int(math.floor((end - times[0]) * fps + _TIMESTAMP_SLACK_S))
    targets = times[0] + np.arange(count) / fps + _TIMESTAMP_SLACK_S
    return np.searchsorted(times, targets, side="right") - 1


@dataclass(frozen=True)
class Video:
    """Decoded frames on the 25 fps time base.

    Attributes:
        frames: ``(n, H, W, 3)`` uint8 RGB.
        source_fps: the stream's own average frame rate.
        source_size: ``(height, width)`` of the stored frames before scaling.
        start_s: timestamp of the first decoded frame in seconds (the container clock).
    """

    frames: Tensor
    source_fps: float
    source_size: tuple[int, int]
    start_s: float


def read_video(path: str | Path, max_side: int | None = DEFAULT_MAX_SIDE, fps: float = VIDEO_FPS) -> Video:
    """Decode the first video stream to frames at ``fps`` (the module's frame-rate rule).

    ``max_side`` bounds the longer side of the frames (``None``: as stored). ``MediaError`` for a
    missing file, a file without video or without a decodable frame.
    """
    av = _import_av()
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_fps = float(stream.average_rate or stream.guessed_rate or fps)
        frames, times, source, size = [], [], (0, 0), (0, 0)
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if not frames:
                    source = (frame.height, frame.width)
                    size = _scaled_size(frame.height, frame.width, max_side)
                frames.append(frame.to_ndarray(width=size[1], height=size[0], format="rgb24"))
                times.append(frame.time)
        except av.error.FFmpegError as error:
            if not frames:
                raise MediaError(f"{path}: the video stream cannot be decoded ({error})") from error
    if not frames:
        raise MediaError(f"{path}: the video stream holds no frame (zero-length video)")
    order = np.argsort(times, kind="stable")
    ordered_times = np.asarray(times, dtype=np.float64)[order]
    indices = source_frame_indices(ordered_times, source_fps, fps)
    if indices.size == 0:
        raise MediaError(f"{path}: the video is shorter than one frame at {fps:g} fps")
    stacked = np.stack([frames[order[i]] for i in indices])
    return Video(torch.from_numpy(stacked), source_fps, source, float(ordered_times[0]))


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> tuple[Tensor, float]:
    """Decode the first audio stream -> ``(wave (S,) float32 mono at sample_rate, start time in s)``.

    Any codec, sample format and layout PyAV decodes; channels are averaged, the rate converted
    with :func:`unisync_loss.audio.resample`. ``MediaError`` for a missing file, a file without an
    audio stream or with no audio sample.
    """
    av = _import_av()
    chunks, start = [], None
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream (give the audio as a separate file)")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate)
        to_float = av.AudioResampler(format="fltp")  # same layout and rate, planar float32 in [-1, 1]
        try:
            for frame in container.decode(stream):
                if start is None and frame.time is not None:
                    start = float(frame.time)
                chunks.extend(converted.to_ndarray().mean(axis=0) for converted in to_float.resample(frame))
        except av.error.FFmpegError as error:
            if not chunks:
                raise MediaError(f"{path}: the audio stream cannot be decoded ({error})") from error
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise MediaError(f"{path}: the audio stream holds no sample (zero-length audio)")
    return resample(torch.from_numpy(wave), rate, sample_rate), start or 0.0


def read_media(video: str | Path, audio: str | Path | None = None, max_side: int | None = DEFAULT_MAX_SIDE) -> Media:
    """Frames at 25 fps and 16 kHz mono audio of a clip, aligned (module docstring).

    ``audio``: a separate audio file (WAV or anything PyAV reads) that starts with the first
    frame; ``None`` takes the video's own audio track.
    """
    decoded = read_video(video, max_side)
    wave, audio_start = read_audio(audio if audio is not None else video)
    lead = 0.0 if audio is not None else decoded.start_s - audio_start  # > 0: audio starts before the video
    samples = round(abs(lead) * SAMPLE_RATE)
    if lead > 0:
        wave = wave[samples:]
    elif samples:
        wave = torch.cat([torch.zeros(samples), wave])
    if wave.numel() == 0:
        raise MediaError(f"{audio or video}: no audio left after aligning it with the first video frame")
    return Media(decoded.frames, wave, decoded.source_fps, decoded.source_size, lead)
