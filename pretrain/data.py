"""Clip sources for pretraining and evaluation: one interface over real data and the procedural corpus.

A source lists its clips (``records``) and loads a clip's canonical tensors (SPEC, per clip,
unbatched: mel (80, F), hubert (2n, D), rgb (n, 3, H, W) uint8, parsing (n, H, W) uint8,
landmarks (n, N, 3), 3dmm (n, D)) on demand:

* ``FolderSource``: Wav2Lip's preprocessed layout ``root/<dir>/<vid>/{0..n-1}.jpg`` + ``audio.wav``,
  filelists ``{split}.txt``, an optional ``manifest.json`` (speaker / split / n_frames per clip) and
  optional per-clip ``reps.safetensors`` with precomputed representations (hubert, landmarks, 3dmm,
  parsing). mel is always computed from ``audio.wav``, rgb always decoded from the frames.
* ``ProceduralSource``: the procedural talking-head corpus (``pretrain.synth``) generated in memory,
  split by speaker exactly as the on-disk corpus writer splits it.

``open_source(spec, split)`` builds either from a config's ``data`` section (or a folder path).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import resize

from unisync_loss.audio import SAMPLE_RATE, log_mel, num_mel_frames, read_wav
from unisync_loss.representations import REPRESENTATIONS
from unisync_loss.windows import num_valid_windows, time_length
from unisync_loss.windows import window_count as representation_window_count

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClipRecord:
    """One clip: its id (``dir/vid``), speaker, split and frame count (``None`` when not known up front)."""

    clip_id: str
    speaker: str
    split: str
    n_frames: int | None = None


class ClipSource:
    """A list of clips of one split whose canonical tensors can be loaded by index.

    Subclasses set ``records`` and implement ``_load_one``; loaded tensors are kept in memory
    when ``cache`` is on (small corpora), so each clip is decoded once per process.
    """

    records: list[ClipRecord]
    cache: dict[int, dict[str, Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int, representations: Sequence[str]) -> dict[str, Tensor]:
        """Canonical tensors of clip ``index`` for each name in ``representations``."""
        stored = self.cache.setdefault(index, {}) if self.cache is not None else {}
        for name in representations:
            if name not in stored:
                if name not in REPRESENTATIONS:
                    raise ValueError(f"unknown representation {name!r}; expected one of {REPRESENTATIONS}")
                stored[name] = self._load_one(index, name)
        return {name: stored[name] for name in representations}

    def _load_one(self, index: int, name: str) -> Tensor:
        raise NotImplementedError

    def check(self, representations: Sequence[str]) -> None:
        """``ValueError`` naming the file when a clip's data for ``representations`` is missing or unreadable.

        Cheap (file headers and listings, nothing decoded); sources generated in memory have nothing to check.
        """

    def window_count(self, index: int, representations: Sequence[str], window: int) -> int:
        """Number of valid window starts of clip ``index`` for all ``representations`` at once (T = ``window``)."""
        return num_valid_windows(self.load(index, representations), window)

    def speakers(self) -> list[str]:
        """Distinct speakers, sorted."""
        return sorted({r.speaker for r in self.records})

    def summary(self) -> dict[str, Any]:
        """Counts for logs and expert metadata."""
        return {"clips": len(self.records), "speakers": len(self.speakers())}


class FolderSource(ClipSource):
    """Wav2Lip-layout folder (see module docstring).

    Args:
        root: the data root (``root/<dir>/<vid>/``).
        split: ``train`` | ``val`` | ``test``; clips come from ``{split}.txt`` (first token of each line,
            ``dir/vid``), looked up in ``filelist_dir`` when given, else ``root/filelists``; without a filelist,
            from the ``split`` fields of ``root/manifest.json``.
        filelist_dir: folder holding the filelists when they are not under ``root/filelists``.
        image_size: frames are resized to ``image_size`` x ``image_size`` when their size differs.
        cache: keep loaded clips in memory (for corpora that fit in RAM).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        filelist_dir: str | Path | None = None,
        image_size: int = 96,
        cache: bool = True,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"data root {self.root} is not a folder (expected Wav2Lip's layout root/<dir>/<vid>/)")
        _check_split(split)
        self.split = split
        self.image_size = image_size
        self.cache: dict[int, dict[str, Tensor]] | None = {} if cache else None
        manifest = self._read_manifest()
        clip_ids = self._read_filelist(filelist_dir)
        if clip_ids is None:
            if not manifest:
                raise ValueError(
                    f"no filelist {split}.txt in {self._filelist_dirs(filelist_dir)} and no manifest.json in {self.root}: "
                    "cannot tell which clips belong to the split"
                )
            clip_ids = [cid for cid, entry in manifest.items() if entry.get("split") == split]
            if not clip_ids:
                raise ValueError(f"{self.root / 'manifest.json'}: no clip has split {split!r} (expected at least one)")
        self.records = [
            ClipRecord(
                clip_id=cid,
                speaker=manifest.get(cid, {}).get("speaker", cid.rsplit("/", 1)[0] if "/" in cid else cid),
                split=split,
                n_frames=manifest.get(cid, {}).get("n_frames"),
            )
            for cid in clip_ids
        ]

    def _read_manifest(self) -> dict[str, dict[str, Any]]:
        path = self.root / "manifest.json"
        if not path.exists():
            return {}
        try:
            with open(path, encoding="utf-8") as f:
                return {entry["id"]: entry for entry in json.load(f).get("clips", [])}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{path}: not a valid manifest (expected {{\"clips\": [{{\"id\": \"dir/vid\", \"speaker\": ..., "
                f"\"split\": ...}}, ...]}}): {error!r}"
            ) from None

    def _filelist_dirs(self, filelist_dir: str | Path | None) -> list[Path]:
        return ([Path(filelist_dir)] if filelist_dir else []) + [self.root / "filelists"]

    def _read_filelist(self, filelist_dir: str | Path | None) -> list[str] | None:
        for folder in self._filelist_dirs(filelist_dir):
            path = folder / f"{self.split}.txt"
            if path.exists():
                lines = path.read_text(encoding="utf-8").splitlines()
                clip_ids = [line.split()[0] for line in lines if line.strip()]
                if not clip_ids:
                    raise ValueError(f"filelist {path} lists no clips (expected one 'dir/vid' clip folder per line)")
                return clip_ids
        return None

    def clip_dir(self, index: int) -> Path:
        """Folder of clip ``index``."""
        return self.root / self.records[index].clip_id

    def _load_one(self, index: int, name: str) -> Tensor:
        if name == "mel":
            path = self._audio_path(index)
            with _naming(path, "16 kHz mono 16-bit PCM WAV"):
                return log_mel(read_wav(path, sample_rate=SAMPLE_RATE)[0])
        if name == "rgb":
            frames = []
            for path in self._frame_paths(index):
                with _naming(path, "a JPEG or PNG frame"):
                    frames.append(decode_image(read_file(str(path)), mode=ImageReadMode.RGB))
            size = [self.image_size, self.image_size]
            return torch.stack([f if list(f.shape[-2:]) == size else resize(f, size, antialias=True) for f in frames])
        path = self._reps_path(index, name)
        with _naming(path, "a safetensors file of per-clip representations"), safe_open(str(path), framework="pt") as f:
            return f.get_tensor(name)

    def check(self, representations: Sequence[str]) -> None:
        """Every clip's files for ``representations``: present, non-empty frames, readable headers."""
        for index in range(len(self)):
            for name in representations:
                self._time_length(index, name)

    def window_count(self, index: int, representations: Sequence[str], window: int) -> int:
        """As ``ClipSource.window_count``, from file headers and frame names: nothing is decoded."""
        return min(representation_window_count(name, self._time_length(index, name), window) for name in representations)

    def _time_length(self, index: int, name: str) -> int:
        """Time-axis length of a representation's canonical tensor (mel columns, HuBERT rows, frames)."""
        if self.cache is not None and name in self.cache.get(index, {}):
            return time_length(self.cache[index][name], name)
        if name == "mel":
            path = self._audio_path(index)
            with _naming(path, "16 kHz mono 16-bit PCM WAV"), wave.open(str(path), "rb") as f:
                return num_mel_frames(f.getnframes())
        if name == "rgb":
            return len(self._frame_paths(index))
        path = self._reps_path(index, name)
        with _naming(path, "a safetensors file of per-clip representations"), safe_open(str(path), framework="pt") as f:
            return f.get_slice(name).get_shape()[0]

    def _audio_path(self, index: int) -> Path:
        path = self.clip_dir(index) / "audio.wav"
        if not path.exists():
            raise ValueError(f"clip {self.records[index].clip_id}: missing {path} (16 kHz mono 16-bit PCM audio expected)")
        return path

    def _frame_paths(self, index: int) -> list[Path]:
        """``0.jpg .. n-1.jpg`` of the clip; ``ValueError`` naming the first gap."""
        clip = self.clip_dir(index)
        numbers = sorted(int(p.stem) for p in clip.glob("*.jpg") if re.fullmatch(r"\d+", p.stem))
        if not numbers:
            raise ValueError(f"clip {self.records[index].clip_id}: no frames {clip}/0.jpg, 1.jpg, ... found")
        if numbers != list(range(len(numbers))):
            gap = next(i for i, n in enumerate(numbers) if i != n)
            raise ValueError(
                f"clip {self.records[index].clip_id}: frames must be numbered 0..n-1 without gaps; "
                f"{clip}/{gap}.jpg is missing (remove the clip from the filelist or renumber its frames)"
            )
        paths = [clip / f"{n}.jpg" for n in numbers]
        empty = next((path for path in paths if path.stat().st_size == 0), None)
        if empty is not None:
            raise ValueError(f"clip {self.records[index].clip_id}: frame {empty} is empty (0 bytes), expected a JPEG image")
        return paths

    def _reps_path(self, index: int, name: str) -> Path:
        """``reps.safetensors`` of the clip, checked to hold ``name``."""
        path = self.clip_dir(index) / "reps.safetensors"
        if not path.exists():
            raise ValueError(
                f"clip {self.records[index].clip_id}: representation {name!r} needs {path} "
                f"(precomputed per-clip tensors; e.g. python -m pretrain.extract hubert writes 'hubert')"
            )
        with _naming(path, "a safetensors file of per-clip representations"), safe_open(str(path), framework="pt") as f:
            if name not in f.keys():
                raise ValueError(f"clip {self.records[index].clip_id}: {path} has no key {name!r} (keys: {sorted(f.keys())})")
        return path


class ProceduralSource(ClipSource):
    """The procedural corpus of one split, generated in memory (deterministic in ``seed``).

    The speakers of ``split`` are those ``pretrain.synth.corpus`` assigns to it when it writes the
    corpus to disk, so in-memory and on-disk runs hold out the same speakers. Representations
    derived on request (e.g. mel from the waveform) are computed once and cached.
    """

    def __init__(
        self,
        split: str,
        speakers: int = 16,
        clips_per_speaker: int = 4,
        seconds: float = 3.0,
        preset: str = "default",
        seed: int = 0,
    ):
        _check_split(split)
        from pretrain.synth.corpus import generate_split  # the synthesiser is only needed for this source

        self.clips = generate_split(split, speakers, clips_per_speaker, seconds, preset, seed)
        self.records = [ClipRecord(clip.clip_id, clip.speaker_id, split, clip.coeffs.shape[0]) for clip in self.clips]
        self.cache = {}

    def _load_one(self, index: int, name: str) -> Tensor:
        return self.clips[index].representation(name)


def open_source(spec: Mapping[str, Any] | str, split: str) -> ClipSource:
    """A source from a config ``data`` section (``pretrain.config.DataConfig`` fields) or a folder path.

    A string is a Wav2Lip-layout root, or ``procedural`` / ``procedural:<preset>`` for the default corpus.
    """
    if isinstance(spec, str):
        if spec == "procedural" or spec.startswith("procedural:"):
            spec = {"kind": "procedural", "preset": spec.partition(":")[2] or "default"}
        else:
            spec = {"kind": "folder", "root": spec}
    elif dataclasses.is_dataclass(spec):
        spec = dataclasses.asdict(spec)
    kind = spec.get("kind", "procedural")
    if kind == "folder":
        if not spec.get("root"):
            raise ValueError("data.kind=folder needs data.root (the Wav2Lip-layout folder)")
        return FolderSource(
            spec["root"], split, spec.get("filelist_dir"), spec.get("image_size", 96), spec.get("cache", True)
        )
    if kind == "procedural":
        return ProceduralSource(
            split,
            speakers=spec.get("speakers", 16),
            clips_per_speaker=spec.get("clips_per_speaker", 4),
            seconds=spec.get("seconds", 3.0),
            preset=spec.get("preset", "default"),
            seed=spec.get("corpus_seed", 0),
        )
    raise ValueError(f"data.kind must be 'procedural' or 'folder', got {kind!r}")


def standardisation_statistics(source: ClipSource, representation: str, max_clips: int) -> tuple[Tensor, Tensor]:
    """Mean and std per feature over up to ``max_clips`` evenly spread clips, for ``UniSync.set_statistics``.

    hubert (2n, D) / 3dmm (n, D): per feature, (D,). rgb (n, 3, H, W) uint8: per channel on the
    [0, 1] scale the model receives, (3,).
    """
    indices = range(0, len(source), max(1, len(source) // max_clips))[:max_clips]
    tensors = [source.load(i, [representation])[representation] for i in indices]
    if representation == "rgb":
        rows = torch.cat([t.movedim(1, -1).reshape(-1, 3).float() / 255.0 for t in tensors])
    else:
        rows = torch.cat([t.float() for t in tensors])
    return rows.mean(0), rows.std(0).clamp_min(1e-6)


@contextlib.contextmanager
def _naming(path: Path, expected: str) -> Iterator[None]:
    """Re-raise a reader's error (torchvision, wave, safetensors: often without the path) as ValueError naming ``path``."""
    try:
        yield
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: unreadable, expected {expected} ({error})") from error
    except (RuntimeError, OSError, EOFError, wave.Error, SafetensorError) as error:
        raise ValueError(f"{path}: unreadable, expected {expected} ({type(error).__name__}: {error})") from error


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
