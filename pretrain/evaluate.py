"""Evaluate a sync expert: AVST/VocaLiST sync accuracy, its chance level, offset error and LSE-D / LSE-C analogues.

    python -m pretrain.evaluate --expert E --data D [--split test] [--corpus-seeds 1-8] [--audio REP --visual REP]
        [--max-offset 15] [--tolerance 1] [--shifts -5 0 5] [--offsets offsets.csv] [--max-clips N] [--out DIR]

E: an expert file or the name of an expert that ``unisync experts`` lists (a cached one such as
``mel_rgb`` or a bundled one such as ``procedural_mel_rgb``; ``unisync_loss.experts.load_expert``),
or a third-party expert: Wav2Lip's as ``wav2lip:lipsync_expert.pth``, SyncNet v2 as
``syncnet_v2:syncnet_v2.model``, or either's converted file (``unisync_loss.thirdparty.load_sync_expert``).
SyncNet v2 measures a Euclidean distance on MFCC: the same protocol runs with the smallest
distance as the best offset, its MFCC is computed from each clip's waveform, and the results say
``"measure": "euclidean"`` (distance and confidence then in its units; syncnet_python's own
zero-padded LSE-D / LSE-C are what ``unisync score`` reports).
D: a Wav2Lip-layout folder, ``procedural`` / ``procedural:<preset>`` (the procedural corpus
generated in memory: the one the expert was trained on when its header says so), or a training
config YAML whose ``data`` section is used (so a run is evaluated on exactly the corpus it was
trained on). The default split ``test`` holds the speakers no training step saw.
``--corpus-seeds 1-8`` (procedural data only) pools the split of the same corpus recipe drawn
with each of these corpus seeds: every seed draws new speakers, so 8 seeds give 24 held-out test
speakers instead of 3, enough for a headline figure with its standard error over speakers.

Protocol (the math lives in ``unisync_loss.metrics``; this module orchestrates and reports):

* Sign convention: offset ``o`` pairs the visual window starting at video frame ``i`` with the
  audio window starting at frame ``i + o``; ``o > 0`` means the audio that matches the picture
  comes later (audio lags video). A clip in sync has true offset 0.
* Sync accuracy: every visual window whose true audio window lies inside the clip is scored
  against the audio windows at offsets ``-max_offset .. +max_offset`` (candidates outside the
  clip are masked, never zero-padded); the predicted offset is the argmax of p_sync (the argmin
  of the distance for a Euclidean expert); a window is
  correct when ``|predicted - true| <= tolerance``. Accuracy is averaged per clip, then over clips.
* Chance: the accuracy of guessing uniformly among each window's unmasked candidates
  (``metrics.chance_accuracy``), averaged the same way. Masking leaves the windows near a clip's
  edges fewer candidates, so it is above ``(2 tolerance + 1) / (2 max_offset + 1)`` (3/31 = 9.7 %).
* Speakers: per-speaker accuracy is the mean over that speaker's clip evaluations; with several
  speakers the result also holds their mean and its standard error (sample standard deviation
  over speakers / sqrt(speakers)), the uncertainty that matters when speakers differ.
* Offset error: mean ``|predicted - true|`` over a clip's windows, then over clips
  (``offset_mae``); ``clip_offset_mae`` uses each clip's single offset below.
* LSE analogues: with ``d(o) = 1 - p_sync`` averaged over the clip's windows at offset ``o``,
  distance = ``min_o d`` (LSE-D analogue, lower is better), confidence = ``median_o d - min_o d``
  (LSE-C analogue, higher is better), clip offset = ``argmin_o d`` (same sign convention; note
  syncnet_python reports ``15 - argmin``, i.e. the opposite sign of a 0-based index). Means over clips.
* True offsets: a clip is in sync (true offset 0) unless the data says otherwise: a
  ``true_offset`` field (video frames, sign convention above) of its entry in a folder's
  ``manifest.json``, or a row of ``--offsets CSV`` (columns ``clip,offset``; the CSV wins).
* ``--shifts``: each clip is also evaluated with its audio moved by known offsets ``s`` (true
  offset ``t + s`` for a clip whose own offset is ``t``) by cropping, never padding: ``s > 0`` drops
  the first ``s`` video frames, ``s < 0`` the first ``|s|`` frames of audio. Every shift is exact:
  the waveform loses ``640 |s|`` samples and its mel is recomputed (never cut at a fractional mel
  column); HuBERT loses ``2 |s|`` rows. Visual windows whose true audio window then lies outside
  the clip are left out (they cannot be right); all others are scored, so with audio and video of
  equal length ``-s`` and ``+s`` score the same number of windows. Accuracy per true offset and the
  confusion of predicted vs true offset show whether the expert (and the sign convention) is right
  end to end. Headline numbers average over all (clip, shift) evaluations; ``per_shift`` holds
  each true offset's.

Outputs: ``OUT/eval.json`` (all numbers, per true offset, per speaker and per clip, confusion
matrix, mean p_sync per offset) and ``OUT/eval.png`` (confusion of predicted vs true offset, or the
histogram of predicted offsets for a single one, next to mean p_sync vs offset), both written
atomically, plus a short summary on stdout. ``OUT`` defaults to ``runs/eval/<expert>_<data>``
under the current directory.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from pretrain.data import ClipSource, FolderSource, ProceduralSource, open_source
from unisync_loss import metrics
from unisync_loss.atomic import atomic_path, write_text_atomic
from unisync_loss.audio import HUBERT_PER_FRAME, SAMPLE_RATE, VIDEO_FPS, log_mel, read_wav
from unisync_loss.experts import EXPERT_SUFFIX
from unisync_loss.model import UniSync
from unisync_loss.progress import progress as progress_bar
from unisync_loss.representations import AUDIO_REPRESENTATIONS, modality
from unisync_loss.thirdparty import load_sync_expert, mfcc

WAVE_FEATURES = {"mel": log_mel, "mfcc": mfcc}
"""Audio representations computed from the waveform, recomputed (never cut) when the audio is shifted."""

SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS
"""Audio samples per video frame (640): a shift by ``s`` frames crops ``640 |s|`` samples."""
OUT_ROOT = Path("runs") / "eval"
"""Evaluations are written to ``OUT_ROOT/<expert>_<data>`` (relative to the current directory) by default."""


class PooledSource(ClipSource):
    """Several clip sources as one: clip ids and speakers become ``<label>/<id>`` so equal names stay apart.

    ``sources`` maps a label (e.g. ``seed3``) to a source; clips keep their order, source by source.
    """

    def __init__(self, sources: Mapping[str, ClipSource]):
        self.parts: list[tuple[ClipSource, int]] = []
        self.records = []
        for label, source in sources.items():
            for index, record in enumerate(source.records):
                self.parts.append((source, index))
                self.records.append(dataclasses.replace(
                    record, clip_id=f"{label}/{record.clip_id}", speaker=f"{label}/{record.speaker}"))

    def load(self, index: int, representations: Sequence[str]) -> dict[str, Tensor]:
        source, local = self.parts[index]
        return source.load(local, representations)


def clip_waveform(source: ClipSource, index: int) -> Tensor | None:
    """The 16 kHz waveform ``(S,)`` of clip ``index``: a procedural clip's, or a folder clip's ``audio.wav``.

    ``None`` for a source without waveforms (then the mel cannot be shifted exactly).
    """
    if isinstance(source, PooledSource):
        return clip_waveform(*source.parts[index])
    if isinstance(source, ProceduralSource):
        return source.clips[index].wave
    if isinstance(source, FolderSource):
        return read_wav(source.clip_dir(index) / "audio.wav", sample_rate=SAMPLE_RATE)[0]
    return None


def shift_clip(tensors: dict[str, Tensor], shift: int, waveform: Tensor | None = None) -> dict[str, Tensor]:
    """Crop a clip's canonical tensors so that its audio moves by exactly ``shift`` video frames.

    ``tensors`` maps representation names to one clip's canonical tensors (mel (80, F), hubert
    (2n, D), visual (n, ...)). ``shift > 0`` drops the first ``shift`` video frames (the audio now
    lags the video); ``shift < 0`` drops the first ``|shift|`` frames of audio: hubert from row
    ``2 |shift|``, and the mel (or SyncNet v2's MFCC) recomputed from ``waveform`` ``(S,)`` without
    its first ``640 |shift|`` samples (needed then: cutting the mel itself would move it by a
    fraction of a mel step whenever ``|shift|`` is not a multiple of 5). ``shift = 0`` returns the input.
    """
    if shift == 0:
        return tensors
    cropped = {}
    for name, tensor in tensors.items():
        if name not in WAVE_FEATURES and modality(name) == "visual":
            cropped[name] = tensor[max(shift, 0):]
        elif shift > 0:
            cropped[name] = tensor
        elif name in WAVE_FEATURES:
            if waveform is None:
                raise ValueError(f"shifting the {name} by {shift} frames needs the clip's waveform (recomputed, never cut)")
            cropped[name] = WAVE_FEATURES[name](waveform[SAMPLES_PER_FRAME * -shift:])
        else:
            cropped[name] = tensor[HUBERT_PER_FRAME * -shift:]
    return cropped


def known_offsets(source: ClipSource, csv_path: str | Path | None = None) -> dict[str, int]:
    """True offsets (video frames) of the clips that are not in sync, by clip id.

    From the ``true_offset`` fields of a folder's ``manifest.json`` entries, then from ``csv_path``
    (header ``clip,offset``; its rows win). ``ValueError`` for a malformed row or a clip id the
    source does not hold.
    """
    offsets: dict[str, int] = {}
    manifest = source.root / "manifest.json" if isinstance(source, FolderSource) else None
    if manifest is not None and manifest.is_file():
        for entry in json.loads(manifest.read_text(encoding="utf-8")).get("clips", []):
            if "true_offset" in entry:
                offsets[entry["id"]] = _offset_value(entry["true_offset"], f"{manifest}: clip {entry['id']}")
    if csv_path is not None:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not {"clip", "offset"} <= set(reader.fieldnames or ()):
                raise ValueError(f"{csv_path}: expected a header with columns clip,offset; got {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                offsets[row["clip"].strip()] = _offset_value(row["offset"], f"{csv_path} line {line}")
        unknown = sorted(set(offsets) - {record.clip_id for record in source.records})
        if unknown:
            raise ValueError(f"{csv_path}: {len(unknown)} clip id(s) not in the data, e.g. {unknown[:3]} "
                             f"(ids look like {source.records[0].clip_id!r})")
    return offsets


def _offset_value(value: Any, where: str) -> int:
    try:
        offset = float(value)
    except (TypeError, ValueError):
        offset = math.nan
    if not offset.is_integer():
        raise ValueError(f"{where}: a true offset must be a whole number of video frames, got {value!r}")
    return int(offset)


def _single_head(heads: Sequence[str], kind: str) -> str:
    if len(heads) != 1:
        raise ValueError(f"the expert has {kind} heads {list(heads)}; choose one with --{kind}")
    return heads[0]


class _OffsetStats:
    """Accumulators of one true offset: SyncAccuracy, clip-level sums, predicted-offset counts, p_sync per offset."""

    def __init__(self, true_offset: int, max_offset: int, tolerance: int, context: int, measure: str = "cosine"):
        self.true_offset, self.max_offset, self.tolerance, self.measure = true_offset, max_offset, tolerance, measure
        self.accuracy = metrics.SyncAccuracy(tolerance, context)
        self.distance = self.confidence = self.clip_offset_error = 0.0
        self.clip_offsets_correct = 0
        n_offsets = 2 * max_offset + 1
        self.predicted = torch.zeros(n_offsets, dtype=torch.long)
        self.p_sum = torch.zeros(n_offsets, dtype=torch.float64)
        self.p_count = torch.zeros(n_offsets, dtype=torch.long)

    def add(self, probabilities: Tensor) -> dict[str, Any]:
        """Add one clip's ``(W, 2M + 1)`` offset scores (p_sync, or negative distances; scored windows only); returns its per-clip numbers."""
        result = self.accuracy.update(probabilities, self.true_offset)
        chance = metrics.chance_accuracy(probabilities, self.true_offset, self.tolerance, self.accuracy.context)
        sync = metrics.clip_sync(probabilities, self.measure)
        offset_error = abs(int(sync.offset) - self.true_offset)
        self.distance += float(sync.distance)
        self.confidence += float(sync.confidence)
        self.clip_offset_error += offset_error
        self.clip_offsets_correct += int(offset_error <= self.tolerance)
        self.predicted += torch.bincount(result.predicted + self.max_offset, minlength=self.predicted.numel())
        self.p_sum += probabilities.nan_to_num(0.0).double().sum(0)
        self.p_count += (~probabilities.isnan()).sum(0)
        return {
            "windows": int(result.predicted.numel()), "accuracy": float(result.accuracy),
            "chance": float(chance),
            "offset_error": float(result.offset_error), "offset": int(sync.offset),
            "distance": float(sync.distance), "confidence": float(sync.confidence),
        }

    def mean_p_sync(self) -> list[float | None]:
        """Mean p_sync (a Euclidean expert: mean distance) per candidate offset over every scored window (``None`` where none was scored)."""
        sign = 1.0 if self.measure == "cosine" else -1.0
        return [None if n == 0 else sign * float(total / n) for total, n in zip(self.p_sum, self.p_count)]

    def summary(self) -> dict[str, Any]:
        """Means over this true offset's clips."""
        counts = self.accuracy.compute()
        clips = counts["clips"]
        return {
            "sync_accuracy": float(counts["accuracy"]),
            "chance": float(counts["chance"]),
            "offset_mae": float(counts["offset_error"]),
            "clip_offset_mae": self.clip_offset_error / clips,
            "clip_offset_accuracy": self.clip_offsets_correct / clips,
            "lse_d": self.distance / clips,
            "lse_c": self.confidence / clips,
            "clips": clips,
            "windows": counts["windows"],
        }


def speaker_statistics(per_clip: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-speaker accuracy and chance (means over each speaker's clip evaluations), their mean and standard error.

    Returns ``{"speakers": n, "speaker_accuracy_mean": float, "speaker_accuracy_se": float | None
    (sample standard deviation over speakers / sqrt(n); None for one speaker), "per_speaker":
    {speaker: {"sync_accuracy", "chance", "clips"}}}``.
    """
    by_speaker: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in per_clip:
        by_speaker[record["speaker"]].append(record)
    per_speaker = {
        speaker: {"sync_accuracy": statistics.fmean(r["accuracy"] for r in records),
                  "chance": statistics.fmean(r["chance"] for r in records), "clips": len(records)}
        for speaker, records in sorted(by_speaker.items())
    }
    accuracies = [entry["sync_accuracy"] for entry in per_speaker.values()]
    return {
        "speakers": len(accuracies),
        "speaker_accuracy_mean": statistics.fmean(accuracies),
        "speaker_accuracy_se": statistics.stdev(accuracies) / math.sqrt(len(accuracies)) if len(accuracies) > 1 else None,
        "per_speaker": per_speaker,
    }


def evaluate_expert(
    model: UniSync,
    source: ClipSource,
    audio_rep: str,
    visual_rep: str,
    *,
    max_offset: int = metrics.DEFAULT_MAX_OFFSET,
    tolerance: int = 1,
    context: int = 1,
    shifts: Sequence[int] = (0,),
    indices: Sequence[int] | None = None,
    batch_size: int = 256,
    progress: bool = False,
    true_offsets: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on the clips ``indices`` of ``source`` (all by default); see the module docstring.

    Each clip is scored once per shift in ``shifts`` (``|shift| <= max_offset``) with
    ``unisync_loss.metrics.score_clip``, its truth being its own true offset (``true_offsets`` by
    clip id, 0 when absent) plus the shift; an evaluation whose truth lies beyond ``max_offset``
    or that is left without a complete window to score is counted in ``skipped``. The model is put
    in eval mode for the call and its previous mode restored.

    Returns a JSON-ready dict: ``sync_accuracy``, ``chance``, ``offset_mae``, ``clip_offset_mae``,
    ``clip_offset_accuracy``, ``lse_d``, ``lse_c``, ``clips``, ``windows`` over all (clip, shift)
    evaluations; ``speakers``, ``speaker_accuracy_mean``, ``speaker_accuracy_se`` and
    ``per_speaker`` (see :func:`speaker_statistics`); ``per_shift`` (the same numbers per true
    offset); ``confusion`` (``true`` offsets x ``predicted`` offsets window counts);
    ``mean_p_sync`` (per true offset, mean p_sync per candidate offset, ``None`` where never
    scored; ``mean_distance`` instead for a Euclidean expert); ``measure``; ``offsets``; ``per_clip`` records; ``skipped``; ``known_offsets`` (clips with a true
    offset of their own); the settings.
    """
    if (audio_rep not in AUDIO_REPRESENTATIONS and audio_rep not in WAVE_FEATURES) or modality(visual_rep) != "visual":
        raise ValueError(f"expected an audio and a visual representation, got audio={audio_rep!r}, visual={visual_rep!r}")
    if not model.has_heads(audio_rep, visual_rep):
        raise ValueError(f"the expert cannot score {audio_rep} x {visual_rep}; it has {model.describe_heads()}")
    shifts = sorted(set(int(s) for s in shifts))
    if not shifts or any(abs(s) > max_offset for s in shifts):
        raise ValueError(f"shifts must be a non-empty list of offsets within ±max_offset={max_offset}, got {shifts}")
    true_offsets = dict(true_offsets or {})
    indices = range(len(source)) if indices is None else indices
    window = model.config.window
    measure = getattr(model, "measure", "cosine")
    stats: dict[int, _OffsetStats] = {}
    per_clip: list[dict[str, Any]] = []
    skipped = 0
    was_training = model.training
    model.eval()
    try:
        for index in progress_bar(indices, desc="evaluate", disable=not progress):
            record = source.records[index]
            from_wave = audio_rep == "mfcc"  # third-party features no clip source stores
            tensors = source.load(index, [visual_rep] if from_wave else [audio_rep, visual_rep])
            needs_wave = from_wave or (audio_rep in WAVE_FEATURES and min(shifts) < 0)
            waveform = clip_waveform(source, index) if needs_wave else None
            if from_wave:
                if waveform is None:
                    raise ValueError(f"{audio_rep} is computed from the clip's waveform, which this data source does not hold")
                tensors = {**tensors, audio_rep: WAVE_FEATURES[audio_rep](waveform)}
            own_offset = true_offsets.get(record.clip_id, 0)
            for shift in shifts:
                truth = own_offset + shift
                clip = shift_clip(tensors, shift, waveform)
                rows = metrics.visual_window_count(clip[audio_rep], clip[visual_rep], audio_rep, visual_rep, window, truth)
                if abs(truth) > max_offset or rows - max(0, -truth) < context:
                    skipped += 1
                    continue
                probabilities = metrics.score_clip(
                    model, clip[audio_rep], clip[visual_rep], audio_rep, visual_rep,
                    batch_size=batch_size, max_offset=max_offset, true_offset=truth,
                )["probabilities"].cpu()
                probabilities = probabilities[~probabilities[:, truth + max_offset].isnan()]  # truth inside the clip
                offset_stats = stats.setdefault(truth, _OffsetStats(truth, max_offset, tolerance, context, measure))
                numbers = offset_stats.add(probabilities)
                per_clip.append({"clip": record.clip_id, "speaker": record.speaker, "shift": shift,
                                 "true_offset": truth, **numbers})
    finally:
        model.train(was_training)
    if not per_clip:
        raise ValueError(f"no clip of {len(indices)} had a complete {window}-frame window to score (skipped {skipped})")

    truths = sorted(stats)
    per_shift = {str(truth): stats[truth].summary() for truth in truths}
    evaluations = len(per_clip)
    offsets = list(range(-max_offset, max_offset + 1))
    overall = {key: sum(s[key] * s["clips"] for s in per_shift.values()) / evaluations
               for key in ("sync_accuracy", "chance", "offset_mae", "clip_offset_mae", "clip_offset_accuracy", "lse_d", "lse_c")}
    return {
        "audio": audio_rep, "visual": visual_rep, "measure": measure, "window": window, "max_offset": max_offset,
        "tolerance": tolerance, "context": context, "shifts": shifts, **overall,
        "clips": evaluations, "windows": sum(s["windows"] for s in per_shift.values()), "skipped": skipped,
        "known_offsets": sum(1 for index in indices if source.records[index].clip_id in true_offsets),
        **speaker_statistics(per_clip),
        "per_shift": per_shift,
        "offsets": offsets,
        "confusion": {"true": truths, "predicted": offsets,
                      "counts": [stats[truth].predicted.tolist() for truth in truths]},
        "mean_p_sync" if measure == "cosine" else "mean_distance": {str(truth): stats[truth].mean_p_sync() for truth in truths},
        "per_clip": per_clip,
    }


def sync_accuracy(
    model: UniSync, source: ClipSource, audio_rep: str, visual_rep: str, indices: Sequence[int] | None = None
) -> float:
    """Held-out sync accuracy (AVST protocol, in-sync clips, defaults of ``evaluate_expert``) as one number."""
    return evaluate_expert(model, source, audio_rep, visual_rep, indices=indices)["sync_accuracy"]


def plot_evaluation(result: dict[str, Any], path: str | Path) -> Path:
    """Write the PNG of an ``evaluate_expert`` result.

    Left: the confusion of predicted vs true offset (rows normalised) when several shifts were
    evaluated, else the histogram of predicted offsets. Right: mean p_sync vs candidate offset, one
    curve per true offset.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offsets = result["offsets"]
    confusion = result["confusion"]
    shifts = confusion["true"]  # true offsets
    counts = torch.tensor(confusion["counts"], dtype=torch.float64)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if len(shifts) > 1:
        rates = counts / counts.sum(1, keepdim=True).clamp_min(1)
        image = left.imshow(rates.numpy(), aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                            extent=(offsets[0] - 0.5, offsets[-1] + 0.5, -0.5, len(shifts) - 0.5))
        left.set_yticks(range(len(shifts)), [str(s) for s in shifts])
        left.set_ylabel("true offset (frames)")
        figure.colorbar(image, ax=left, label="share of windows")
        left.set_title("predicted vs true offset")
    else:
        left.bar(offsets, counts[0].numpy(), width=0.9)
        left.set_ylabel("windows")
        left.set_title(f"predicted offsets (true offset {shifts[0]})")
    left.set_xlabel("predicted offset (frames, + = audio lags video)")
    cosine = result.get("measure", "cosine") == "cosine"
    for shift, curve in result["mean_p_sync" if cosine else "mean_distance"].items():
        right.plot(offsets, [math.nan if v is None else v for v in curve], marker=".", label=f"true {shift}")
    right.set_xlabel("candidate offset (frames)")
    right.set_ylabel("mean p_sync" if cosine else "mean Euclidean distance")
    if cosine:
        right.set_ylim(0, 1)
    right.legend(fontsize="small")
    right.set_title(f"sync accuracy {result['sync_accuracy']:.3f} (±{result['tolerance']}), chance {result['chance']:.3f}")
    figure.suptitle(f"{result['audio']} x {result['visual']}: {result['clips']} clip evaluations "
                    f"({len(shifts)} true offsets), {result['windows']} windows")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return path


def format_summary(result: dict[str, Any]) -> str:
    """A few human-readable lines about an ``evaluate_expert`` result."""
    lines = [
        f"{result['audio']} x {result['visual']} (T={result['window']}): {result['clips']} clip evaluations, "
        f"{result['speakers']} speakers, {result['windows']} windows, {result['skipped']} skipped",
        f"sync accuracy {result['sync_accuracy']:.4f}, chance {result['chance']:.4f} ("
        + ("argmax of p_sync" if result.get("measure", "cosine") == "cosine" else "smallest Euclidean distance")
        + f" over offsets ±{result['max_offset']}, correct within ±{result['tolerance']} frame; per clip, then mean)",
        f"offset MAE {result['offset_mae']:.3f} frames per window, {result['clip_offset_mae']:.3f} per clip; "
        f"LSE-D analogue {result['lse_d']:.4f}, LSE-C analogue {result['lse_c']:.4f} "
        f"({'1 - p_sync' if result.get('measure', 'cosine') == 'cosine' else 'Euclidean distance, masked offsets'})",
    ]
    if result["speaker_accuracy_se"] is not None:
        lines.append(f"over {result['speakers']} speakers: sync accuracy {result['speaker_accuracy_mean']:.4f} "
                     f"± {result['speaker_accuracy_se']:.4f} (mean ± standard error)")
    if len(result["per_shift"]) > 1:
        lines += [f"  true offset {shift:>3}: accuracy {s['sync_accuracy']:.4f} (chance {s['chance']:.4f}), "
                  f"clip offset accuracy {s['clip_offset_accuracy']:.4f}, offset MAE {s['offset_mae']:.3f}"
                  for shift, s in result["per_shift"].items()]
    return "\n".join(lines)


def resolve_data(
    spec: str, split: str, expert_header: dict[str, Any] | None = None, corpus_seeds: Sequence[int] | None = None
) -> ClipSource:
    """A clip source from ``--data``: a training config YAML (its ``data`` section), a folder or ``procedural[:preset]``.

    ``procedural[:preset]`` means the procedural corpus the expert was trained on, when its header
    records one (same speakers, clips and seed, so ``test`` holds exactly its held-out speakers;
    ``:preset`` changes only the difficulty), else the default procedural corpus. ``corpus_seeds``
    (procedural data only) pools ``split`` of that corpus drawn with each seed instead of its own
    (:func:`held_out_source`).
    """
    if spec.endswith((".yaml", ".yml")) and Path(spec).is_file():
        from pretrain.config import load_config

        data: Mapping[str, Any] | str = dataclasses.asdict(load_config(spec).data)
    else:
        trained_on = ((expert_header or {}).get("training") or {}).get("data", {}).get("source", {})
        data = spec
        if (spec == "procedural" or spec.startswith("procedural:")) and trained_on.get("kind") == "procedural":
            data = {**trained_on, "preset": spec.partition(":")[2] or trained_on.get("preset", "default")}
    if not corpus_seeds:
        return open_source(data, split)
    if isinstance(data, str) and data.startswith("procedural"):
        data = {"kind": "procedural", "preset": data.partition(":")[2] or "default"}
    if isinstance(data, str) or data.get("kind", "procedural") != "procedural":
        raise ValueError(f"--corpus-seeds applies to the procedural corpus only, not to {spec!r}")
    return held_out_source(data, corpus_seeds, split)


def held_out_source(data: Mapping[str, Any], corpus_seeds: Sequence[int], split: str = "test") -> PooledSource:
    """``split`` of the procedural corpus ``data`` (a config ``data`` section) drawn with each of ``corpus_seeds``, pooled.

    A corpus seed draws every speaker anew, so the speakers of other seeds are as unseen by an
    expert trained on one seed as its own test speakers: with the default recipe (3 test speakers
    per corpus) 8 seeds give 24 held-out speakers. Speakers and clips are labelled ``seed<k>/...``.
    """
    if len(set(corpus_seeds)) != len(corpus_seeds) or not corpus_seeds:
        raise ValueError(f"corpus seeds must be distinct and at least one, got {list(corpus_seeds)}")
    return PooledSource({f"seed{seed}": open_source({**data, "kind": "procedural", "corpus_seed": seed}, split)
                         for seed in corpus_seeds})


def default_out(expert: str, data: str, split: str = "test", corpus_seeds: Sequence[int] | None = None) -> Path:
    """``runs/eval/<expert>_<data>`` under the current directory, e.g. ``runs/eval/procedural_mel_rgb_procedural-seeds1-8``.

    ``<expert>`` is the expert's file name without ``.safetensors``; ``<data>`` names the data
    (``procedural``, ``procedural-hard``, a folder's or config's name), then ``-seeds<a>-<b>`` for
    pooled corpus seeds and ``-<split>`` for a split other than ``test``.
    """
    expert_name = Path(expert).name.removesuffix(EXPERT_SUFFIX)
    data_name = data.replace(":", "-") if data.startswith("procedural") else Path(data).resolve().stem
    if corpus_seeds:
        seeds = sorted(corpus_seeds)
        contiguous = seeds == list(range(seeds[0], seeds[-1] + 1))
        data_name += f"-seeds{seeds[0]}-{seeds[-1]}" if contiguous else "-seeds" + "_".join(map(str, seeds))
    if split != "test":
        data_name += f"-{split}"
    return OUT_ROOT / re.sub(r"[^A-Za-z0-9._-]+", "_", f"{expert_name}_{data_name}")


def write_json(result: Mapping[str, Any], path: Path) -> Path:
    """Write ``result`` as indented JSON, atomically (a temporary file, then a rename)."""
    write_text_atomic(path, json.dumps(result, indent=1))
    return path





def parse_shifts(text: str) -> list[int]:
    """``"-5,0,5"`` -> ``[-5, 0, 5]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shifts must be comma-separated integers like -5,0,5, got {text!r}") from None


def parse_seeds(text: str) -> list[int]:
    """``"1-8"`` -> ``[1, ..., 8]``; ``"1,4,9"`` -> ``[1, 4, 9]``; both forms combine (``"1-3,7"``)."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, _, last = part.partition("-")
            seeds += range(int(first), int(last or first) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--corpus-seeds must look like 1-8 or 1,2,3, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--corpus-seeds must name non-negative seeds like 1-8, got {text!r}")
    return seeds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pretrain.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--expert", required=True,
                        help="expert file, a name `unisync experts` lists (mel_rgb, procedural_mel_rgb, ...), "
                             "wav2lip:CHECKPOINT.pth or syncnet_v2:syncnet_v2.model")
    parser.add_argument("--data", required=True, help="Wav2Lip-layout folder, procedural[:preset], or a training config YAML")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="default test: held-out speakers")
    parser.add_argument("--corpus-seeds", type=parse_seeds, metavar="SEEDS",
                        help="procedural data: pool the split of the corpus drawn with these seeds (1-8: 24 test speakers)")
    parser.add_argument("--audio", help="audio representation (default: the expert's only audio head)")
    parser.add_argument("--visual", help="visual representation (default: the expert's only visual head)")
    parser.add_argument("--max-offset", type=int, default=metrics.DEFAULT_MAX_OFFSET, help="offsets scored: -M..M frames")
    parser.add_argument("--tolerance", type=int, default=1, help="a window is correct within ±this many frames")
    parser.add_argument("--context", type=int, default=1, help="average this many consecutive windows first (VocaLiST)")
    parser.add_argument("--shifts", type=parse_shifts, nargs="+", default=[[0]],
                        help="offsets to move the audio by: --shifts -5 0 5 or --shifts=-5,0,5 (default 0)")
    parser.add_argument("--offsets", metavar="CSV", help="true offsets of clips that are not in sync: columns clip,offset (frames)")
    parser.add_argument("--max-clips", type=int, help="evaluate only the first N clips of the split")
    parser.add_argument("--out", type=Path, help=f"folder for eval.json and eval.png (default {OUT_ROOT}/<expert>_<data>)")
    parser.add_argument("--device", default="cpu", help="torch device for the expert, e.g. cuda")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per forward pass")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result dict (also written to OUT/eval.json)."""
    args = parse_args(argv)
    try:
        model = load_sync_expert(args.expert, map_location=args.device)
        if isinstance(model, UniSync):
            audio_heads, visual_heads = list(model.audio_heads), list(model.visual_heads)
        else:  # Wav2Lip's expert (p_sync) or SyncNet v2 (Euclidean distance, best offset = smallest)
            audio_heads, visual_heads = [model.config.audio], [model.config.visual]
        audio = args.audio or _single_head(audio_heads, "audio")
        visual = args.visual or _single_head(visual_heads, "visual")
        source = resolve_data(args.data, args.split, getattr(model, "expert_header", None), args.corpus_seeds)
        indices = range(len(source) if args.max_clips is None else min(args.max_clips, len(source)))
        result = evaluate_expert(
            model, source, audio, visual, max_offset=args.max_offset, tolerance=args.tolerance, context=args.context,
            shifts=[shift for group in args.shifts for shift in group], indices=indices, batch_size=args.batch_size,
            progress=True, true_offsets=known_offsets(source, args.offsets),
        )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    result = {"expert": str(args.expert), "data": args.data, "split": args.split, "corpus_seeds": args.corpus_seeds,
              "offsets_csv": args.offsets, **result}
    out = args.out or default_out(args.expert, args.data, args.split, args.corpus_seeds)
    write_json(result, out / "eval.json")
    plot_evaluation(result, out / "eval.png")
    print(format_summary(result))
    print(f"wrote {(out / 'eval.json').resolve()} and {(out / 'eval.png').resolve()}")
    return result


if __name__ == "__main__":
    main()
