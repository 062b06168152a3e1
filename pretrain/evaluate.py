"""Evaluate a sync expert: AVST/VocaLiST sync accuracy, offset error and LSE-D / LSE-C analogues.

    python -m pretrain.evaluate --expert E --data D [--split test] [--audio REP --visual REP]
        [--max-offset 15] [--tolerance 1] [--shifts -5 0 5] [--max-clips N] [--out DIR]

E: an expert file or the name of a cached expert (``unisync_loss.experts.load_expert``, e.g.
``mel_rgb``). D: a Wav2Lip-layout folder, ``procedural`` / ``procedural:<preset>`` (the procedural
corpus generated in memory: the one the expert was trained on when its header says so), or a
training config YAML whose ``data`` section is used (so a run is evaluated on exactly the corpus
it was trained on). The default split ``test`` holds the speakers
no training step saw.

Protocol (the math lives in ``unisync_loss.metrics``; this module orchestrates and reports):

* Sign convention: offset ``o`` pairs the visual window starting at video frame ``i`` with the
  audio window starting at frame ``i + o``; ``o > 0`` means the audio that matches the picture
  comes later (audio lags video). A clip in sync has true offset 0.
* Sync accuracy: every valid visual window is scored against the audio windows at offsets
  ``-max_offset .. +max_offset`` (candidates outside the clip are masked, never zero-padded); the
  predicted offset is the argmax of p_sync; a window is correct when ``|predicted - true| <=
  tolerance``. Accuracy is averaged per clip, then over clips.
* Offset error: mean ``|predicted - true|`` over a clip's windows, then over clips
  (``offset_mae``); ``clip_offset_mae`` uses each clip's single offset below.
* LSE analogues: with ``d(o) = 1 - p_sync`` averaged over the clip's windows at offset ``o``,
  distance = ``min_o d`` (LSE-D analogue, lower is better), confidence = ``median_o d - min_o d``
  (LSE-C analogue, higher is better), clip offset = ``argmin_o d`` (same sign convention; note
  syncnet_python reports ``15 - argmin``, i.e. the opposite sign of a 0-based index). Means over clips.
* ``--shifts``: each clip is also evaluated with its audio moved by known offsets ``s`` (true
  offset ``s``) by cropping, never padding: ``s > 0`` drops the first ``s`` video frames, ``s < 0``
  the first ``|s|`` audio frames. Visual windows whose true audio window then lies outside the clip
  are left out (they cannot be right). The mel is cropped at column ``(16 * |s|) // 5``: exact for
  shifts that are multiples of 5 frames, otherwise off by less than one mel step (12.5 ms).
  Accuracy per true offset and the confusion of predicted vs true offset show whether the expert
  (and the sign convention) is right end to end. Headline numbers average over all (clip, shift)
  evaluations; ``per_shift`` holds each shift's.

Outputs: ``OUT/eval.json`` (all numbers, per-shift and per-clip results, confusion matrix, mean
p_sync per offset) and ``OUT/eval.png`` (confusion of predicted vs true offset, or the histogram of
predicted offsets for a single shift, next to mean p_sync vs offset), plus a short summary on stdout.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pretrain.data import ClipSource, open_source
from unisync_loss import metrics
from unisync_loss.audio import mel_start
from unisync_loss.experts import load_expert
from unisync_loss.model import UniSync
from unisync_loss.representations import AUDIO_REPRESENTATIONS, modality
from unisync_loss.windows import HUBERT_PER_FRAME, num_valid_windows

DEFAULT_OUT = "runs/eval"


def shift_clip(tensors: dict[str, Tensor], shift: int) -> dict[str, Tensor]:
    """Crop a clip's canonical tensors so that its true audio-visual offset becomes ``shift`` frames.

    ``tensors`` maps representation names to one clip's canonical tensors (mel (80, F), hubert
    (2n, D), visual (n, ...)). ``shift > 0`` drops the first ``shift`` video frames (the audio now
    lags the video); ``shift < 0`` drops the first ``|shift|`` audio frames (mel from column
    ``mel_start(|shift|)``, hubert from row ``2 |shift|``). ``shift = 0`` returns the input.
    """
    if shift == 0:
        return tensors
    cropped = {}
    for name, tensor in tensors.items():
        if modality(name) == "visual":
            cropped[name] = tensor[max(shift, 0):]
        elif name == "mel":
            cropped[name] = tensor[:, mel_start(max(-shift, 0)):]
        else:
            cropped[name] = tensor[HUBERT_PER_FRAME * max(-shift, 0):]
    return cropped


def _single_head(heads: Sequence[str], kind: str) -> str:
    if len(heads) != 1:
        raise ValueError(f"the expert has {kind} heads {list(heads)}; choose one with --{kind}")
    return heads[0]


class _ShiftStats:
    """Accumulators of one true offset: SyncAccuracy, clip-level sums, predicted-offset counts, p_sync per offset."""

    def __init__(self, shift: int, max_offset: int, tolerance: int, context: int):
        self.shift, self.max_offset, self.tolerance = shift, max_offset, tolerance
        self.accuracy = metrics.SyncAccuracy(tolerance, context)
        self.distance = self.confidence = self.clip_offset_error = 0.0
        self.clip_offsets_correct = 0
        n_offsets = 2 * max_offset + 1
        self.predicted = torch.zeros(n_offsets, dtype=torch.long)
        self.p_sum = torch.zeros(n_offsets, dtype=torch.float64)
        self.p_count = torch.zeros(n_offsets, dtype=torch.long)

    def add(self, probabilities: Tensor) -> dict[str, Any]:
        """Add one clip's ``(W, 2M + 1)`` offset probabilities; returns its per-clip numbers."""
        result = self.accuracy.update(probabilities, self.shift)
        sync = metrics.clip_sync(probabilities)
        offset_error = abs(int(sync.offset) - self.shift)
        self.distance += float(sync.distance)
        self.confidence += float(sync.confidence)
        self.clip_offset_error += offset_error
        self.clip_offsets_correct += int(offset_error <= self.tolerance)
        self.predicted += torch.bincount(result.predicted + self.max_offset, minlength=self.predicted.numel())
        self.p_sum += probabilities.nan_to_num(0.0).double().sum(0)
        self.p_count += (~probabilities.isnan()).sum(0)
        return {
            "windows": int(result.predicted.numel()), "accuracy": float(result.accuracy),
            "offset_error": float(result.offset_error), "offset": int(sync.offset),
            "distance": float(sync.distance), "confidence": float(sync.confidence),
        }

    def mean_p_sync(self) -> list[float | None]:
        """Mean p_sync per candidate offset over every scored window (``None`` where none was scored)."""
        return [None if n == 0 else float(total / n) for total, n in zip(self.p_sum, self.p_count)]

    def summary(self) -> dict[str, Any]:
        """Means over this shift's clips."""
        counts = self.accuracy.compute()
        clips = counts["clips"]
        return {
            "sync_accuracy": float(counts["accuracy"]),
            "offset_mae": float(counts["offset_error"]),
            "clip_offset_mae": self.clip_offset_error / clips,
            "clip_offset_accuracy": self.clip_offsets_correct / clips,
            "lse_d": self.distance / clips,
            "lse_c": self.confidence / clips,
            "clips": clips,
            "windows": counts["windows"],
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
) -> dict[str, Any]:
    """Evaluate ``model`` on the clips ``indices`` of ``source`` (all by default); see the module docstring.

    Each clip is scored once per shift in ``shifts`` (true offsets, ``|shift| <= max_offset``) with
    ``unisync_loss.metrics.score_clip``; visual windows whose true audio window lies outside the
    (cropped) clip are left out, and a clip left without windows is counted in ``skipped``. The
    model is put in eval mode for the call and its previous mode restored.

    Returns a JSON-ready dict: ``sync_accuracy``, ``offset_mae``, ``clip_offset_mae``,
    ``clip_offset_accuracy``, ``lse_d``, ``lse_c``, ``clips``, ``windows`` over all (clip, shift)
    evaluations; ``per_shift`` (the same per true offset); ``confusion`` (``true`` shifts x
    ``predicted`` offsets window counts); ``mean_p_sync`` (per shift, mean p_sync per candidate
    offset, ``None`` where never scored); ``offsets``; ``per_clip`` records; ``skipped``; the settings.
    """
    if audio_rep not in AUDIO_REPRESENTATIONS or modality(visual_rep) != "visual":
        raise ValueError(f"expected an audio and a visual representation, got audio={audio_rep!r}, visual={visual_rep!r}")
    if not model.has_heads(audio_rep, visual_rep):
        raise ValueError(f"the expert cannot score {audio_rep} x {visual_rep}; it has {model.describe_heads()}")
    shifts = sorted(set(int(s) for s in shifts))
    if not shifts or any(abs(s) > max_offset for s in shifts):
        raise ValueError(f"shifts must be a non-empty list of offsets within ±max_offset={max_offset}, got {shifts}")
    indices = range(len(source)) if indices is None else indices
    window = model.config.window
    stats = {shift: _ShiftStats(shift, max_offset, tolerance, context) for shift in shifts}
    per_clip: list[dict[str, Any]] = []
    skipped = 0
    was_training = model.training
    model.eval()
    try:
        for index in tqdm(indices, desc="evaluate", unit="clip", disable=not progress):
            record = source.records[index]
            tensors = source.load(index, [audio_rep, visual_rep])
            for shift in shifts:
                clip = shift_clip(tensors, shift)
                if num_valid_windows(clip, window) == 0:
                    skipped += 1
                    continue
                probabilities = metrics.score_clip(
                    model, clip[audio_rep], clip[visual_rep], audio_rep, visual_rep,
                    batch_size=batch_size, max_offset=max_offset,
                )["probabilities"].cpu()
                probabilities = probabilities[~probabilities[:, shift + max_offset].isnan()]  # truth inside the clip
                if probabilities.shape[0] < context:
                    skipped += 1
                    continue
                numbers = stats[shift].add(probabilities)
                per_clip.append({"clip": record.clip_id, "speaker": record.speaker, "shift": shift, **numbers})
    finally:
        model.train(was_training)
    if not per_clip:
        raise ValueError(f"no clip of {len(indices)} had a complete {window}-frame window to score (skipped {skipped})")

    per_shift = {str(shift): stats[shift].summary() for shift in shifts if int(stats[shift].accuracy.clips)}
    evaluations = len(per_clip)
    offsets = list(range(-max_offset, max_offset + 1))
    overall = {key: sum(s[key] * s["clips"] for s in per_shift.values()) / evaluations
               for key in ("sync_accuracy", "offset_mae", "clip_offset_mae", "clip_offset_accuracy", "lse_d", "lse_c")}
    return {
        "audio": audio_rep, "visual": visual_rep, "window": window, "max_offset": max_offset,
        "tolerance": tolerance, "context": context, "shifts": shifts, **overall,
        "clips": evaluations, "windows": sum(s["windows"] for s in per_shift.values()), "skipped": skipped,
        "per_shift": per_shift,
        "offsets": offsets,
        "confusion": {"true": shifts, "predicted": offsets,
                      "counts": [stats[s].predicted.tolist() for s in shifts]},
        "mean_p_sync": {str(s): stats[s].mean_p_sync() for s in shifts},
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
    shifts = confusion["true"]
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
    for shift, curve in result["mean_p_sync"].items():
        right.plot(offsets, [math.nan if v is None else v for v in curve], marker=".", label=f"true {shift}")
    right.set_xlabel("candidate offset (frames)")
    right.set_ylabel("mean p_sync")
    right.set_ylim(0, 1)
    right.legend(fontsize="small")
    right.set_title(f"sync accuracy {result['sync_accuracy']:.3f} (±{result['tolerance']})")
    figure.suptitle(f"{result['audio']} x {result['visual']}: {result['clips']} clip evaluations "
                    f"({len(shifts)} true offsets), {result['windows']} windows")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def format_summary(result: dict[str, Any]) -> str:
    """A few human-readable lines about an ``evaluate_expert`` result."""
    lines = [
        f"{result['audio']} x {result['visual']} (T={result['window']}): {result['clips']} clip evaluations, "
        f"{result['windows']} windows, {result['skipped']} skipped",
        f"sync accuracy {result['sync_accuracy']:.4f} (argmax over offsets ±{result['max_offset']}, "
        f"correct within ±{result['tolerance']} frame; per clip, then mean)",
        f"offset MAE {result['offset_mae']:.3f} frames per window, {result['clip_offset_mae']:.3f} per clip; "
        f"LSE-D analogue {result['lse_d']:.4f}, LSE-C analogue {result['lse_c']:.4f}",
    ]
    if len(result["per_shift"]) > 1:
        lines += [f"  true offset {shift:>3}: accuracy {s['sync_accuracy']:.4f}, clip offset accuracy "
                  f"{s['clip_offset_accuracy']:.4f}, offset MAE {s['offset_mae']:.3f}"
                  for shift, s in result["per_shift"].items()]
    return "\n".join(lines)


def resolve_data(spec: str, split: str, expert_header: dict[str, Any] | None = None) -> ClipSource:
    """A clip source from ``--data``: a training config YAML (its ``data`` section), a folder or ``procedural[:preset]``.

    ``procedural[:preset]`` means the procedural corpus the expert was trained on, when its header
    records one (same speakers, clips and seed, so ``test`` holds exactly its held-out speakers;
    ``:preset`` changes only the difficulty), else the default procedural corpus.
    """
    if spec.endswith((".yaml", ".yml")) and Path(spec).is_file():
        from pretrain.config import load_config

        return open_source(load_config(spec).data, split)
    trained_on = ((expert_header or {}).get("training") or {}).get("data", {}).get("source", {})
    if (spec == "procedural" or spec.startswith("procedural:")) and trained_on.get("kind") == "procedural":
        preset = spec.partition(":")[2] or trained_on.get("preset", "default")
        return open_source({**trained_on, "preset": preset}, split)
    return open_source(spec, split)


def parse_shifts(text: str) -> list[int]:
    """``"-5,0,5"`` -> ``[-5, 0, 5]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shifts must be comma-separated integers like -5,0,5, got {text!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pretrain.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--expert", required=True, help="expert file, or a cached expert's name such as mel_rgb")
    parser.add_argument("--data", required=True, help="Wav2Lip-layout folder, procedural[:preset], or a training config YAML")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="default test: held-out speakers")
    parser.add_argument("--audio", help="audio representation (default: the expert's only audio head)")
    parser.add_argument("--visual", help="visual representation (default: the expert's only visual head)")
    parser.add_argument("--max-offset", type=int, default=metrics.DEFAULT_MAX_OFFSET, help="offsets scored: -M..M frames")
    parser.add_argument("--tolerance", type=int, default=1, help="a window is correct within ±this many frames")
    parser.add_argument("--context", type=int, default=1, help="average this many consecutive windows first (VocaLiST)")
    parser.add_argument("--shifts", type=parse_shifts, nargs="+", default=[[0]],
                        help="true offsets to evaluate: --shifts -5 0 5 or --shifts=-5,0,5 (default 0)")
    parser.add_argument("--max-clips", type=int, help="evaluate only the first N clips of the split")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder for eval.json and eval.png (default {DEFAULT_OUT})")
    parser.add_argument("--device", default="cpu", help="torch device for the expert, e.g. cuda")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per forward pass")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI entry point; returns the result dict (also written to OUT/eval.json)."""
    args = parse_args(argv)
    try:
        model = load_expert(args.expert, map_location=args.device)
        audio = args.audio or _single_head(list(model.audio_heads), "audio")
        visual = args.visual or _single_head(list(model.visual_heads), "visual")
        source = resolve_data(args.data, args.split, getattr(model, "expert_header", None))
        indices = range(len(source) if args.max_clips is None else min(args.max_clips, len(source)))
        result = evaluate_expert(
            model, source, audio, visual, max_offset=args.max_offset, tolerance=args.tolerance, context=args.context,
            shifts=[shift for group in args.shifts for shift in group], indices=indices, batch_size=args.batch_size, progress=True,
        )
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    result = {"expert": str(args.expert), "data": args.data, "split": args.split, **result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    plot_evaluation(result, out / "eval.png")
    print(format_summary(result))
    print(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")
    return result


if __name__ == "__main__":
    main()
