"""The procedural corpus in GeneFace's conventions: binarised audio-to-motion data and expert-training folders.

GeneFace's audio-to-motion data (what its binariser writes per clip, read by ``LRS3SeqDataset``):
``hubert`` ``(2n, 1024)`` at 50 Hz, ``mel`` ``(2n, 80)``, ``coeff`` ``(n, 257)`` Deep3DFaceRecon BFM
coefficients (identity 0:80, expression 80:144, angles 224:227 in radians, translation 254:257) and
``idexp_lm3d`` ``(n, 68, 3)``: identity + expression offsets at the 68 iBUG keypoints, **no mean shape,
no head pose**, model coordinates (x right, y up, z towards the camera).

From the procedural corpus (``pretrain.synth``): ``hubert`` is its HuBERT stand-in, ``mel`` its log-mel
resampled to 50 Hz, ``idexp_lm3d`` = the corpus face model's landmarks of the speaker's identity and the
clip's expression minus the model's mean shape (pose never applied; the corpus model's units, y up),
``coeff`` holds the 64 expression coefficients and the head pose (its identity block stays 0: the
corpus identity basis is not BFM's).

    python -m integrations.geneface.corpus binary --geneface-root PATH --out PATH/data/binary/unisync_procedural
    python -m integrations.geneface.corpus expert-data --out data/geneface_expert          # procedural
    python -m integrations.geneface.corpus expert-data --out DIR --from-binary PATH/data/binary/lrs3 --geneface-root PATH

``expert-data`` writes the folder layout ``pretrain`` reads (``ROOT/<speaker>/<clip>/reps.safetensors`` with
``hubert`` ``(2n, 1024)``, ``landmarks`` ``(n, 20, 3)`` = idexp points 48-67 (exactly what GeneFace's
expert and the adapter see) and ``3dmm`` ``(n, 64)``; ``filelists/{train,val,test}.txt``; ``manifest.json``),
for ``python -m pretrain.train --config pretrain/configs/geneface_hubert_landmarks.yaml``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from unisync_loss.atomic import write_text_atomic
from unisync_loss.audio import HUBERT_PER_FRAME, log_mel
from unisync_loss.progress import progress

from pretrain.synth.clip import Clip
from pretrain.synth.corpus import SPLITS, generate_split
from pretrain.synth.face import FaceModel
from pretrain.synth.speakers import make_speaker

BFM_COEFFS = 257
EXP_COLUMNS = slice(80, 144)
ANGLE_COLUMNS = slice(224, 227)
TRANSLATION_COLUMNS = slice(254, 257)
MOUTH_POINTS = slice(48, 68)


def idexp_landmarks(clip: Clip, seed: int, preset: str) -> np.ndarray:
    """``(n, 68, 3)`` float32 idexp landmarks of a corpus clip: no mean shape, no pose, y up."""
    model = FaceModel.default()
    speaker = make_speaker(seed, int(clip.speaker_id.removeprefix("spk")), preset)
    return (model.landmarks(speaker.face.id_coeffs, clip.coeffs.numpy()) - model.mean[None]).astype(np.float32)


def geneface_item(clip: Clip, seed: int, preset: str, speaker_index: int) -> dict[str, Any]:
    """One clip as GeneFace's binariser stores it (numpy arrays, see the module docstring)."""
    n = clip.n_frames
    mel = log_mel(clip.wave)  # (80, F) at 80 frames per second
    columns = torch.clamp((torch.arange(HUBERT_PER_FRAME * n) * mel.shape[1] / (HUBERT_PER_FRAME * n)).long(), max=mel.shape[1] - 1)
    coeff = np.zeros((n, BFM_COEFFS), dtype=np.float32)
    coeff[:, EXP_COLUMNS] = clip.coeffs.numpy()
    coeff[:, ANGLE_COLUMNS] = np.deg2rad(clip.pose[:, 0:3].numpy())
    coeff[:, TRANSLATION_COLUMNS] = clip.pose[:, 3:6].numpy()
    return {
        "item_id": clip.clip_id.replace("/", "_"),
        "spk_id": clip.speaker_id,
        "spk_idx": speaker_index,
        "hubert": clip.hubert.numpy(),
        "mel": mel[:, columns].T.contiguous().numpy(),
        "coeff": coeff,
        "idexp_lm3d": idexp_landmarks(clip, seed, preset),
    }


def corpus_clips(split: str, speakers: int, clips_per_speaker: int, seconds: float, preset: str, seed: int) -> list[Clip]:
    """The procedural clips of one split (``train`` / ``val`` / ``test`` speakers, as ``pretrain`` splits them)."""
    return generate_split(split, speakers, clips_per_speaker, seconds, preset, seed)


def write_binary(out: Path, clips_by_split: dict[str, list[Clip]], seed: int, preset: str) -> dict[str, int]:
    """Binarise with GeneFace's own ``IndexedDatasetBuilder`` (checkout on ``sys.path``); items per prefix."""
    from utils.commons.indexed_datasets import IndexedDatasetBuilder  # GeneFace's binary format

    out.mkdir(parents=True, exist_ok=True)
    speakers = sorted({clip.speaker_id for clips in clips_by_split.values() for clip in clips})
    counts = {}
    for prefix, clips in clips_by_split.items():
        builder = IndexedDatasetBuilder(str(out / prefix), gzip=False)
        for clip in progress(clips, desc=f"binarising {prefix}"):
            builder.add_item(geneface_item(clip, seed, preset, speakers.index(clip.speaker_id)))
        builder.finalize()
        counts[prefix] = len(clips)
    return counts


def expert_reps(hubert: np.ndarray | torch.Tensor, idexp_lm3d: np.ndarray | torch.Tensor,
                exp: np.ndarray | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``reps.safetensors`` tensors of one clip: hubert ``(2n, D)``, landmarks ``(n, 20, 3)`` (idexp 48-67), 3dmm ``(n, 64)``.

    HuBERT is cut to ``2n`` rows (GeneFace's features may run a frame long); ``ValueError`` when shorter.
    """
    hubert = torch.as_tensor(np.asarray(hubert), dtype=torch.float32)
    landmarks = torch.as_tensor(np.asarray(idexp_lm3d), dtype=torch.float32).reshape(-1, 68, 3)
    n = landmarks.shape[0]
    if hubert.ndim != 2 or hubert.shape[0] < HUBERT_PER_FRAME * n:
        raise ValueError(f"hubert: expected ({HUBERT_PER_FRAME * n}, D) rows for {n} frames, got {tuple(hubert.shape)}")
    tensors = {"hubert": hubert[: HUBERT_PER_FRAME * n].contiguous(), "landmarks": landmarks[:, MOUTH_POINTS].contiguous()}
    if exp is not None:
        tensors["3dmm"] = torch.as_tensor(np.asarray(exp), dtype=torch.float32).contiguous()
    return tensors


def write_expert_data(out: Path, clips: Iterable[tuple[str, str, str, dict[str, torch.Tensor]]]) -> int:
    """Write ``(split, speaker, clip_id, reps)`` as pretrain's folder layout (each clip atomically); clips written."""
    entries, lists = [], {split: [] for split in SPLITS}
    for split, speaker, clip_id, reps in progress(clips, desc="writing clips"):
        folder = out / clip_id
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / ".reps.safetensors.tmp"
        save_file(reps, str(temporary))
        os.replace(temporary, folder / "reps.safetensors")
        entries.append({"id": clip_id, "speaker": speaker, "split": split, "n_frames": int(reps["landmarks"].shape[0])})
        lists[split].append(clip_id)
    (out / "filelists").mkdir(parents=True, exist_ok=True)
    for split, ids in lists.items():
        write_text_atomic(out / "filelists" / f"{split}.txt", "".join(f"{cid}\n" for cid in ids))
    write_text_atomic(out / "manifest.json", json.dumps({"clips": entries}, indent=1))
    return len(entries)


def procedural_expert_clips(speakers: int, clips_per_speaker: int, seconds: float, preset: str,
                            seed: int) -> Iterator[tuple[str, str, str, dict[str, torch.Tensor]]]:
    """``(split, speaker, clip_id, reps)`` of the procedural corpus in GeneFace's landmark convention."""
    for split in SPLITS:
        for clip in corpus_clips(split, speakers, clips_per_speaker, seconds, preset, seed):
            yield split, clip.speaker_id, clip.clip_id, expert_reps(clip.hubert, idexp_landmarks(clip, seed, preset), clip.coeffs)


def binary_expert_clips(binary_dir: Path, val_fraction: float = 0.1) -> Iterator[tuple[str, str, str, dict[str, torch.Tensor]]]:
    """``(split, speaker, clip_id, reps)`` from a GeneFace binarised dataset (``train`` / ``val`` prefixes).

    GeneFace's ``val`` items become our ``test`` split (held out); a ``val_fraction`` of the training
    speakers (by name) becomes ``val``. Reading uses GeneFace's ``IndexedDataset``, which unpickles:
    only point it at data you binarised yourself.
    """
    from utils.commons.indexed_datasets import IndexedDataset

    for prefix in ("train", "val"):
        dataset = IndexedDataset(str(binary_dir / prefix))
        items = [dataset[i] for i in range(len(dataset))]
        speakers = sorted({str(item.get("spk_id", item["item_id"].split("_")[0])) for item in items})
        held = set(speakers[: math.ceil(len(speakers) * val_fraction)]) if prefix == "train" else set()
        for item in items:
            speaker = str(item.get("spk_id", item["item_id"].split("_")[0]))
            split = "test" if prefix == "val" else ("val" if speaker in held else "train")
            exp = np.asarray(item["coeff"])[:, EXP_COLUMNS]
            yield split, speaker, f"{speaker}/{item['item_id']}", expert_reps(item["hubert"], item["idexp_lm3d"], exp)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integrations.geneface.corpus", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    binary = sub.add_parser("binary", help="GeneFace binarised audio-to-motion data (train / val) from the procedural corpus")
    expert = sub.add_parser("expert-data", help="pretrain folder layout in GeneFace's landmark convention")
    for q in (binary, expert):
        q.add_argument("--out", required=True)
        q.add_argument("--speakers", type=int, default=10)
        q.add_argument("--clips-per-speaker", type=int, default=2)
        q.add_argument("--seconds", type=float, default=3.0)
        q.add_argument("--preset", default="default")
        q.add_argument("--seed", type=int, default=0)
    binary.add_argument("--geneface-root", required=True)
    expert.add_argument("--geneface-root", help="needed with --from-binary (GeneFace's reader)")
    expert.add_argument("--from-binary", help="a GeneFace binarised dataset folder (data/binary/<name>) instead of the corpus")
    options = p.parse_args(argv)
    from integrations.geneface.upstream import GeneFaceRootError, check_root, put_on_path

    try:
        if options.command == "binary" or options.from_binary:
            if not options.geneface_root:
                raise ValueError("--from-binary needs --geneface-root (GeneFace's IndexedDataset reads it)")
            put_on_path(check_root(options.geneface_root))
        if options.command == "binary":
            clips = {prefix: corpus_clips(split, options.speakers, options.clips_per_speaker, options.seconds,
                                          options.preset, options.seed)
                     for prefix, split in (("train", "train"), ("val", "val"))}
            counts = write_binary(Path(options.out), clips, options.seed, options.preset)
            print(f"wrote GeneFace binary data to {options.out}: {counts}")
            return 0
        source = (binary_expert_clips(Path(options.from_binary)) if options.from_binary else
                  procedural_expert_clips(options.speakers, options.clips_per_speaker, options.seconds,
                                          options.preset, options.seed))
        count = write_expert_data(Path(options.out), source)
        print(f"wrote {count} clips to {options.out} (reps.safetensors: hubert, landmarks (n, 20, 3), 3dmm)")
        return 0
    except (GeneFaceRootError, ValueError, FileNotFoundError) as error:
        print(f"integrations.geneface.corpus: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
