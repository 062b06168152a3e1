"""Joint pretraining (several representation pairs, one space): train, SIGKILL + --resume, export, losses, new heads.

Runs are subprocesses of ``python -m pretrain.train`` on pretrain/configs/tiny.yaml with two
visual heads (mel x 3dmm and mel x landmarks sharing ε2 / ε4), the expert cache pointed at a
temporary UNISYNC_HOME.
"""
import argparse
import json
import subprocess

import pytest
import torch

from pretrain.config import SamplingConfig, load_config
from pretrain.data import open_source
from pretrain.pairs import JointPairSampler
from unisync_loss.cli import list_experts
from unisync_loss.experts import ExpertFileError, load_expert, read_expert_header, save_expert
from unisync_loss.loss import UniSyncLoss
from unisync_loss.model import UniSync, UniSyncConfig
from unisync_loss.windows import cut_windows
from tests.test_train import REPO, final_weights, kill_after_first_checkpoint, run_env, train_command

JOINT = ("model.visual={3dmm: {dim: 64}, landmarks: {points: 68, coords: 3}}", "optim.steps=40",
         "checkpoint.every=10", "eval.every=20", "eval.test_clips=2", "log_every=10")
PAIRS = [("mel", "3dmm"), ("mel", "landmarks")]


def run(out, *overrides, resume=False):
    return subprocess.run(train_command(out, *overrides, resume=resume), cwd=REPO, env=run_env(out.parent / "home"),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("joint") / "full"
    done = run(out, *JOINT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_joint_run_trains_every_pair_and_reports_each(joint_run):
    out, done = joint_run
    result = json.loads((out / "result.json").read_text())
    assert set(result["test_accuracy_per_pair"]) == {"mel_3dmm", "mel_landmarks"}
    assert "val sync accuracy" in done.stdout and "mel_3dmm" in done.stdout
    weights = final_weights(out)
    for head in ("visual_heads.3dmm", "visual_heads.landmarks"):
        assert any(name.startswith(head) for name in weights)


def test_joint_expert_records_its_pairs_and_serves_each_with_visual_gradients(joint_run):
    out, _ = joint_run
    path = json.loads((out / "result.json").read_text())["expert"]
    assert path.endswith("mel_3dmm+landmarks.safetensors")
    header = read_expert_header(path)
    assert [tuple(pair) for pair in header["pairs"]] == PAIRS
    assert set(header["training"]["test_accuracy_per_pair"]) == {"mel_3dmm", "mel_landmarks"}
    config = load_config(out / "config.yaml")
    clip = open_source(config.data, "test").load(0, ("mel", "3dmm", "landmarks"))
    for audio, visual in PAIRS:
        a, v = (cut_windows(clip[name], name, [0, 1, 2], config.window) for name in (audio, visual))
        v = v.clone().requires_grad_(True)
        loss = UniSyncLoss(audio, visual, weights=path)(a, v)
        loss.backward()
        assert torch.isfinite(loss) and v.grad is not None and v.grad.abs().sum() > 0, (audio, visual)


def test_sigkill_then_resume_matches_the_uninterrupted_joint_run(joint_run):
    reference, _ = joint_run
    out = reference.parent / "killed"
    proc = subprocess.Popen(train_command(out, *JOINT), cwd=REPO, env=run_env(out.parent / "home"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_first_checkpoint(proc, out)
    resumed = run(out, *JOINT, resume=True)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-3000:]
    expected, got = final_weights(reference), final_weights(out)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_new_head_trains_against_a_frozen_space_and_leaves_it_bit_identical(joint_run, tmp_path):
    out, _ = joint_run
    joint = load_expert(json.loads((out / "result.json").read_text())["expert"])
    start = UniSync(UniSyncConfig.from_dict({**joint.config.to_dict(), "visual": {"3dmm": joint.config.visual["3dmm"]}}))
    start.load_state_dict({k: v for k, v in joint.state_dict().items() if not k.startswith("visual_heads.landmarks")})
    start_path = save_expert(start, tmp_path / "mel_3dmm.safetensors", pairs=[("mel", "3dmm")])
    new = tmp_path / "new_head"
    done = run(new, "model.visual={landmarks: {points: 68, coords: 3}}", f"init.expert={start_path}",
               "init.freeze=[audio_unified, visual_unified, audio_heads]", "optim.steps=6", "checkpoint.every=6",
               "eval.every=6", "eval.test_clips=1", f"--export={tmp_path / 'added.safetensors'}")
    assert done.returncode == 0, done.stderr[-3000:]
    added = load_expert(tmp_path / "added.safetensors")
    assert [tuple(p) for p in added.expert_header["pairs"]] == [("mel", "3dmm"), ("mel", "landmarks")]
    before, after = start.state_dict(), added.state_dict()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"{name} moved although frozen"
    fresh = UniSync(added.config).state_dict()
    trained = [name for name in after if name.startswith("visual_heads.landmarks") and name.endswith("weight")]
    assert trained and any(not torch.equal(after[name], fresh[name]) for name in trained)


def test_untrained_combination_needs_an_explicit_flag(tmp_path):
    config = UniSyncConfig(audio={"mel": {}}, visual={"3dmm": {"dim": 8}, "landmarks": {}}, hidden=16, embed_dim=16)
    path = save_expert(UniSync(config), tmp_path / "joint.safetensors", pairs=[("mel", "3dmm")])
    with pytest.raises(ExpertFileError, match="never on mel x landmarks.*allow_untrained_pair=True"):
        UniSyncLoss("mel", "landmarks", weights=path)
    loss = UniSyncLoss("mel", "landmarks", weights=path, allow_untrained_pair=True)
    assert loss(torch.randn(2, 1, 80, 16), torch.randn(2, 5, 68, 3)).ndim == 0
    UniSyncLoss("mel", "3dmm", weights=path)


def test_unisync_experts_names_the_pairs_a_joint_expert_was_trained_on(tmp_path, monkeypatch):
    config = UniSyncConfig(audio={"mel": {}}, visual={"3dmm": {"dim": 8}, "landmarks": {}}, hidden=16, embed_dim=16)
    save_expert(UniSync(config), tmp_path / "experts" / "joint.safetensors", pairs=[("mel", "3dmm")])
    save_expert(UniSync(config), tmp_path / "experts" / "both.safetensors")
    monkeypatch.setenv("UNISYNC_HOME", str(tmp_path))
    lines = {line.split(":")[0].strip(): line for line in list_experts().splitlines()}
    assert "(trained pairs: mel x 3dmm)" in lines["joint.safetensors"]
    assert "trained pairs" not in lines["both.safetensors"]


def test_joint_sampler_splits_each_batch_among_pairs_and_keeps_ids_unique():
    sampler = JointPairSampler([("mel", "3dmm"), ("hubert", "3dmm"), ("mel", "rgb")], [2, 1, 1], ["a", "a", "b", "b"],
                               [40, 40, 40, 40], SamplingConfig(), window=5, batch_size=16, seed=3)
    groups = sampler.sample(7)
    assert [len(group) for group in groups] == [8, 4, 4]
    ids = [p.sample_id for group in groups for p in group]
    assert sorted(ids) == list(range(7 * 16, 8 * 16))
    halves = [sampler.sample(7, rank, 2) for rank in range(2)]  # every process trains every pair
    assert [[len(group) for group in half] for half in halves] == [[4, 2, 2], [4, 2, 2]]
    by_id = lambda pairs: sorted(pairs, key=lambda p: p.sample_id)  # noqa: E731
    assert by_id(p for half in halves for group in half for p in group) == by_id(p for group in groups for p in group)


def test_bench_joint_overrides_train_exactly_the_named_pairs():
    from benchmarks.bench_joint import joint_name, joint_overrides, parse_pairs

    every = parse_pairs("all")
    assert len(every) == 8 and ("mel", "rgb") in every and ("hubert", "3dmm") in every
    for pairs, name in ((every, "joint_mel+hubert_x_rgb+parsing+landmarks+3dmm"),
                        ([("mel", "landmarks"), ("hubert", "3dmm")], "joint_mel_landmarks+hubert_3dmm")):
        config = load_config(REPO / "pretrain/configs/unified.yaml", joint_overrides(pairs))
        trained = config.joint.pairs or [(a, v) for a in config.model.audio for v in config.model.visual]
        assert sorted(map(tuple, trained)) == sorted(pairs) and joint_name(pairs) == name
    for bad in ("mel", "mel_face", "rgb_mel"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected pairs like"):
            parse_pairs(bad)
