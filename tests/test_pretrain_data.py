"""Clip sources (pretrain.data): Wav2Lip-layout folders with filelists, manifest and reps; clear errors."""
import json
import wave

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchvision.io import encode_jpeg, write_file

from pretrain.data import FolderSource, open_source, standardisation_statistics
from unisync_loss.windows import num_valid_windows

N_FRAMES = 14


def write_clip(folder, n_frames=N_FRAMES, size=64, seconds=None, reps=True):
    folder.mkdir(parents=True)
    for i in range(n_frames):
        frame = torch.full((3, size, size), 20 * (i % 10), dtype=torch.uint8)
        frame[0] = 200  # red channel high: checks RGB order survives decoding
        write_file(str(folder / f"{i}.jpg"), encode_jpeg(frame, quality=95))
    samples = int(16000 * (seconds if seconds is not None else n_frames / 25))
    with wave.open(str(folder / "audio.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(samples) / 7.0) * 8000).astype("<i2").tobytes())
    if reps:
        save_file({"3dmm": torch.arange(n_frames * 64, dtype=torch.float32).reshape(n_frames, 64)}, str(folder / "reps.safetensors"))


@pytest.fixture
def root(tmp_path):
    for clip in ("spkA/c0", "spkA/c1", "spkB/c0", "spkC/c0"):
        write_clip(tmp_path / clip)
    (tmp_path / "filelists").mkdir()
    (tmp_path / "filelists" / "train.txt").write_text("spkA/c0\nspkA/c1\nspkB/c0 NF\n\n")
    return tmp_path


def test_folder_source_reads_wav2lip_layout(root):
    source = FolderSource(root, "train", image_size=48)
    assert [r.clip_id for r in source.records] == ["spkA/c0", "spkA/c1", "spkB/c0"]
    assert [r.speaker for r in source.records] == ["spkA", "spkA", "spkB"]  # parent folder
    clip = source.load(0, ["rgb", "mel", "3dmm"])
    assert clip["rgb"].shape == (N_FRAMES, 3, 48, 48) and clip["rgb"].dtype == torch.uint8
    assert clip["rgb"][:, 0].float().mean() > 150 and clip["rgb"][:, 1].float().mean() < 120
    assert clip["mel"].shape == (80, 1 + (16000 * N_FRAMES // 25) // 200)
    assert torch.equal(clip["3dmm"][1], torch.arange(64, 128, dtype=torch.float32))
    assert source.load(0, ["rgb"])["rgb"] is clip["rgb"]  # cached
    assert source.window_count(0, ["mel", "3dmm"], 5) == N_FRAMES - 5 + 1
    mean, std = standardisation_statistics(source, "3dmm", max_clips=2)
    assert mean.shape == std.shape == (64,)


def test_window_count_from_headers_matches_loaded_tensors(root):
    write_clip(root / "spkD" / "short_audio", seconds=0.4)  # 10 frames of audio for 14 of video
    (root / "filelists" / "test.txt").write_text("spkA/c0\nspkD/short_audio\n")
    source = FolderSource(root, "test", cache=False)
    for index in range(2):
        for reps in (["mel", "rgb"], ["mel", "3dmm"], ["rgb"]):
            assert source.window_count(index, reps, 5) == num_valid_windows(source.load(index, reps), 5)
    assert source.window_count(1, ["mel", "rgb"], 5) < source.window_count(1, ["rgb"], 5) == N_FRAMES - 4


def test_manifest_and_filelist_dir(root, tmp_path_factory):
    manifest = {"clips": [{"id": "spkA/c0", "speaker": "alice", "split": "val", "n_frames": N_FRAMES},
                          {"id": "spkC/c0", "speaker": "carol", "split": "test", "n_frames": N_FRAMES}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    train = FolderSource(root, "train")
    assert [r.speaker for r in train.records] == ["alice", "spkA", "spkB"]  # manifest wins over the folder name
    test = open_source({"kind": "folder", "root": str(root)}, "test")  # no test.txt: split from the manifest
    assert [(r.clip_id, r.speaker, r.n_frames) for r in test.records] == [("spkC/c0", "carol", N_FRAMES)]
    lists = tmp_path_factory.mktemp("lists")
    (lists / "train.txt").write_text("spkC/c0\n")
    assert [r.clip_id for r in FolderSource(root, "train", filelist_dir=lists).records] == ["spkC/c0"]


def test_missing_pieces_are_named(root):
    (root / "spkA" / "c1" / "audio.wav").unlink()
    (root / "spkB" / "c0" / "3.jpg").unlink()
    (root / "spkA" / "c0" / "reps.safetensors").unlink()
    source = FolderSource(root, "train")
    with pytest.raises(ValueError, match=r"spkA/c1: missing .*audio\.wav"):
        source.load(1, ["mel"])
    with pytest.raises(ValueError, match=r"spkB/c0: frames must be numbered 0..n-1 .*3\.jpg is missing"):
        source.load(2, ["rgb"])
    with pytest.raises(ValueError, match=r"spkA/c0: representation 'hubert' needs .*reps\.safetensors"):
        source.load(0, ["hubert"])
    with pytest.raises(ValueError, match=r"spkB/c0: .*has no key 'hubert' \(keys: \['3dmm'\]\)"):
        source.load(2, ["hubert"])
    with pytest.raises(ValueError, match="no filelist val.txt"):
        FolderSource(root, "val")
    with pytest.raises(ValueError, match="split must be one of"):
        FolderSource(root, "dev")
