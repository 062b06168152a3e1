"""The procedural corpus: speakers split into train / val / test, clips in memory or written to disk.

Disk layout (Wav2Lip's preprocessed layout, so one loader serves real data and the corpus)::

    OUT/manifest.json                      generator, version, seed, preset, rates, clip list (written last)
    OUT/filelists/{train,val,test}.txt     one clip id ``spk003/clip007`` per line, split by speaker
    OUT/spk003/clip007/{0..n-1}.jpg        RGB face crops (JPEG quality 90)
    OUT/spk003/clip007/audio.wav           16 kHz mono 16-bit PCM
    OUT/spk003/clip007/reps.safetensors    hubert (2n, 1024) f32, landmarks (n, 68, 3) f32, landmarks2d (n, 68, 2) f32,
                                           3dmm (n, 64) f32, parsing (n, H, W) u8, and ground truth:
                                           mouth (n, 4) f32, pose (n, 7) f32, units (n,) i64

Every clip is seeded from (seed, speaker index, clip index) alone, so the bytes written do not depend
on the number of workers or on their scheduling. Each clip is written into a hidden temporary folder
and renamed into place, so a crash never leaves a half-written clip; the manifest is written last.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torchvision.io import encode_jpeg
from tqdm import tqdm

from pretrain.synth.clip import Clip, generate_clip, timed
from pretrain.synth.presets import Preset, get_preset
from pretrain.synth.speakers import make_speaker
from unisync_loss.atomic import write_text_atomic
from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS, write_wav

GENERATOR = "unisync-procedural"
VERSION = "1.0"
"""Generator version recorded in the manifest; bump it when the same seed starts giving other clips."""
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
"""Share of speakers in train, val and test."""
JPEG_QUALITY = 90


def split_speakers(n_speakers: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, list[int]]:
    """Assign speaker indices 0..n_speakers-1 to splits, by speaker: train first, then val, then test.

    ``round(n · fraction)`` speakers go to val and test; with 3 or more speakers a split with a
    positive fraction gets at least one. Deterministic and contiguous (no randomness involved).

    Returns:
        {"train": [...], "val": [...], "test": [...]} speaker indices.
    """
    fractions = tuple(float(f) for f in fractions)
    if n_speakers < 1 or len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split_speakers: expected n_speakers >= 1 and 3 non-negative fractions (train, val, test) "
                         f"summing to 1, got n_speakers={n_speakers}, fractions={fractions}")

    def count(fraction: float) -> int:
        return max(1, round(n_speakers * fraction)) if fraction > 0 and n_speakers >= 3 else round(n_speakers * fraction)

    n_val, n_test = count(fractions[1]), count(fractions[2])
    n_train = n_speakers - n_val - n_test
    return {"train": list(range(n_train)), "val": list(range(n_train, n_train + n_val)),
            "test": list(range(n_train + n_val, n_speakers))}


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to generate (and optionally write) one clip."""

    speaker_index: int
    clip_index: int
    split: str
    seconds: float
    preset: Preset
    seed: int
    image_size: int
    out: Path | None = None


def _plan(speakers: int, clips_per_speaker: int, seconds: float, preset: str | Preset, seed: int,
          image_size: int | None, fractions: Sequence[float], split: str | None, out: Path | None = None) -> list[_Job]:
    """The clips of the corpus (or of one split), speaker-major."""
    if clips_per_speaker < 1 or seconds <= 0 or seed < 0:
        raise ValueError(f"corpus: expected clips_per_speaker >= 1, seconds > 0 and seed >= 0, "
                         f"got {clips_per_speaker}, {seconds}, {seed}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"corpus: split must be one of {SPLITS} or None, got {split!r}")
    preset = get_preset(preset)
    size = preset.image_size if image_size is None else image_size
    return [_Job(index, clip, name, seconds, preset, seed, size, out)
            for name, indices in split_speakers(speakers, fractions).items() if split in (None, name)
            for index in indices for clip in range(clips_per_speaker)]


def _generate(job: _Job, timings: dict[str, float] | None = None) -> Clip:
    speaker = make_speaker(job.seed, job.speaker_index, job.preset)
    return generate_clip(speaker, job.seconds, job.preset, job.seed, job.image_size, job.clip_index, timings)


def generate_corpus(speakers: int, clips_per_speaker: int, seconds: float, preset: str | Preset = "default",
                    seed: int = 0, image_size: int | None = None, split: str | None = None,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Iterator[Clip]:
    """Clips of the corpus in memory, speaker-major (``spk000/clip000``, ``spk000/clip001``, ...).

    Args:
        speakers: number of speakers in the whole corpus (all splits).
        clips_per_speaker: clips per speaker.
        seconds: duration of each clip.
        preset: ``easy`` | ``default`` | ``hard`` or a :class:`~pretrain.synth.presets.Preset`.
        seed: corpus seed; identical to the clips :func:`write_corpus` writes for the same arguments.
        image_size: crop size in pixels; None takes the preset's.
        split: only the clips of this split's speakers; None for all.
        fractions: (train, val, test) share of speakers, see :func:`split_speakers`.
    """
    for job in _plan(speakers, clips_per_speaker, seconds, preset, seed, image_size, fractions, split):
        yield _generate(job)


def generate_split(split: str, speakers: int, clips_per_speaker: int, seconds: float, preset: str | Preset = "default",
                   seed: int = 0, image_size: int | None = None,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[Clip]:
    """The clips of one split in memory (the split's speakers as :func:`write_corpus` assigns them)."""
    return list(generate_corpus(speakers, clips_per_speaker, seconds, preset, seed, image_size, split, fractions))


def _write_clip(job: _Job) -> tuple[dict[str, Any], dict[str, float]]:
    """Generate one clip and write its folder (temporary folder, then rename); returns its manifest entry
    and the seconds spent per stage."""
    timings: dict[str, float] = {}
    clip = _generate(job, timings)
    with timed(timings, "jpeg"):
        frames = encode_jpeg(list(clip.rgb), quality=JPEG_QUALITY)
    with timed(timings, "write"):
        final = job.out / clip.clip_id
        temporary = final.parent / f".{final.name}.tmp"
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir(parents=True)
        for index, frame in enumerate(frames):
            (temporary / f"{index}.jpg").write_bytes(frame.numpy().tobytes())
        write_wav(temporary / "audio.wav", clip.wave)
        tensors = {"hubert": clip.hubert, "landmarks": clip.landmarks, "landmarks2d": clip.landmarks2d,
                   "3dmm": clip.coeffs, "parsing": clip.parsing, "mouth": clip.mouth, "pose": clip.pose,
                   "units": clip.units}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary / "reps.safetensors"),
                  metadata={"unisync_procedural": json.dumps(  # one key: safetensors orders several at random
                      {"generator": GENERATOR, "version": VERSION, "clip": clip.clip_id,
                       "av_offset_s": clip.av_offset_s, "snr_db": clip.snr_db}, sort_keys=True)})
        if final.exists():
            shutil.rmtree(final)
        temporary.rename(final)
    entry = {"id": clip.clip_id, "speaker": clip.speaker_id, "split": job.split, "n_frames": clip.n_frames,
             "av_offset_s": round(clip.av_offset_s, 6), "snr_db": round(clip.snr_db, 3)}
    return entry, timings


def _init_worker() -> None:
    torch.set_num_threads(1)


@dataclass
class CorpusSummary:
    """What :func:`write_corpus` wrote.

    Attributes:
        out: corpus root.
        clips, frames: number of clips and of video frames written.
        audio_seconds: total audio duration.
        wall_s: wall-clock seconds of the whole run.
        stage_s: seconds per stage summed over all clips and workers (``speech``, ``hubert``, ``face``,
            ``render``, ``jpeg``, ``write``; the sum exceeds ``wall_s`` when workers run in parallel).
        splits: number of clips per split.
    """

    out: Path
    clips: int
    frames: int
    audio_seconds: float
    wall_s: float
    stage_s: dict[str, float] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)


def write_corpus(out: str | Path, speakers: int, clips_per_speaker: int, seconds: float,
                 preset: str | Preset = "default", seed: int = 0, workers: int = 2, image_size: int | None = None,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS, progress: bool = True) -> CorpusSummary:
    """Write the corpus to ``out`` in the layout of the module docstring.

    Args:
        out: corpus root (created; clips already there with the same ids are replaced).
        speakers, clips_per_speaker, seconds, preset, seed, image_size, fractions: as in :func:`generate_corpus`.
        workers: processes generating clips (each with one torch thread); 1 runs in this process.
        progress: show a tqdm progress bar (clips).
    Returns:
        a :class:`CorpusSummary`.
    """
    start = time.perf_counter()
    out = Path(out)
    preset = get_preset(preset)
    jobs = _plan(speakers, clips_per_speaker, seconds, preset, seed, image_size, fractions, None, out)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    stage_s: dict[str, float] = {}
    bar = tqdm(total=len(jobs), unit="clip", desc=f"corpus -> {out}", disable=not progress)

    def collect(result: tuple[dict[str, Any], dict[str, float]]) -> None:
        entries.append(result[0])
        for stage, seconds_spent in result[1].items():
            stage_s[stage] = stage_s.get(stage, 0.0) + seconds_spent
        bar.update()

    if workers <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for job in jobs:
                collect(_write_clip(job))
        finally:
            torch.set_num_threads(threads)
    else:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for result in pool.imap_unordered(_write_clip, jobs):
                collect(result)
    bar.close()

    entries.sort(key=lambda entry: entry["id"])
    (out / "filelists").mkdir(exist_ok=True)
    for split in SPLITS:
        ids = [entry["id"] for entry in entries if entry["split"] == split]
        write_text_atomic(out / "filelists" / f"{split}.txt", "".join(f"{clip_id}\n" for clip_id in ids))
    manifest = {
        "generator": GENERATOR, "version": VERSION, "seed": seed, "preset": preset.name,
        "fps": VIDEO_FPS, "sample_rate": SAMPLE_RATE, "image_size": jobs[0].image_size, "seconds": seconds,
        "speakers": speakers, "clips_per_speaker": clips_per_speaker, "split_fractions": list(fractions),
        "preset_settings": preset.to_dict(), "clips": entries,
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return CorpusSummary(
        out=out, clips=len(entries), frames=sum(entry["n_frames"] for entry in entries),
        audio_seconds=len(entries) * round(seconds * SAMPLE_RATE) / SAMPLE_RATE,
        wall_s=time.perf_counter() - start, stage_s=stage_s,
        splits={split: sum(entry["split"] == split for entry in entries) for split in SPLITS})
