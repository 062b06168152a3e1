"""Writing small test videos with PyAV (H.264 + AAC in mp4, as ffmpeg writes them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

AAC_PRIMING = 1024
"""Samples the AAC encoder puts in front; written with negative timestamps (an edit list), as ffmpeg does."""


def write_video(path: Path, frames: np.ndarray | None, wave: np.ndarray | None, fps: int = 25,
                sample_rate: int = 16_000, channels: int = 1) -> Path:
    """An mp4 (or any container by suffix) of ``frames`` ``(n, H, W, 3)`` uint8 and ``wave`` ``(S,)`` or ``(S, C)`` float.

    ``None`` leaves that stream out; an empty array writes the stream with nothing in it.
    """
    import av

    with av.open(str(path), "w") as container:
        if frames is not None:
            video = container.add_stream("libx264", rate=fps)
            video.height, video.width = (frames.shape[1], frames.shape[2]) if len(frames) else (64, 64)
            video.pix_fmt, video.options = "yuv420p", {"crf": "18"}
        if wave is not None:
            audio = container.add_stream("aac", rate=sample_rate)
            audio.layout = "mono" if channels == 1 else "stereo"
        if frames is not None:
            for frame in frames:
                for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
        if wave is not None and len(wave):
            planes = np.ascontiguousarray(wave.reshape(len(wave), -1).T.astype(np.float32))
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=audio.layout.name)
            frame.sample_rate = sample_rate
            position = -AAC_PRIMING
            for packet in list(audio.encode(frame)) + list(audio.encode()):
                packet.pts = packet.dts = position
                position += packet.duration
                container.mux(packet)
    return path
