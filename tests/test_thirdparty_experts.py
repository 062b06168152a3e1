"""Third-party experts: Wav2Lip's SyncNet_color and syncnet_python's SyncNet v2 in the project's API.

Checkpoints are built here with random weights and the real key names, saved as upstream saves
them (Wav2Lip: ``{"state_dict", "optimizer", ...}`` with DataParallel's ``module.`` prefixes;
syncnet_python: a bare state dict, old serialisation), then loaded, scored and used as a loss.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from pretrain.synth.corpus import generate_split
from unisync_loss import cut_windows, log_mel, score_clip
from unisync_loss.experts import ExpertFileError, bundled_expert_path
from unisync_loss.model import UniSync
from unisync_loss.thirdparty import (
    SyncNetV2,
    ThirdPartySyncLoss,
    Wav2LipSyncNet,
    convert_checkpoint,
    cut_mfcc_windows,
    load_sync_expert,
    mfcc,
    score_clip_syncnet,
    score_clip_thirdparty,
    syncnet_distances,
    syncnet_scores,
)
from unisync_loss.thirdparty.__main__ import main as thirdparty_main

# sha256 of the sorted "key:shape" lines of the upstream modules' state dicts, computed from
# Rudrabha/Wav2Lip models/syncnet.py SyncNet_color at 5c90fa9 and joonson/syncnet_python
# SyncNetModel.S(1024) at 6efbb1c (217 and 102 entries; 16,435,072 and 13,631,616 parameters).
UPSTREAM_KEYS = {
    Wav2LipSyncNet: ("c581d04ebf6286616b994fffc80ecf30015e02ad55afd30f7ab1daec77dd9961", 217, 16_435_072),
    SyncNetV2: ("3bb96ce5e676b533a0687096aa7e67568b165c06a38e330545da604b5fe7ea10", 102, 13_631_616),
}


def _key_digest(state: dict[str, torch.Tensor]) -> str:
    return hashlib.sha256("\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items())).encode()).hexdigest()


def _random_expert(cls: type, seed: int):
    """An expert with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = cls()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def clip():
    return generate_split("train", speakers=1, clips_per_speaker=1, seconds=0.8, preset="default", seed=0)[0]


@pytest.fixture(scope="module")
def wav2lip_file(tmp_path_factory):
    """Wav2Lip's checkpoint layout: dict with state_dict (``module.`` prefixes), optimizer, step, epoch."""
    model = _random_expert(Wav2LipSyncNet, 0)
    path = tmp_path_factory.mktemp("wav2lip") / "lipsync_expert.pth"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {f"module.{name}": value for name, value in model.state_dict().items()}
    torch.save({"state_dict": state, "optimizer": optimizer.state_dict(), "global_step": 1, "global_epoch": 0}, path)
    return path, model.state_dict()


@pytest.fixture(scope="module")
def syncnet_file(tmp_path_factory):
    """syncnet_python's layout: a bare state dict, old (non-zip) serialisation, no num_batches_tracked."""
    model = _random_expert(SyncNetV2, 1)
    state = {name: value for name, value in model.state_dict().items() if not name.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path, model.state_dict()


@pytest.mark.parametrize("cls", [Wav2LipSyncNet, SyncNetV2])
def test_state_dict_keys_and_shapes_are_upstream(cls):
    digest, entries, parameters = UPSTREAM_KEYS[cls]
    model = cls()
    assert len(model.state_dict()) == entries
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert _key_digest(model.state_dict()) == digest


def test_wav2lip_checkpoint_loads_by_keys_and_scores_a_clip(wav2lip_file, clip):
    path, original = wav2lip_file
    expert = load_sync_expert(f"wav2lip:{path}")
    assert isinstance(expert, Wav2LipSyncNet) and not expert.training
    assert all(torch.equal(expert.state_dict()[name], value) for name, value in original.items())
    assert not any(p.requires_grad for p in expert.parameters())

    mel = log_mel(clip.wave)
    result = score_clip(expert, mel, clip.rgb, "mel", "rgb")  # metrics, unchanged
    probs = result["probabilities"]
    assert probs.shape == (result["windows"], 31) and result["windows"] == 16  # 20 frames
    valid = probs[~probs.isnan()]
    assert bool(((valid >= 0) & (valid <= 1)).all())

    # Independent path: Wav2Lip's own input layout (BGR, lower half, frames stacked on channels).
    start = 3
    bgr = clip.rgb[start:start + 5].flip(1).float() / 255.0  # (5, 3, 96, 96)
    stacked = bgr.reshape(15, 96, 96)[None, :, 48:]  # frame-major channels, lower half
    mel_window = mel[:, (16 * start) // 5:(16 * start) // 5 + 16][None, None]
    with torch.no_grad():
        face = F.normalize(expert.face_encoder(stacked).flatten(1), dim=1)
        audio = F.normalize(expert.audio_encoder(mel_window).flatten(1), dim=1)
    assert float(probs[start, 15]) == pytest.approx(float(F.cosine_similarity(audio, face)), abs=1e-5)

    same = score_clip_thirdparty(expert, clip.wave, clip.rgb.flip(1), channel_order="bgr")
    assert same["measure"] == "cosine" and same["offset"] == result["offset"]
    assert same["distance"] == pytest.approx(result["distance"], abs=1e-6)


def test_syncnet_v2_checkpoint_loads_by_keys_and_scores_like_syncnet_python(syncnet_file, clip):
    path, original = syncnet_file
    expert = load_sync_expert(f"syncnet_v2:{path}")
    assert isinstance(expert, SyncNetV2)
    assert all(torch.equal(expert.state_dict()[name], value) for name, value in original.items()
               if not name.endswith("num_batches_tracked"))

    result = score_clip_syncnet(expert, clip.wave, clip.rgb)
    windows = min(clip.rgb.shape[0], clip.wave.shape[0] // 640) - 5  # syncnet_python's range(0, min_length - 5)
    assert result["windows"] == windows
    profile = result["profile"]
    assert profile.shape == (31,)
    assert result["lse_d"] == pytest.approx(float(profile.min()), abs=1e-6)
    assert result["lse_c"] == pytest.approx(float(profile.median() - profile.min()), abs=1e-5)
    assert result["syncnet_offset"] == 15 - int(profile.argmin()) == -result["offset"]

    # Reference: window i against audio window i + k - 15, zero vectors outside the clip.
    checked = [0, windows // 2, windows - 1]
    with torch.no_grad():
        audio = expert.embed_audio(cut_mfcc_windows(mfcc(clip.wave), range(windows)), "mfcc")
        frames = clip.rgb[torch.tensor(checked)[:, None] + torch.arange(5)].permute(0, 2, 1, 3, 4).float() / 255
        visual = expert.embed_visual(frames, "rgb")
    for row, i in enumerate(checked):
        for k in (0, 14, 15, 16, 30):
            j = i + k - 15
            candidate = audio[j] if 0 <= j < windows else torch.zeros_like(audio[0])
            expected = float(torch.linalg.vector_norm(visual[row] - candidate + 1e-6))
            assert float(result["distances"][i, k]) == pytest.approx(expected, rel=1e-4)
    short = score_clip_thirdparty(expert, clip.wave[:8 * 640], clip.rgb[:8].flip(1), channel_order="bgr")
    assert short["measure"] == "euclidean" and short["windows"] == 3
    assert torch.allclose(short["distances"][:, 15], result["distances"][:3, 15], rtol=1e-4)  # same windows, same distances


@pytest.mark.parametrize("shift", [-4, 0, 3])
def test_syncnet_offset_sign_conventions(shift):
    torch.manual_seed(0)
    windows, dim = 40, 16
    audio = torch.randn(windows, dim) * 5
    visual = torch.randn(windows, dim) * 5
    for i in range(windows):
        if 0 <= i + shift < windows:
            visual[i] = audio[i + shift]  # audio window i + shift matches visual window i
    scores = syncnet_scores(syncnet_distances(audio, visual, vshift=15))
    assert int(scores.offset) == shift  # this project: audio lags video by `shift`
    assert int(scores.syncnet_offset) == -shift  # syncnet_python: 15 - argmin


def test_mfcc_matches_python_speech_features(clip):
    psf = pytest.importorskip("python_speech_features")
    import numpy as np

    pcm = (clip.wave.double() * 32768).round().clamp(-32768, 32767)
    wave = (pcm / 32768).float()
    ours = mfcc(wave)
    reference = psf.mfcc(pcm.numpy().astype(np.int16), 16000)  # syncnet_python's call
    assert ours.shape == (13, reference.shape[0])
    assert np.abs(ours.numpy().T - reference).max() < 1e-4 * np.abs(reference).max()
    for samples in (1, 400, 401, 561):
        short = torch.randn(samples, generator=torch.Generator().manual_seed(samples)).mul(3000).round()
        expected = psf.mfcc(short.numpy().astype(np.int16), 16000)
        assert np.abs(mfcc(short / 32768).numpy().T - expected).max() < 1e-3


class _Payload:
    """Unpickling this object calls ``os.mkdir(marker)``: a harmless stand-in for code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_hostile_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "code_ran"
    path = tmp_path / "lipsync_expert.pth"
    payload = {"state_dict": {"face_encoder.0.conv_block.0.weight": _Payload(marker)}}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ExpertFileError, match=r"refused: not a checkpoint of plain tensors and containers.*nothing in it was executed") as refused:
        load_sync_expert(f"wav2lip:{path}")
    if writer == "torch.save":
        assert "asks for the Python object posix.mkdir" in str(refused.value) or "nt.mkdir" in str(refused.value)
    assert not marker.exists()
    assert thirdparty_main(["convert", f"wav2lip:{path}", str(tmp_path / "out.safetensors")]) == 2
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    pickle.loads(pickle.dumps(payload))  # the payload is live: plain unpickling runs it
    assert marker.exists()


def test_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "syncnet_v2.model"
    torch.save(SyncNetV2(), path)  # syncnet_python's SyncNetModel.save pickles the whole module
    with pytest.raises(ExpertFileError, match="refused"):
        load_sync_expert(f"syncnet_v2:{path}")


def test_checkpoint_key_mismatches_are_named(tmp_path, wav2lip_file, syncnet_file):
    with pytest.raises(ExpertFileError, match=r"not a wav2lip_syncnet_color state dict \(it is a syncnet_v2 state dict: use syncnet_v2:PATH\): \d+ missing"):
        load_sync_expert(f"wav2lip:{syncnet_file[0]}")
    state = dict(wav2lip_file[1])
    state["face_encoder.0.conv_block.0.weight"] = torch.zeros(32, 3, 7, 7)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ExpertFileError, match=r"1 unexpected tensor\(s\) extra.weight; 1 mis-shaped tensor\(s\) face_encoder.0.conv_block.0.weight \(32, 3, 7, 7\)"):
        load_sync_expert(f"wav2lip:{path}")
    with pytest.raises(ExpertFileError, match="wav2lip:.*or syncnet_v2:"):
        load_sync_expert(path)
    (tmp_path / "text.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ExpertFileError, match=r"refused: .*\(it is not a pickle of tensors\)"):
        load_sync_expert(f"wav2lip:{tmp_path / 'text.pth'}")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ExpertFileError, match="not a readable torch checkpoint"):
        load_sync_expert(f"wav2lip:{tmp_path / 'empty.pth'}")
    with pytest.raises(ExpertFileError, match="not found"):
        load_sync_expert(f"syncnet_v2:{tmp_path / 'missing.model'}")


def test_conversion_round_trip_without_torch_load(tmp_path, wav2lip_file, monkeypatch, capsys):
    path, original = wav2lip_file
    out = tmp_path / "wav2lip_expert.safetensors"
    assert thirdparty_main(["convert", f"wav2lip:{path}", str(out)]) == 0
    assert str(out) in capsys.readouterr().out

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load must not be called for a converted expert")

    monkeypatch.setattr(torch, "load", no_torch_load)
    expert = load_sync_expert(out)
    assert isinstance(expert, Wav2LipSyncNet)
    assert all(torch.equal(expert.state_dict()[name], value) for name, value in original.items())
    header = expert.expert_header
    assert header["architecture"] == "wav2lip_syncnet_color" and header["measure"] == "cosine"
    assert "non-commercial" in header["licence"]
    assert header["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert isinstance(load_sync_expert(f"wav2lip:{out}"), Wav2LipSyncNet)
    with pytest.raises(ExpertFileError, match="not syncnet_v2"):
        load_sync_expert(f"syncnet_v2:{out}")
    assert isinstance(load_sync_expert(bundled_expert_path("mel", "rgb")), UniSync)  # UniSync files load as before
    with pytest.raises(ExpertFileError, match="use UniSyncLoss"):
        ThirdPartySyncLoss(bundled_expert_path("mel", "rgb"))
    with pytest.raises(ValueError, match="must end in .safetensors"):
        convert_checkpoint(f"wav2lip:{path}", tmp_path / "out.pth")


def test_wav2lip_loss_matches_wav2lip_sync_loss_and_reaches_frames(wav2lip_file, clip):
    expert = load_sync_expert(f"wav2lip:{wav2lip_file[0]}")
    loss_fn = ThirdPartySyncLoss(expert, channel_order="bgr")  # Wav2Lip's generator output: BGR in [0, 1]
    loss_fn.train()
    assert not expert.training and list(loss_fn.parameters()) == [] and loss_fn.state_dict() == {}
    mel_windows = cut_windows(log_mel(clip.wave), "mel", [0, 4, 8], 5)  # (3, 1, 80, 16)
    frames = cut_windows(clip.rgb, "rgb", [0, 4, 8], 5).flip(1).requires_grad_(True)  # (3, 3, 5, 96, 96) BGR
    loss = loss_fn(mel_windows, frames)
    with torch.no_grad():
        stacked = frames.permute(0, 2, 1, 3, 4).reshape(3, 15, 96, 96)[:, :, 48:]
        cosine = F.cosine_similarity(F.normalize(expert.audio_encoder(mel_windows).flatten(1)),
                                     F.normalize(expert.face_encoder(stacked).flatten(1)))
    assert float(loss.detach()) == pytest.approx(float(F.binary_cross_entropy(cosine, torch.ones(3))), rel=1e-5)
    loss.backward()
    assert frames.grad is not None and bool(frames.grad[:, :, :, 48:].abs().sum() > 0)
    assert float(frames.grad[:, :, :, :48].abs().sum()) == 0.0  # the upper half is never seen
    assert all(p.grad is None for p in loss_fn.expert.parameters())
    assert loss_fn.expert.training is False
    with pytest.raises(ValueError, match="kind must be one of"):
        ThirdPartySyncLoss(expert, kind="distance")
    with pytest.raises(ValueError, match=r"mel: .*expected \(B, 1, 80, S=16\)"):
        loss_fn(mel_windows[..., :10], frames)


def test_syncnet_v2_loss_is_the_distance_and_reaches_frames(syncnet_file, clip):
    loss_fn = ThirdPartySyncLoss(f"syncnet_v2:{syncnet_file[0]}", reduction="none")
    assert loss_fn.kind == "distance"
    features = cut_mfcc_windows(mfcc(clip.wave), [0, 6])
    frames = torch.rand(2, 3, 5, 48, 48, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    losses = loss_fn(features, frames)
    assert losses.shape == (2,)
    with torch.no_grad():
        expected = loss_fn.expert.distance(loss_fn.expert.embed_audio(features, "mfcc"), loss_fn.expert.embed_visual(frames, "rgb"))
    assert torch.allclose(losses, expected)
    losses.sum().backward()
    assert frames.grad is not None and bool(torch.isfinite(frames.grad).all()) and float(frames.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match=r"mfcc: wrong shape; expected \(B, 1, 13, 20\)"):
        loss_fn(features[..., :16], frames)
    with pytest.raises(ValueError, match="euclidean expert: use distance"):
        loss_fn.sync_prob(features, frames)


def test_pretrain_evaluate_takes_wav2lips_and_syncnet_v2s_checkpoints(wav2lip_file, syncnet_file, tmp_path):
    """`pretrain.evaluate --expert wav2lip:PATH` / `syncnet_v2:PATH` run the same protocol; SyncNet v2's best offset is its smallest distance."""
    from pretrain import evaluate

    data = tmp_path / "one_short_clip.yaml"
    data.write_text("model: {audio: {mel: {}}, visual: {rgb: {}}}\n"
                    "data: {kind: procedural, speakers: 3, clips_per_speaker: 1, seconds: 0.8, preset: easy}\n")
    result = evaluate.main(["--expert", f"wav2lip:{wav2lip_file[0]}", "--data", str(data), "--out", str(tmp_path / "eval")])
    assert result["clips"] == 1 and result["windows"] > 0 and 0.0 <= result["sync_accuracy"] <= 1.0 and 0.0 < result["chance"] < 1.0
    assert result["measure"] == "cosine" and "mean_p_sync" in result
    assert (tmp_path / "eval" / "eval.json").is_file()
    result = evaluate.main(["--expert", f"syncnet_v2:{syncnet_file[0]}", "--data", str(data), "--out", str(tmp_path / "sn")])
    assert result["measure"] == "euclidean" and result["audio"] == "mfcc" and "mean_p_sync" not in result
    assert result["windows"] == result["per_clip"][0]["windows"] > 0 and 0.0 <= result["sync_accuracy"] <= 1.0
    profile = torch.tensor([float("nan") if d is None else d for d in result["mean_distance"]["0"]])
    assert bool((profile[~profile.isnan()] > 0).all())  # distances, not negated scores
    clip = result["per_clip"][0]
    assert clip["distance"] == pytest.approx(float(profile[~profile.isnan()].min()), rel=1e-5)
    assert clip["offset"] == int(profile.nan_to_num(float("inf")).argmin()) - result["max_offset"]
    assert clip["confidence"] == pytest.approx(float(profile.nanquantile(0.5)) - clip["distance"], rel=1e-4, abs=1e-5)
    assert json.loads((tmp_path / "sn" / "eval.json").read_text())["measure"] == "euclidean"
