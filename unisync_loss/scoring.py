"""Real video in, sync verdict out: what ``unisync score``, ``unisync batch`` and ``unisync prepare`` do.

``score_video`` reads a clip (:mod:`unisync_loss.media`: 25 fps, 16 kHz mono), builds the expert's
visual representation from it (:mod:`unisync_loss.faces`: landmarks, or face crops for rgb; or the
frames themselves when they already are face crops) and scores every window with
:func:`unisync_loss.metrics.score_clip` against audio offsets -15..+15 frames. Frames without a face
split the clip into segments, each scored on its own with its own audio (never across a gap); the
windows of all segments then give one offset / distance / confidence (:func:`~unisync_loss.metrics.clip_sync`).

SyncNet v2 (``syncnet_v2:syncnet_v2.model`` or its converted file) is scored as syncnet_python
scores it instead (:func:`unisync_loss.thirdparty.lse.score_clip_syncnet`: 224 x 224 crops framed
from the face-detector box with crop scale 0.4, :func:`unisync_loss.framing.syncnet_v2_boxes`; 13
MFCC at 100 Hz; Euclidean distances to the audio windows at -15..+15 with zero-padded embeddings),
so its ``distance`` / ``confidence`` are LSE-D / LSE-C; the windows of all face segments are pooled
before the mean per offset. The result's ``measure`` says which kind of expert scored the clip.

Errors a user can cause (missing file, no audio stream, zero-length media, no face, audio shorter
than one window, an expert whose representations cannot be built from video) raise
:class:`ScoringError`, which the command line prints as one line with exit status 2.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import save_file
from torch import Tensor

from unisync_loss.atomic import write_text_atomic
from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS, log_mel, write_wav
from unisync_loss.experts import BUNDLED_DIR, EXPERT_SUFFIX, ExpertFileError, experts_dir
from unisync_loss.framing import SYNCNET_V2_PAD, SYNCNET_V2_SIZE, syncnet_v2_boxes
from unisync_loss.media import DEFAULT_MAX_SIDE, MediaError, read_media
from unisync_loss.metrics import clip_sync, score_clip
from unisync_loss.model import UniSync
from unisync_loss.representations import USER_LANDMARK_CONVENTION, fit_landmarks, rgb_clip
from unisync_loss.thirdparty import ThirdPartyExpert, load_sync_expert, score_clip_syncnet, syncnet_scores
from unisync_loss.thirdparty.checkpoints import SPEC_PREFIXES
from unisync_loss.thirdparty.lse import scored_window_count
from unisync_loss.windows import window_count

VISUAL_FROM_VIDEO = ("landmarks", "rgb")
"""Visual representations ``score`` builds from video, in order of preference."""
DEFAULT_EXPERTS = ("mel_landmarks", "mel_rgb")
"""Cached experts tried when none is named, then the bundled procedural ones of the same pairs."""
SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")
MS_PER_FRAME = 1000 // VIDEO_FPS
THIRD_PARTY_FACE_SIZE = 96
"""Size of the face crops given to Wav2Lip's expert (it crops the lower half itself); SyncNet v2's are 224."""


class ScoringError(ValueError):
    """A problem with the user's input, reported as one line (exit status 2 on the command line)."""


@dataclass
class ScoringExpert:
    """An expert ready for ``score``: the model, the pair it scores and where it came from."""

    model: UniSync | ThirdPartyExpert
    audio: str
    visual: str
    source: str

    @property
    def measure(self) -> str:
        """``"cosine"`` (p_sync, UniSync and Wav2Lip's expert) or ``"euclidean"`` (SyncNet v2's distance)."""
        return getattr(self.model, "measure", "cosine")


def open_expert(name: str | None = None, visual: str | None = None) -> ScoringExpert:
    """Load the expert ``score`` uses: a path, a cached name (``mel_rgb``), a bundled name (``procedural_mel_rgb``),
    Wav2Lip's expert (``wav2lip:lipsync_expert.pth``) or SyncNet v2 (``syncnet_v2:syncnet_v2.model``), or
    either's converted file (see :mod:`unisync_loss.thirdparty`).

    ``None``: the first of :data:`DEFAULT_EXPERTS` in the cache, else the bundled procedural
    ``mel_landmarks`` (synthetic-data expert: demos only). ``visual`` picks the head when the
    expert has several. ``ScoringError`` when it has no mel head or no visual head this
    pipeline can build (``landmarks``, ``rgb``).
    """
    candidates = [name] if name else [*DEFAULT_EXPERTS, *(f"procedural_{pair}" for pair in DEFAULT_EXPERTS)]
    errors = []
    for candidate in candidates:
        prefix, _, checkpoint = candidate.partition(":")
        if prefix in SPEC_PREFIXES and checkpoint:  # a third-party checkpoint, e.g. wav2lip:lipsync_expert.pth
            return _scoring_pair(_load(candidate), candidate, visual)
        path = Path(candidate).expanduser()
        for option in (path, experts_dir() / f"{candidate}{EXPERT_SUFFIX}", BUNDLED_DIR / f"{candidate}{EXPERT_SUFFIX}"):
            if option.is_file():
                return _scoring_pair(_load(str(option)), str(option), visual)
        errors.append(candidate)
    raise ScoringError(f"expert not found: {', '.join(errors)} (looked for a file, in {experts_dir()} and in {BUNDLED_DIR})")


def _load(spec: str) -> UniSync | ThirdPartyExpert:
    try:
        return load_sync_expert(spec)
    except ExpertFileError as error:
        raise ScoringError(str(error)) from error


def _scoring_pair(model: UniSync | ThirdPartyExpert, source: str, visual: str | None) -> ScoringExpert:
    if isinstance(model, ThirdPartyExpert):
        if visual not in (None, model.config.visual):
            raise ScoringError(f"{source}: {model.config.architecture} scores {model.config.audio} x {model.config.visual}, "
                               f"not {visual!r}")
        return ScoringExpert(model, model.config.audio, model.config.visual, source)
    if "mel" not in model.audio_heads:
        raise ScoringError(f"{source}: the expert has {model.describe_heads()}; unisync score computes the mel "
                           "from the audio track, so it needs a mel head")
    usable = [name for name in VISUAL_FROM_VIDEO if name in model.visual_heads and (visual is None or name == visual)]
    if not usable:
        wanted = f"the {visual!r} head" if visual else f"a visual head unisync can build from video ({', '.join(VISUAL_FROM_VIDEO)})"
        raise ScoringError(f"{source}: the expert has {model.describe_heads()}; scoring video needs {wanted}")
    return ScoringExpert(model, "mel", usable[0], source)


def _face_track(frames: Tensor, max_gap: int):
    from unisync_loss.faces import track_faces  # needs the faces extra; imported only when faces are detected

    return track_faces(frames, max_gap=max_gap)


def build_visual(frames: Tensor, expert: ScoringExpert, face_crops: bool = False, max_gap: int = 2,
                 landmark_convention: str = USER_LANDMARK_CONVENTION) -> tuple[Tensor, list[tuple[int, int]], dict[str, Any]]:
    """The expert's visual clip tensor, the face segments ``[start, stop)`` and a face summary.

    ``frames`` ``(n, H, W, 3)`` uint8. ``face_crops=True``: the frames already are face crops (a
    generator's output, the procedural corpus), used whole as ``rgb``; otherwise faces are
    detected (:func:`unisync_loss.faces.track_faces`): landmarks (detector pixels, y down, fitted to
    the expert with z = 0 for a 3D expert) or crops (:func:`unisync_loss.faces.crop_boxes`; for
    SyncNet v2 syncnet_python's 224 x 224 crops from the detector box, padded with its grey 110).
    """
    if face_crops:
        if expert.visual != "rgb":
            raise ScoringError(f"--face-crops gives frames, which only an rgb expert reads; {expert.source} scores {expert.visual}")
        return rgb_clip(frames), [(0, frames.shape[0])], {"frames": frames.shape[0], "detector": "none (frames are face crops)"}
    from unisync_loss.faces import crop_boxes, crop_faces, detector_boxes

    track = _face_track(frames, max_gap)
    summary = track.summary()
    if not track.segments():
        raise ScoringError(f"no face found in any of the {frames.shape[0]} frames")
    if expert.visual == "landmarks":
        options = expert.model.config.visual["landmarks"]
        if options["points"] != track.landmarks.shape[1]:
            raise ScoringError(f"{expert.source}: the expert takes {options['points']} landmarks per frame, "
                               f"the face pipeline gives {track.landmarks.shape[1]} (iBUG 68)")
        return fit_landmarks(track.landmarks, options, landmark_convention, pad_depth=True), track.segments(), summary
    if expert.measure == "euclidean":  # SyncNet v2: syncnet_python's framing
        boxes = syncnet_v2_boxes(detector_boxes(track.landmarks))
        return crop_faces(frames, boxes, SYNCNET_V2_SIZE, fill=SYNCNET_V2_PAD), track.segments(), summary
    size = THIRD_PARTY_FACE_SIZE if isinstance(expert.model, ThirdPartyExpert) else expert.model.config.visual["rgb"]["size"]
    return rgb_clip(crop_faces(frames, crop_boxes(track.landmarks), size)), track.segments(), summary


def score_media(wave: Tensor, visual: Tensor, segments: Sequence[tuple[int, int]], expert: ScoringExpert,
                speech: Tensor | None = None) -> dict[str, Any]:
    """Score a clip given as a 16 kHz wave ``(S,)`` and a visual clip tensor cut into face ``segments``.

    Each segment long enough for a window is scored on its own audio (exact: 640 samples per
    frame): with :func:`score_clip` against the audio from its first frame on (p_sync experts), or
    as syncnet_python scores a face track (SyncNet v2, audio cut to the segment); the windows of all
    segments give one clip result. ``speech`` ``(n,)`` bool (:func:`unisync_loss.vad.speech_frames`):
    only windows with speech in their own frames count. Returns ``measure``, offsets in frames and
    ms, distance, confidence, the windows' start frames and, for p_sync experts, mean p_sync at the
    best offset, p_sync over time (at the best offset and at 0) and per offset; for SyncNet v2,
    ``lse_d`` / ``lse_c`` (= distance / confidence), ``syncnet_offset`` (syncnet_python's sign) and
    the distance over time and per offset (``p_sync`` is ``None``).
    """
    window = expert.model.config.window
    rows, starts = [], []
    for start, stop in segments:
        if stop - start < window:
            continue
        if expert.measure == "euclidean":
            segment_wave = wave[start * SAMPLES_PER_FRAME:stop * SAMPLES_PER_FRAME]
            if scored_window_count(stop - start, segment_wave.shape[0]) < 1:
                continue
            result = score_clip_syncnet(expert.model, segment_wave, visual[start:stop])
            rows.append(-result["distances"])  # higher is in sync, as p_sync: one filter below for both
        else:
            audio = log_mel(wave[start * SAMPLES_PER_FRAME:])
            if window_count("mel", audio.shape[1], window) == 0:
                continue
            result = score_clip(expert.model, audio, visual[start:stop], expert.audio, expert.visual)
            rows.append(result["probabilities"])
        starts.extend(range(start, start + result["windows"]))
    if not rows:
        seconds = wave.shape[0] / SAMPLE_RATE
        raise ScoringError(f"nothing to score: no face segment of >= {window} frames with audio under it "
                           f"(audio {seconds:.2f} s, one window = {window / VIDEO_FPS:.2f} s; face segments {list(segments)})")
    scores = torch.cat(rows)  # (W, 2M + 1): p_sync (NaN where masked) or negative distances
    if speech is not None:
        keep = torch.tensor([bool(speech[s:s + window].any()) for s in starts], dtype=torch.bool)
        if not keep.any():
            raise ScoringError(f"--vad: no speech under any of the {len(starts)} windows")
        scores, starts = scores[keep], [s for s, k in zip(starts, keep.tolist()) if k]
    max_offset = scores.shape[1] // 2
    common = {"measure": expert.measure, "windows": scores.shape[0], "window_starts": starts,
              "offsets": list(range(-max_offset, max_offset + 1))}
    if expert.measure == "euclidean":
        distances = -scores
        lse = syncnet_scores(distances)
        best = int(lse.offset)
        return {
            "offset_frames": best, "offset_ms": best * MS_PER_FRAME, "syncnet_offset": int(lse.syncnet_offset),
            "confidence": float(lse.lse_c), "distance": float(lse.lse_d),
            "lse_c": float(lse.lse_c), "lse_d": float(lse.lse_d), "p_sync": None, **common,
            "distance_over_time": _floats(distances[:, best + max_offset]),
            "distance_over_time_at_0": _floats(distances[:, max_offset]),
            "distance_per_offset": _floats(lse.profile),
        }
    sync = clip_sync(scores)
    best = int(sync.offset)
    at_best = scores[:, best + max_offset]
    return {
        "offset_frames": best,
        "offset_ms": best * MS_PER_FRAME,
        "confidence": float(sync.confidence),
        "distance": float(sync.distance),
        "p_sync": float(at_best.nanmean()),
        **common,
        "p_sync_over_time": _floats(at_best),
        "p_sync_over_time_at_0": _floats(scores[:, max_offset]),
        "p_sync_per_offset": _floats(1.0 - sync.profile),
    }


def _floats(values: Tensor) -> list[float | None]:
    return [None if math.isnan(v) else round(v, 5) for v in values.tolist()]


def score_video(video: str | Path, audio: str | Path | None = None, expert: ScoringExpert | None = None,
                face_crops: bool = False, max_side: int | None = DEFAULT_MAX_SIDE, max_gap: int = 2,
                vad: bool = False) -> dict[str, Any]:
    """``unisync score`` as a function: the result dict (see :func:`score_media`) plus what was read.

    ``vad``: score only windows with speech (Silero VAD, :mod:`unisync_loss.vad`).
    """
    expert = expert or open_expert()
    timings = {}
    clock = time.perf_counter()
    try:
        media = read_media(video, audio, max_side)
    except MediaError as error:
        raise ScoringError(str(error)) from error
    timings["read_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    visual, segments, faces = build_visual(media.frames, expert, face_crops, max_gap)
    timings["faces_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    speech = None
    if vad:
        from unisync_loss.vad import speech_frames

        speech = speech_frames(media.wave, media.frames.shape[0])
    result = score_media(media.wave, visual, segments, expert, speech)
    timings["score_s"] = time.perf_counter() - clock
    header = {
        "video": str(video), "audio": str(audio) if audio else "(the video's own track)",
        "expert": expert.source, "pair": f"{expert.audio} x {expert.visual}",
        "frames": media.frames.shape[0], "seconds": round(media.seconds, 3), "source_fps": media.source_fps,
        "faces": faces,
        "speech_frames": None if speech is None else int(speech.sum()),
    }
    return {**header, **result, "timings": {k: round(v, 3) for k, v in timings.items()}}


def summary_line(result: dict[str, Any]) -> str:
    """The human-readable verdict of ``unisync score``."""
    o = result["offset_frames"]
    lag = "in sync" if o == 0 else ("audio lags video" if o > 0 else "audio leads video")
    measure = (f"mean p_sync at best offset {result['p_sync']:.3f}" if result["p_sync"] is not None
               else f"LSE-C {result['lse_c']:.3f}, LSE-D {result['lse_d']:.3f} (syncnet_python's AV offset {result['syncnet_offset']:+d})")
    return (f"{result['video']}: offset {o:+d} frames ({result['offset_ms']:+d} ms, {lag}), "
            f"confidence {result['confidence']:.3f}, distance {result['distance']:.3f}, "
            f"{measure} over {result['windows']} windows "
            f"[expert {Path(result['expert']).name}, {result['pair']}]"
            + (" (bundled expert trained on the synthetic corpus only: a demo, not a judge of real faces)"
               if Path(result["expert"]).parent == BUNDLED_DIR else ""))


def plot_result(result: dict[str, Any], path: str | Path) -> Path:
    """Two panels: mean p_sync vs offset (best offset marked) and p_sync over time at the best offset and at 0.

    For SyncNet v2 the same panels show its Euclidean distance (lower is in sync).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ScoringError("--plot needs matplotlib (pip install matplotlib)") from error
    nan = float("nan")
    best = result["offset_frames"]
    name = "p_sync" if result.get("measure", "cosine") == "cosine" else "distance"
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    left.plot(result["offsets"], [nan if v is None else v for v in result[f"{name}_per_offset"]], marker="o", ms=3)
    left.axvline(best, color="tab:red", ls="--", label=f"best offset {best:+d} ({best * MS_PER_FRAME:+d} ms)")
    left.set(xlabel="offset (frames; > 0: audio lags video)", ylabel=f"mean {name}", title=f"{name} vs offset")
    left.legend(loc="lower right", fontsize=8)
    seconds = [s / VIDEO_FPS for s in result["window_starts"]]
    for key, label in ((f"{name}_over_time", f"at best offset {best:+d}"), (f"{name}_over_time_at_0", "at offset 0")):
        right.plot(seconds, [nan if v is None else v for v in result[key]], lw=1, label=label)
    right.set(xlabel="window start (s)", ylabel=name, title=f"{name} over time")
    if name == "p_sync":
        right.set_ylim(0, 1)
    right.legend(loc="lower right", fontsize=8)
    figure.suptitle(f"{Path(result['video']).name}: {Path(result['expert']).name} ({result['pair']}), "
                    f"confidence {result['confidence']:.3f}", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --- batch -------------------------------------------------------------------------------------------

BATCH_COLUMNS = ("video", "status", "measure", "offset_frames", "offset_ms", "confidence", "distance", "p_sync", "windows",
                 "face_frames", "seconds", "error")


def batch_inputs(list_or_dir: str | Path) -> list[Path]:
    """Videos of a folder (by suffix, sorted) or of a text file (one path per line, relative to the file)."""
    source = Path(list_or_dir)
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        return [(source.parent / line) if not Path(line).is_absolute() else Path(line)
                for line in lines if line and not line.startswith("#")]
    raise ScoringError(f"{source}: neither a folder of videos nor a list file")


def score_batch(videos: Sequence[Path], out: str | Path, expert: ScoringExpert, face_crops: bool = False,
                max_side: int | None = DEFAULT_MAX_SIDE, stream=None, vad: bool = False) -> dict[str, Any]:
    """Score every video, one CSV row each (failures recorded, never stopping); returns a summary.

    Rows go to ``OUT.partial`` as they come (flushed), renamed to ``out`` at the end, so an
    interrupted batch keeps what it had.
    """
    from unisync_loss.progress import progress

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    ok, failed = [], []
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=BATCH_COLUMNS)
        writer.writeheader()
        for video in progress(videos, desc="scoring", stream=stream):
            row: dict[str, Any] = {"video": str(video)}
            try:
                result = score_video(video, expert=expert, face_crops=face_crops, max_side=max_side, vad=vad)
                row.update(status="ok", face_frames=result["faces"].get("frames", 0) - result["faces"].get("none", 0),
                           **{k: result[k] for k in ("measure", "offset_frames", "offset_ms", "confidence", "distance", "p_sync", "windows", "seconds")})
                ok.append(result)
            except (ScoringError, ImportError) as error:
                row.update(status="failed", error=str(error))
                failed.append(str(video))
            writer.writerow(row)
            handle.flush()
    os.replace(partial, out)
    offsets = [abs(r["offset_frames"]) for r in ok]
    return {
        "clips": len(videos), "ok": len(ok), "failed": len(failed), "out": str(out), "measure": expert.measure,
        "mean_confidence": round(sum(r["confidence"] for r in ok) / len(ok), 4) if ok else None,
        "mean_distance": round(sum(r["distance"] for r in ok) / len(ok), 4) if ok else None,
        "in_sync_within_1_frame": sum(o <= 1 for o in offsets),
        "failures": failed,
    }


# --- prepare -----------------------------------------------------------------------------------------

def prepare_video(video: str | Path, root: str | Path, speaker: str | None = None, size: int = 96,
                  audio: str | Path | None = None, max_side: int | None = DEFAULT_MAX_SIDE, max_gap: int = 2,
                  min_frames: int = 25) -> list[str]:
    """Write one video as Wav2Lip-layout clips under ``root``; returns their ids (``speaker/name_000``).

    Every face segment of at least ``min_frames`` frames becomes a clip folder: face crops
    ``0.jpg .. n-1.jpg`` (:func:`unisync_loss.faces.crop_boxes`, ``size`` px), ``audio.wav`` (16 kHz
    mono, cut at the segment's first frame) and ``reps.safetensors`` with ``landmarks`` ``(n, 68, 2)``
    float32: pixels of the saved crops, y up (the project's landmark convention:
    ``(x, size - y)``), recorded in the file's metadata. Each clip is written to a temporary folder
    and renamed, so a crash never leaves half a clip.
    """
    from torchvision.io import encode_jpeg, write_file

    from unisync_loss.faces import crop_boxes, crop_faces

    try:
        media = read_media(video, audio, max_side)
    except MediaError as error:
        raise ScoringError(str(error)) from error
    track = _face_track(media.frames, max_gap)
    segments = [(a, b) for a, b in track.segments() if b - a >= min_frames]
    if not segments:
        raise ScoringError(f"{video}: no face segment of >= {min_frames} frames (faces: {track.summary()})")
    boxes = crop_boxes(track.landmarks)
    root = Path(root)
    speaker = speaker or Path(video).stem
    written = []
    for number, (start, stop) in enumerate(segments):
        clip_id = f"{speaker}/{Path(video).stem}_{number:03d}"
        target = root / clip_id
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            crops = crop_faces(media.frames[start:stop], boxes[start:stop], size)
            for index, crop in enumerate(crops):
                write_file(str(temp / f"{index}.jpg"), encode_jpeg(crop, quality=95))
            write_wav(temp / "audio.wav", media.wave[start * SAMPLES_PER_FRAME:stop * SAMPLES_PER_FRAME])
            corners = boxes[start:stop, :2] - boxes[start:stop, 2:] / 2  # (n, 2) top-left of each crop
            scale = size / boxes[start:stop, 2:]
            in_crop = (track.landmarks[start:stop] - corners[:, None]) * scale[:, None]
            y_up = torch.stack([in_crop[..., 0], size - in_crop[..., 1]], dim=-1).contiguous()
            save_file({"landmarks": y_up}, str(temp / "reps.safetensors"),
                      metadata={"landmarks": json.dumps({"convention": "y_up", "units": f"pixels of the {size}x{size} crops",
                                                         "points": "iBUG 68 (dlib)", "source": str(video)})})
            if target.exists():
                shutil.rmtree(target)
            os.replace(temp, target)
        finally:
            if temp.exists():
                shutil.rmtree(temp)
        written.append(clip_id)
    return written


def add_to_filelist(root: str | Path, split: str, clip_ids: Sequence[str]) -> Path:
    """Append ``clip_ids`` to ``root/filelists/{split}.txt`` (kept unique, in order), atomically."""
    path = Path(root) / "filelists" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text(encoding="utf-8").split() if path.exists() else []
    lines = list(dict.fromkeys([*existing, *clip_ids]))
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))
    return path
