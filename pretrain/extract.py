"""Offline feature extraction into the per-clip ``reps.safetensors`` files of a Wav2Lip-layout folder.

    python -m pretrain.extract hubert --model LOCAL_DIR --data ROOT [--split all|train|val|test]
        [--layer -1] [--chunk-seconds 20] [--context-seconds 2] [--device cpu|cuda] [--overwrite]

``hubert``: any HuBERT / wav2vec2-style checkpoint directory the user already has (loaded with
transformers' ``AutoModel.from_pretrained(LOCAL_DIR, local_files_only=True)``; nothing is downloaded;
a fine-tuned CTC checkpoint loads as its base encoder). For every clip folder it reads
``audio.wav`` (16 kHz mono), runs the encoder and stores the hidden states of one layer as
``hubert`` (2 * n_frames, D) float32 in ``<clip>/reps.safetensors``, next to any keys already there.

Details that matter for sync:

* Normalisation: when LOCAL_DIR holds a feature-extractor config (``preprocessor_config.json``), the
  waveform goes through that feature extractor (zero-mean / unit-variance when it says
  ``do_normalize``); otherwise the waveform is normalised iff the model's ``feat_extract_norm`` is
  ``"layer"`` (the convention of the wav2vec2 / HuBERT large checkpoints). Always over the whole clip.
* Layers: ``--layer k`` with L transformer layers: 0 is the transformer input (feature projection +
  positional convolution), k in 1..L-1 the output of layer k, L (or -1, the default) the model's
  ``last_hidden_state`` (for pre-LayerNorm models such as hubert-large, after the encoder's final
  LayerNorm: the features GeneFace uses). Negative k counts from L like Python indices.
* Rate: the convolutional front end must have a total stride of 320 samples (50 Hz at 16 kHz);
  frame k covers samples [320k, 320k + R) with R its receptive field (400 for HuBERT).
* Long audio: processed in chunks of ``--chunk-seconds`` whose boundaries lie on the 320-sample
  stride, each run with ``--context-seconds`` of extra audio on both sides of which only the central
  frames are kept, so chunk frame j is exactly frame (chunk start + j) of an unchunked pass. Layers
  below the first attention layer therefore match an unchunked pass to float precision (when the
  front end normalises per time step, ``feat_extract_norm="layer"``; base models' GroupNorm
  normalises over the whole input and so depends on the chunk). Attention layers see the context
  window instead of the whole clip, so deep features differ slightly from an unchunked pass on clips
  longer than one chunk (GeneFace cuts 20 s chunks with no context at all). ``--chunk-seconds 0``
  disables chunking.
* Alignment to the video: a clip of n frame images (``0.jpg .. n-1.jpg``) gets exactly 2n rows
  (HuBERT frames 2i, 2i+1 belong to video frame i): the encoder yields about 2n - 1 frames for audio
  of n / 25 s, missing rows are filled by repeating the last row, surplus rows are dropped. A clip
  whose audio and frames disagree by more than ``MISMATCH_WARN_ROWS`` rows is reported.
* Files: ``reps.safetensors`` is rewritten atomically (temp file + ``os.replace``) with all existing
  tensors and metadata kept, plus metadata ``hubert.model``, ``hubert.layer``, ``hubert.rate_hz``.
  Clips whose file already holds ``hubert`` are skipped unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from pretrain.data import SPLITS, FolderSource
from unisync_loss.atomic import atomic_path
from unisync_loss.audio import HUBERT_FPS, SAMPLE_RATE, read_wav

REPS_FILE = "reps.safetensors"
STRIDE = SAMPLE_RATE // HUBERT_FPS  # 320 samples per output frame
MISMATCH_WARN_ROWS = 5  # 0.1 s: more than this between audio and frames is reported
_FRAME_NAME = re.compile(r"\d+")


@dataclass(frozen=True)
class ExtractSummary:
    """What ``extract_hubert`` did: clips written, skipped (already done) and with audio/frame mismatch."""

    written: int
    skipped: int
    mismatched: list[str]


class HubertExtractor:
    """A local HuBERT / wav2vec2-style encoder producing 50 Hz features of one layer.

    Args:
        model_dir: checkpoint directory (``config.json`` + weights, optional ``preprocessor_config.json``).
        layer: 0 = transformer input, k = output of layer k, -1 / L = ``last_hidden_state`` (see module doc).
        chunk_seconds: chunk length for long audio; ``<= 0`` runs every clip in one pass.
        context_seconds: extra audio each chunk sees on both sides (its frames are discarded).
        device: ``"cpu"`` or ``"cuda"`` (any torch device string).
    """

    def __init__(
        self,
        model_dir: str | Path,
        layer: int = -1,
        chunk_seconds: float = 20.0,
        context_seconds: float = 2.0,
        device: str = "cpu",
    ):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ValueError(f"--model must be a local checkpoint directory with config.json, got {model_dir}")
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
        if kernels is None or strides is None:
            raise ValueError(
                f"{model_dir}: model type {config.model_type!r} has no convolutional waveform front end "
                "(conv_kernel / conv_stride); expected a HuBERT / wav2vec2-style checkpoint"
            )
        if math.prod(strides) != STRIDE:
            raise ValueError(
                f"{model_dir}: front-end stride is {math.prod(strides)} samples, expected {STRIDE} "
                f"({HUBERT_FPS} Hz features from {SAMPLE_RATE} Hz audio)"
            )
        self.kernels, self.strides = list(kernels), list(strides)
        self.receptive_field = 1
        for kernel, stride in zip(reversed(self.kernels), reversed(self.strides)):
            self.receptive_field = (self.receptive_field - 1) * stride + kernel

        n_layers = config.num_hidden_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(f"--layer must be in [{-(n_layers + 1)}, {n_layers}] for this {n_layers}-layer model, got {layer}")
        self.layer = layer % (n_layers + 1)
        self.n_layers = n_layers

        self.feature_extractor = (
            AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
            if (model_dir / "preprocessor_config.json").is_file()
            else None
        )
        self.normalize = getattr(config, "feat_extract_norm", None) == "layer"
        self.device = torch.device(device)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).to(self.device).eval()
        self.name = f"{model_dir.name} ({config.model_type})"
        self.dim = config.hidden_size
        self.chunk_frames = max(0, round(chunk_seconds * HUBERT_FPS))
        self.context_frames = max(0, round(context_seconds * HUBERT_FPS))

    def num_frames(self, samples: int) -> int:
        """Number of output frames for ``samples`` input samples (the conv front end's length formula)."""
        length = samples
        for kernel, stride in zip(self.kernels, self.strides):
            length = max(0, (length - kernel) // stride + 1)
        return length

    def prepare(self, wave: Tensor) -> Tensor:
        """Waveform (S,) at 16 kHz -> model input (S,) float32, normalised as the checkpoint expects."""
        if self.feature_extractor is not None:
            values = self.feature_extractor(wave.numpy(), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
            return values[0].float()
        wave = wave.float()
        if self.normalize:
            return (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
        return wave

    @torch.inference_mode()
    def _run(self, values: Tensor) -> Tensor:
        """Model input (S,) -> features (frames, D) of the selected layer."""
        batch = values[None].to(self.device)
        if self.layer == self.n_layers:
            return self.model(batch).last_hidden_state[0].float().cpu()
        return self.model(batch, output_hidden_states=True).hidden_states[self.layer][0].float().cpu()

    def features(self, wave: Tensor) -> Tensor:
        """Waveform (S,) at 16 kHz -> features (F, D) at 50 Hz, F = ``num_frames(S)``, chunked when long."""
        values = self.prepare(wave)
        total = self.num_frames(values.shape[0])
        if total == 0:
            raise ValueError(f"audio of {values.shape[0]} samples is shorter than one frame ({self.receptive_field} samples)")
        if self.chunk_frames == 0 or total <= self.chunk_frames:
            return self._run(values)
        parts = []
        for first in range(0, total, self.chunk_frames):
            last = min(total, first + self.chunk_frames)
            lo, hi = max(0, first - self.context_frames), min(total, last + self.context_frames)
            segment = values[lo * STRIDE : (hi - 1) * STRIDE + self.receptive_field]
            parts.append(self._run(segment)[first - lo : last - lo])
        return torch.cat(parts)


def align_rows(features: Tensor, rows: int) -> Tensor:
    """(F, D) -> (rows, D): surplus rows dropped, missing rows filled with copies of the last row."""
    if features.shape[0] >= rows:
        return features[:rows]
    return torch.cat([features, features[-1:].expand(rows - features.shape[0], -1)])


def count_frames(clip_dir: Path) -> int:
    """Number of frame images ``0.jpg .. n-1.jpg`` in a clip folder."""
    return sum(1 for p in clip_dir.glob("*.jpg") if _FRAME_NAME.fullmatch(p.stem))


def clip_dirs(root: str | Path, split: str) -> list[Path]:
    """Clip folders of ``split`` (via ``pretrain.data.FolderSource``), or every folder holding ``audio.wav`` for ``"all"``."""
    root = Path(root)
    if split == "all":
        if not root.is_dir():
            raise ValueError(f"--data {root} is not a folder (expected Wav2Lip's layout root/<dir>/<vid>/)")
        return sorted(p.parent for p in root.rglob("audio.wav"))
    source = FolderSource(root, split, cache=False)
    return [source.clip_dir(i) for i in range(len(source))]


def update_reps(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Add or replace ``tensors`` and ``metadata`` entries in a per-clip safetensors file, atomically.

    Every other tensor and metadata entry already in ``path`` is kept.
    """
    merged: dict[str, Tensor] = {}
    merged_meta: dict[str, str] = {}
    if path.exists():
        with safe_open(str(path), framework="pt") as f:
            merged_meta.update(f.metadata() or {})
            merged.update({key: f.get_tensor(key) for key in f.keys()})
    merged.update({key: value.contiguous() for key, value in tensors.items()})
    merged_meta.update(metadata)
    with atomic_path(path) as temporary:
        save_file(merged, str(temporary), metadata=merged_meta)


def has_key(path: Path, key: str) -> bool:
    """Whether the safetensors file ``path`` exists and holds ``key``."""
    if not path.exists():
        return False
    with safe_open(str(path), framework="pt") as f:
        return key in f.keys()


def extract_hubert(
    root: str | Path,
    extractor: HubertExtractor,
    split: str = "all",
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Write ``hubert`` (2 * n_frames, D) into ``reps.safetensors`` of every clip of ``split`` under ``root``."""
    written, skipped, mismatched = 0, 0, []
    metadata = {"hubert.model": extractor.name, "hubert.layer": str(extractor.layer), "hubert.rate_hz": str(HUBERT_FPS)}
    bar = tqdm(clip_dirs(root, split), desc="hubert", unit="clip", disable=not progress)
    for clip in bar:
        reps = clip / REPS_FILE
        if not overwrite and has_key(reps, "hubert"):
            skipped += 1
            continue
        n_frames = count_frames(clip)
        if n_frames == 0:
            raise ValueError(f"clip {clip}: no frame images 0.jpg, 1.jpg, ... (needed to align the features to the video)")
        wave, rate = read_wav(clip / "audio.wav")
        if rate != SAMPLE_RATE:
            raise ValueError(f"clip {clip}: audio.wav is {rate} Hz, expected {SAMPLE_RATE} Hz mono")
        features = extractor.features(wave)
        if abs(features.shape[0] - 2 * n_frames) > MISMATCH_WARN_ROWS:
            mismatched.append(str(clip))
            bar.write(f"warning: {clip}: {features.shape[0]} feature rows for {n_frames} frames (expected ~{2 * n_frames})")
        update_reps(reps, {"hubert": align_rows(features, 2 * n_frames)}, metadata)
        written += 1
    return ExtractSummary(written, skipped, mismatched)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pretrain.extract", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    hubert = commands.add_parser("hubert", help="HuBERT / wav2vec2-style features at 50 Hz -> reps.safetensors 'hubert'")
    hubert.add_argument("--model", required=True, help="local checkpoint directory (never downloaded)")
    hubert.add_argument("--data", required=True, help="Wav2Lip-layout root (one folder per clip: frames + audio.wav)")
    hubert.add_argument("--split", default="all", choices=("all", *SPLITS), help="clips of one filelist, or every clip folder")
    hubert.add_argument("--layer", type=int, default=-1, help="0 = transformer input, k = layer k, -1 = last (default)")
    hubert.add_argument("--chunk-seconds", type=float, default=20.0, help="chunk length for long audio; 0 = no chunking")
    hubert.add_argument("--context-seconds", type=float, default=2.0, help="extra audio on each side of a chunk")
    hubert.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    hubert.add_argument("--overwrite", action="store_true", help="recompute clips whose file already holds 'hubert'")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        extractor = HubertExtractor(args.model, args.layer, args.chunk_seconds, args.context_seconds, args.device)
        summary = extract_hubert(args.data, extractor, args.split, args.overwrite)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(
        f"hubert ({extractor.name}, layer {extractor.layer}/{extractor.n_layers}, dim {extractor.dim}): "
        f"{summary.written} clips written, {summary.skipped} skipped (already done; --overwrite to redo), "
        f"{len(summary.mismatched)} with audio/frame length mismatch"
    )


if __name__ == "__main__":
    main()
