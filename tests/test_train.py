"""pretrain.train end to end on the tiny config: learning, SIGKILL + --resume, NaN stop, export.

Each run is a subprocess (``python -m pretrain.train``) on pretrain/configs/tiny.yaml, with the
expert cache pointed at a temporary UNISYNC_HOME.
"""
import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain.config import load_config
from pretrain.curves import read_metrics
from pretrain.data import open_source
from pretrain.evaluate import sync_accuracy
from pretrain.export import model_from_checkpoint
from unisync_loss.experts import load_expert
from unisync_loss.loss import UniSyncLoss
from unisync_loss.model import UniSync
from unisync_loss.windows import cut_windows

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "pretrain" / "configs" / "tiny.yaml"


def train_command(out: Path, *overrides: str, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "pretrain.train", "--config", str(TINY), f"output_dir={out}", *overrides] + (["--resume"] if resume else [])


def run_env(home: Path) -> dict[str, str]:
    return {**os.environ, "UNISYNC_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run(out: Path, *overrides: str, resume: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(out, *overrides, resume=resume), cwd=REPO, env=run_env(out.parent / "home"),
                          capture_output=True, text=True, timeout=300)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    last = sorted((out / "checkpoints").glob("step_*"))[-1]
    return load_file(str(last / "model.safetensors"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted tiny run shared by the tests below."""
    out = tmp_path_factory.mktemp("train") / "full"
    done = run(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_tiny_run_learns_and_reports(full_run):
    out, done = full_run
    with open(out / "logs" / "metrics.csv", newline="") as f:
        losses = [float(row["value"]) for row in csv.DictReader(f) if row["metric"] == "loss"]
    assert len(losses) >= 6
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.03
    result = json.loads((out / "result.json").read_text())
    chance = 3 / 31
    assert result["test_accuracy"] > 2 * chance, result
    assert f"held-out (test speakers) sync accuracy: {result['test_accuracy']:.3f}" in done.stdout
    assert f"exported expert: {result['expert']}" in done.stdout
    curves = read_metrics(out / "logs" / "metrics.csv")
    assert curves["p_positive"][1][-1] > curves["p_cross_speaker"][1][-1] + 0.2
    assert (out / "logs" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exported_expert_loads_and_scores(full_run):
    out, _ = full_run
    config = load_config(out / "config.yaml")
    path = Path(json.loads((out / "result.json").read_text())["expert"])
    assert path == out.parent / "home" / "experts" / f"{config.audio}_{config.visual}.safetensors"
    expert = load_expert(path)
    test = open_source(config.data, "test")
    assert sync_accuracy(expert, test, config.audio, config.visual, indices=range(2)) >= 0.0
    clip = test.load(0, (config.audio, config.visual))
    audio, visual = (cut_windows(clip[name], name, [0, 1, 2, 3], config.window) for name in (config.audio, config.visual))
    loss = UniSyncLoss(config.audio, config.visual, weights=path)(audio, visual)
    assert loss.ndim == 0 and torch.isfinite(loss)


def kill_after_first_checkpoint(proc: subprocess.Popen, out: Path) -> None:
    """SIGKILL the training ``proc`` at a random moment just after its first checkpoint under ``out`` appears."""
    deadline = time.monotonic() + 240
    while not list((out / "checkpoints").glob("step_*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed; make the run longer"


def test_sigkill_then_resume_matches_uninterrupted_run(full_run):
    reference, _ = full_run
    out = reference.parent / "killed"
    env = run_env(out.parent / "home-killed")
    proc = subprocess.Popen(train_command(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_first_checkpoint(proc, out)
    assert not (out / "result.json").exists()
    resumed = subprocess.run(train_command(out, resume=True), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    expected, got = final_weights(reference), final_weights(out)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], rtol=0, atol=1e-7), name


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    out = tmp_path / "nan"
    done = run(out, "debug.nan_step=13", "checkpoint.every=5")
    assert done.returncode != 0
    assert "loss is nan at step 13" in done.stderr
    assert "step_000010" in done.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000005", "step_000010"]
    model, _ = model_from_checkpoint(out, "step_000010")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    restarted = run(out, "debug.nan_step=13", "checkpoint.every=5", resume=True)
    assert "resumed from" in restarted.stdout and "loss is nan at step 13" in restarted.stderr


def test_existing_checkpoints_need_resume(full_run):
    out, _ = full_run
    done = run(out)
    assert done.returncode != 0 and "--resume" in done.stderr


def test_config_overrides_are_typed_and_unknown_keys_listed():
    config = load_config(TINY, ["optim.lr=1e-3", "loss.margin=0", "sampling.cross_speaker=false",
                                "sampling.ratios.positive=0.6", "eval.test_clips=null", "output_dir=/tmp/x"])
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.loss.margin == 0.0 and config.sampling.cross_speaker is False
    assert config.sampling.ratios.positive == 0.6 and config.eval.test_clips is None
    assert str(config.out_dir) == "/tmp/x"
    with pytest.raises(ValueError, match=r"unknown config key 'optim.lrr'.*valid keys: .*optim\.lr, "):
        load_config(TINY, ["optim.lrr=1"])
    with pytest.raises(ValueError, match=r"'optim.steps': expected int, got 'many'"):
        load_config(TINY, ["optim.steps=many"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_config(TINY, ["optim.lr"])
    assert load_config(TINY).to_dict() == load_config(TINY, []).to_dict()


@pytest.mark.parametrize("audio", ["mel", "hubert"])
@pytest.mark.parametrize("visual", ["rgb", "parsing", "landmarks", "3dmm"])
def test_pair_configs_build_their_model(audio, visual):
    config = load_config(REPO / "pretrain" / "configs" / f"{audio}_{visual}.yaml")
    assert (config.audio, config.visual) == (audio, visual)
    assert config.data.kind == "procedural" and config.out_dir == Path(f"runs/{audio}_{visual}")
    UniSync(config.model)
