"""Misuse of the loss API, mis-scaled and degenerate inputs through the loss, pretraining on bad data, progress in logs.

Each table row asserts that the message names the argument, input or file, what was expected and
what came. Rows that used to crash deep inside torch or silently compute a wrong loss.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from pretrain.config import load_config
from pretrain.data import FolderSource
from pretrain.synth.corpus import write_corpus
from pretrain.train import main as train_main
from pretrain.train import train
from unisync_loss.loss import UniSyncLoss
from unisync_loss.model import UniSync
from unisync_loss.representations import MIN_LANDMARK_SPREAD, LandmarkPreprocess

REPO = Path(__file__).resolve().parents[1]
CHOICES = "must be None, 'procedural', a path to an expert .safetensors file or a UniSync model"

API_MISUSE = [
    # (id, constructor arguments over mel x rgb with a tiny model, error, parts of the message)
    ("state_dict as weights", {"weights": "STATE_DICT"}, TypeError, [f"weights {CHOICES}", "got collections.OrderedDict (a state_dict?"]),
    ("nn.Module as weights", {"weights": nn.Linear(2, 2)}, TypeError, [f"weights {CHOICES}", "got torch.nn.modules.linear.Linear"]),
    ("number as weights", {"weights": 3}, TypeError, [f"weights {CHOICES}", "got builtins.int"]),
    ("value_range=255", {"value_range": 255}, TypeError, ["value_range must be a (low, high) pair of numbers such as (0, 255)", "got 255"]),
    ("value_range of one number", {"value_range": (0,)}, TypeError, ["value_range must be a (low, high) pair", "got (0,)"]),
    ("value_range of text", {"value_range": ("a", "b")}, TypeError, ["value_range must be a (low, high) pair", "got ('a', 'b')"]),
    ("value_range reversed", {"value_range": (1, 0)}, ValueError, ["value_range must be (low, high) with high > low", "got (1, 0)"]),
    ("check_finite as text", {"check_finite": "yes"}, TypeError, ["check_finite must be None, True or False", "got 'yes'"]),
    ("unknown reduction", {"reduction": "max"}, ValueError, ["reduction must be 'mean', 'sum' or 'none'", "got 'max'"]),
    ("unknown kind", {"kind": "bce"}, ValueError, ["kind must be 'log' or 'linear'", "got 'bce'"]),
    ("unknown channel order", {"channel_order": "rbg"}, ValueError, ["channel_order must be 'rgb' or 'bgr'", "got 'rbg'"]),
    ("eps of zero", {"eps": 0.0}, ValueError, ["eps must lie in (0, 1)", "got 0.0"]),
    ("swapped modalities", {"audio": "rgb", "visual": "mel"}, ValueError,
     ["audio must be one of ('mel', 'hubert') and visual one of ('rgb', 'parsing', 'landmarks', '3dmm')", "got audio='rgb', visual='mel'"]),
    ("unknown representation", {"visual": "flow"}, ValueError, ["unknown representation 'flow'; known: mel, hubert, rgb"]),
]


@pytest.mark.parametrize(("arguments", "error", "parts"), [c[1:] for c in API_MISUSE], ids=[c[0] for c in API_MISUSE])
def test_api_misuse_names_the_argument(make_model, arguments, error, parts) -> None:
    model = make_model(["mel"], ["rgb"])
    given = {"audio": "mel", "visual": "rgb", "weights": model, **arguments}
    if given["weights"] == "STATE_DICT":
        given["weights"] = model.state_dict()
    with pytest.raises(error) as caught:
        UniSyncLoss(**given)
    for part in parts:
        assert part in str(caught.value), str(caught.value)


def _degenerate_batch(config: Any) -> torch.Tensor:
    points = 200.0 + 30.0 * torch.randn(3, config.window, 68, 3, generator=torch.Generator().manual_seed(1))
    points[1] = torch.tensor([310.0, 240.0, 5.0])
    return points


def _frames(low: float, high: float, height: int = 40, width: int = 40) -> Callable[[Any], torch.Tensor]:
    return lambda config: torch.linspace(low, high, 2 * 3 * config.window * height * width).reshape(2, 3, config.window, height, width)


LOSS_CALLS = [
    # (id, visual representation, loss options, visual input from the config, parts of the message)
    ("8-bit frames, default value_range", "rgb", {}, _frames(0.0, 255.0),
     ["rgb: values (after UniSyncLoss's value_range conversion) must lie in [0, 1]", "got values in [0, 255]", "value_range=(0, 255)"]),
    ("tanh frames, default value_range", "rgb", {}, _frames(-1.0, 1.0), ["must lie in [0, 1]", "got values in [-1, 1]", "value_range=(-1, 1)"]),
    ("8-bit BGR frames declared (0, 1)", "rgb", {"channel_order": "bgr"}, _frames(0.0, 255.0), ["must lie in [0, 1]", "got values in [0, 255]"]),
    ("lower-half crop to an expert that crops", "rgb", {}, _frames(0.0, 1.0, 48, 96),
     ["rgb: frames must be full face crops (H about W; the expert crops the lower half itself)", "got H x W = 48 x 96", "(2, 3, 5, 48, 96)"]),
    ("parsing logits as probabilities", "parsing", {}, lambda c: torch.randn(2, 19, c.window, 40, 40, generator=torch.Generator().manual_seed(2)) * 4,
     ["parsing: class probabilities must lie in [0, 1]", "got values in [-", "apply softmax(dim=1)"]),
    ("degenerate landmark window in a batch", "landmarks", {}, _degenerate_batch,
     ["landmarks: window 1 of the batch is degenerate", "expected a spread above 0.0001 x max(1, |coordinate|)", "RMS spread 0 around the centroid"]),
    ("3dmm coefficients of 1e19", "3dmm", {}, lambda c: torch.full((2, c.window, 16), 1e19),
     ["3dmm: values must lie within 1000 standard deviations of the expert's training statistics", "got 1e+19 standard deviations"]),
    ("landmarks as a list", "landmarks", {}, lambda c: [[0.0] * 3] * 68, ["landmarks: expected a tensor (B, T=5, N=68, 3)", "got list"]),
]


@pytest.mark.parametrize(("visual", "options", "make_visual", "parts"), [c[1:] for c in LOSS_CALLS], ids=[c[0] for c in LOSS_CALLS])
def test_misread_input_is_refused_before_a_loss_is_computed(make_model, make_input, visual, options, make_visual, parts) -> None:
    loss_fn = UniSyncLoss("mel", visual, weights=make_model(["mel"], [visual]), **options)
    with pytest.raises((ValueError, TypeError)) as caught:
        loss_fn(make_input("mel", loss_fn.expert.config), make_visual(loss_fn.expert.config))
    for part in parts:
        assert part in str(caught.value), str(caught.value)


def test_mel_in_decibels_is_refused_naming_the_scale(make_model, make_input) -> None:
    loss_fn = UniSyncLoss("mel", "3dmm", weights=make_model(["mel"], ["3dmm"]))
    decibels = torch.linspace(-100.0, 0.0, 2 * 80 * 16).reshape(2, 1, 80, 16)
    with pytest.raises(ValueError, match=r"mel: values must lie in Wav2Lip's symmetric log-mel scale \[-4, 4\], got values in \[-100, 0\]"):
        loss_fn(decibels, make_input("3dmm", loss_fn.expert.config))


def test_degenerate_window_gradients_are_bounded_when_checks_are_off(make_model, make_input) -> None:
    """Documented bound: a degenerate window's gradient is at most 1 / (1e-4 max(1, |coordinate|)) x the upstream one."""
    points = _degenerate_batch(make_model(["mel"], ["landmarks"]).config).requires_grad_(True)
    upstream = torch.randn(3, 68 * 3, 5, generator=torch.Generator().manual_seed(3))
    (LandmarkPreprocess(mouth=None, rotation=False, eye_corners=(36, 45))(points) * upstream).sum().backward()
    floor = MIN_LANDMARK_SPREAD * 310.0
    assert torch.isfinite(points.grad).all()
    assert points.grad[1].norm() <= upstream[1].norm() / floor * 1.001
    assert points.grad[1].norm() > 0  # not silently zero either

    loss_fn = UniSyncLoss("mel", "landmarks", weights=make_model(["mel"], ["landmarks"]), check_finite=False, reduction="none")
    points.grad = None
    losses = loss_fn(make_input("mel", loss_fn.expert.config, batch=3), points)
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(points.grad).all()
    assert points.grad[1].abs().max() < 1e4  # dividing by the old 1e-6 floor gave gradients of ~1e7 here


def test_float16_pixel_landmarks_are_normalised_in_float32(make_model, make_input) -> None:
    loss_fn = UniSyncLoss("mel", "landmarks", weights=make_model(["mel"], ["landmarks"]))
    audio = make_input("mel", loss_fn.expert.config)
    pixels = 300.0 + 40.0 * torch.randn(2, 5, 68, 3, generator=torch.Generator().manual_seed(4))
    half = pixels.half().requires_grad_(True)
    loss = loss_fn(audio, half)
    loss.backward()
    torch.testing.assert_close(loss, loss_fn(audio, pixels.half().float()), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(half.grad).all() and half.grad.abs().sum() > 0  # was exactly 0 (float16 overflow)


def test_loss_built_under_inference_mode_can_train(make_model, make_input, make_expert) -> None:
    with torch.inference_mode():
        from_file = UniSyncLoss("mel", "3dmm", weights=make_expert("mel", "3dmm"))
        inference_model = UniSync(make_model(["mel"], ["3dmm"]).config).eval()
    from_model = UniSyncLoss("mel", "3dmm", weights=inference_model)
    for loss_fn in (from_file, from_model):
        visual = make_input("3dmm", loss_fn.expert.config).requires_grad_(True)
        loss_fn(make_input("mel", loss_fn.expert.config), visual).backward()
        assert torch.isfinite(visual.grad).all() and visual.grad.abs().sum() > 0
        assert not any(p.is_inference() for p in loss_fn.expert.parameters())


def test_half_expert_under_cpu_bfloat16_autocast_runs_in_float16(make_model, make_input) -> None:
    loss_fn = UniSyncLoss("mel", "3dmm", weights=make_model(["mel"], ["3dmm"]), reduction="none")
    config = loss_fn.expert.config
    audio, visual = make_input("mel", config), make_input("3dmm", config)
    reference = loss_fn(audio, visual)
    loss_fn.half()
    visual = visual.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss_fn(audio, visual)
    mixed.sum().backward()
    torch.testing.assert_close(mixed, reference, atol=0.02, rtol=0.02)
    assert torch.isfinite(visual.grad).all()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small on-disk procedural corpus in Wav2Lip's layout (4 train, 2 val, 2 test clips)."""
    root = tmp_path_factory.mktemp("corpus") / "clean"
    write_corpus(root, 4, 2, 1.0, "default", seed=1, workers=1, progress=False)
    return root


def _clip(root: Path, split: str) -> Path:
    return root / (root / "filelists" / f"{split}.txt").read_text().split()[0]


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


BAD_DATA = [
    # (id, damage(root) -> the path the message must name, expected part of the message)
    ("empty train filelist", lambda root: _empty(root / "filelists" / "train.txt"), "lists no clips (expected one 'dir/vid' clip folder per line)"),
    ("empty val filelist", lambda root: _empty(root / "filelists" / "val.txt"), "lists no clips (expected one 'dir/vid' clip folder per line)"),
    ("0-byte frame in train", lambda root: _empty(_clip(root, "train") / "3.jpg"), "is empty (0 bytes), expected a JPEG image"),
    ("0-byte frame in test", lambda root: _empty(_clip(root, "test") / "0.jpg"), "is empty (0 bytes), expected a JPEG image"),
    ("0-byte audio", lambda root: _empty(_clip(root, "train") / "audio.wav"), "unreadable, expected 16 kHz mono 16-bit PCM WAV (EOFError"),
    ("missing audio", lambda root: (_clip(root, "val") / "audio.wav").unlink() or _clip(root, "val") / "audio.wav",
     "(16 kHz mono 16-bit PCM audio expected)"),
    ("manifest not JSON", lambda root: (root / "manifest.json").write_text("{clips: [") and root / "manifest.json",
     'not a valid manifest (expected {"clips": [{"id": "dir/vid"'),
    ("clip listed but absent", lambda root: (root / "filelists" / "train.txt").write_text("spk000/clip999\n") and root / "spk000/clip999",
     "(16 kHz mono 16-bit PCM audio expected)"),
]


@pytest.mark.parametrize(("damage", "expected"), [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_named_before_any_run_folder_is_created(corpus, tmp_path, damage, expected) -> None:
    root = tmp_path / "data"
    shutil.copytree(corpus, root)
    named = damage(root)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as caught:
        train_main(["--config", str(REPO / "pretrain/configs/mel_rgb.yaml"), "data.kind=folder", f"data.root={root}",
                    f"output_dir={out}", "threads=1"])
    message = str(caught.value.code)
    assert message.startswith("error: ") and str(named) in message and expected in message, message
    assert not out.exists()


def test_unreadable_frame_names_its_path(corpus, tmp_path) -> None:
    root = tmp_path / "data"
    shutil.copytree(corpus, root)
    frame = _clip(root, "train") / "2.jpg"
    frame.write_bytes(b"\xff\xd8 not really a jpeg")
    source = FolderSource(root, "train")
    with pytest.raises(ValueError, match=f"{frame}: unreadable, expected a JPEG or PNG frame"):
        source.load(0, ["rgb"])


def test_training_log_has_progress_lines_not_carriage_returns(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("UNISYNC_HOME", str(tmp_path / "home"))
    config = load_config(REPO / "pretrain/configs/tiny.yaml", [f"output_dir={tmp_path / 'run'}", "optim.steps=6", "eval.every=6",
                                                                "checkpoint.every=6", "optim.warmup_steps=1", "export.enabled=false"])
    train(config)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("pretrain steps:")]
    assert "\r" not in err
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("pretrain steps: 6/6 [########################] 100%")
    assert math.isfinite(float(lines[-1].rsplit("loss ", 1)[1]))
