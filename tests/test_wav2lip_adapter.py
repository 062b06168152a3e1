"""Wav2Lip adapter (integrations/wav2lip) against a stand-in checkout written by the tests (no upstream code)."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from integrations.wav2lip import check, train
from integrations.wav2lip.patch import Options, Schedule, ScheduledHParams, UniSyncPatch
from integrations.wav2lip.script import imported_script
from integrations.wav2lip.shims import librosa_shim_needed, positional_mel
from unisync_loss import UniSync, UniSyncLoss, save_expert
from wav2lip_standin import write_checkout, write_dataset  # tests/ is on sys.path (pytest rootdir conftest)
from conftest import tiny_config

pytest.importorskip("librosa")  # the stand-in's audio.py, like Wav2Lip's, imports it

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A stand-in checkout, a tiny dataset, a tiny mel x rgb expert, a mel x landmarks one and a SyncNet_color checkpoint."""
    base = tmp_path_factory.mktemp("wav2lip")
    torch.manual_seed(0)
    paths = {
        "root": write_checkout(base / "Wav2Lip"),
        "data": write_dataset(base / "data"),
        "expert": save_expert(UniSync(tiny_config(["mel"], ["rgb"])).eval(), base / "mel_rgb.safetensors"),
        "landmarks": save_expert(UniSync(tiny_config(["mel"], ["landmarks"])).eval(), base / "mel_landmarks.safetensors"),
        "base": base,
    }
    with imported_script(paths["root"], paths["root"] / "wav2lip_train.py", ["--data_root", "x", "--checkpoint_dir", "x",
                                                                              "--syncnet_checkpoint_path", "x"]) as module:
        paths["syncnet"] = base / "syncnet.pth"
        torch.save({"state_dict": {"module." + k: v for k, v in module.SyncNet().state_dict().items()}}, paths["syncnet"])
    return paths


def run_adapter(world: dict[str, Path], checkpoint_dir: Path, *extra: str, script: str = "wav2lip") -> None:
    train.main(["--wav2lip-root", str(world["root"]), "--script", script, "--expert", str(world["expert"]), "--workers", "0",
                "--seed", "0", *extra, "--", "--data_root", str(world["data"]), "--checkpoint_dir", str(checkpoint_dir)])


@contextlib.contextmanager
def standin_module(world: dict[str, Path], script: str = "wav2lip_train.py"):
    argv = ["--data_root", str(world["data"]), "--checkpoint_dir", "unused", "--syncnet_checkpoint_path", "unused"]
    with imported_script(world["root"], world["root"] / script, argv) as module:
        yield module


def batch(module, size: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(size, 6, 5, 32, 32, generator=generator)
    indiv_mels = torch.randn(size, 5, 1, 80, 16, generator=generator)
    return x, indiv_mels, torch.randn(size, 1, 80, 16, generator=generator)


def test_wav2lip_script_trains_with_unisync_and_logs_both_experts(world, capsys) -> None:
    out_dir = world["base"] / "run_w"
    run_adapter(world, out_dir, "--max-steps", "4", "--sync-weight", "0.5", "--log-every", "2", "--eval-batches", "2",
                "--hparams", "checkpoint_interval=4", "--also-log-wav2lip-expert", str(world["syncnet"]), "--time-sync")
    printed = capsys.readouterr().out
    assert "stopped after 4 steps" in printed
    assert "weights and buffers bit-identical" in printed and "eval mode" in printed
    assert "paired ratio" in printed
    rows = (out_dir / "unisync_sync_loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,phase,unisync_sync_loss,wav2lip_sync_loss")
    train_rows = [r.split(",") for r in rows[1:] if r.split(",")[1] == "train"]
    assert [int(r[0]) for r in train_rows] == [0, 1, 2, 3]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in train_rows)      # both experts scored every step
    assert all(float(r[4]) > 0 and float(r[5]) > 0 and float(r[6]) > 0 for r in train_rows)   # step and both experts timed
    # checkpoints hold the generator only and load into the unpatched script
    checkpoint = torch.load(out_dir / "checkpoint_step000000004.pth", weights_only=True)
    with standin_module(world) as module:
        generator = module.Wav2Lip()
        assert set(checkpoint["state_dict"]) == set(generator.state_dict())
        module.load_checkpoint(str(out_dir / "checkpoint_step000000004.pth"), generator, None, reset_optimizer=True)
        assert torch.equal(generator.face.weight, checkpoint["state_dict"]["face.weight"])


def test_hq_script_keeps_the_gate_and_runs_without_cuda(world, capsys) -> None:
    out_dir = world["base"] / "run_hq"
    run_adapter(world, out_dir, "--max-steps", "4", "--eval-batches", "2", script="hq")
    printed = capsys.readouterr().out
    assert "shims applied: librosa" in printed and ("cuda" in printed) == (not torch.cuda.is_available())
    assert "Wav2Lip's gate" in printed and "eval at step 3" in printed
    assert (out_dir / "checkpoint_step000000003.pth").is_file()


def test_sync_weight_changes_the_generator_update(world) -> None:
    """Same seed and batches: with the sync weight on, the generator ends elsewhere than with it off."""
    finals = {}
    for weight in ("0", "0.5"):
        out_dir = world["base"] / f"run_weight_{weight}"
        run_adapter(world, out_dir, "--max-steps", "3", "--sync-weight", weight, "--hparams", "checkpoint_interval=3")
        finals[weight] = torch.load(out_dir / "checkpoint_step000000003.pth", weights_only=True)["state_dict"]
    first = torch.load(world["base"] / "run_weight_0" / "checkpoint_step000000001.pth", weights_only=True)["state_dict"]
    assert not torch.equal(finals["0"]["face.weight"], first["face.weight"])
    assert (finals["0"]["face.weight"] - finals["0.5"]["face.weight"]).abs().max() > 1e-6


def test_expert_stays_eval_and_bit_identical_through_train_eval_cycles(world) -> None:
    sync_loss = UniSyncLoss("mel", "rgb", weights=world["expert"], channel_order="bgr")
    before = train.fingerprint(sync_loss.expert)
    with standin_module(world) as module, contextlib.ExitStack() as stack:
        upstream_expert = module.syncnet                        # what Wav2Lip would use: never put in eval
        running_mean = upstream_expert.face_encoder[1].running_mean.clone()
        patch = UniSyncPatch(module, sync_loss, Options(), world["data"], wav2lip_expert=None)
        patch.install(stack)
        generator = module.Wav2Lip()
        optimizer = torch.optim.Adam(generator.parameters(), lr=1e-2)
        x, indiv_mels, mel = batch(module)
        for _ in range(3):
            generator.train()
            module.syncnet.train()                              # a fork calling train() on the expert changes nothing
            optimizer.zero_grad()
            loss = module.get_sync_loss(mel, generator(indiv_mels, x))
            loss.backward()
            assert generator.face.weight.grad.abs().sum() > 0   # the sync gradient reaches the generator
            optimizer.step()
            with torch.no_grad():
                generator.eval()
                module.get_sync_loss(mel, generator(indiv_mels, x))
            upstream_expert.train()
            upstream_expert(mel, torch.rand(2, 15, 16, 32))     # upstream's expert drifts in the same cycle
        assert not sync_loss.expert.training
        assert train.fingerprint(sync_loss.expert) == before
        assert not torch.equal(upstream_expert.face_encoder[1].running_mean, running_mean)
        assert not any(name.startswith(("syncnet", "_expert")) for name in generator.state_dict())
    assert module.get_sync_loss is not patch.get_sync_loss     # globals restored when the patch's stack closes


def test_timed_path_gives_the_generator_the_same_gradient(world) -> None:
    sync_loss = UniSyncLoss("mel", "rgb", weights=world["expert"], channel_order="bgr")
    grads = {}
    for timed in (False, True):
        with standin_module(world) as module, contextlib.ExitStack() as stack:
            torch.manual_seed(0)
            generator = module.Wav2Lip()
            patch = UniSyncPatch(module, sync_loss, Options(time_sync=timed), world["data"], wav2lip_expert=module.syncnet.eval())
            patch.install(stack)
            x, indiv_mels, mel = batch(module)
            loss = module.get_sync_loss(mel, generator(indiv_mels, x))
            loss.backward()
            grads[timed] = (loss.detach(), generator.face.weight.grad.clone())
            if timed:
                assert patch.times[0].unisync > 0 and patch.times[0].wav2lip > 0
    torch.testing.assert_close(grads[True][0], grads[False][0])
    torch.testing.assert_close(grads[True][1], grads[False][1])


class FakeHParams:
    def __init__(self) -> None:
        self.data = {"syncnet_wt": 0.0, "batch_size": 2}

    def __getattr__(self, key: str):
        return self.data[key]

    def set_hparam(self, key: str, value: float) -> None:
        self.data[key] = value


def test_scheduled_weight_ignores_the_gate() -> None:
    step = {"now": 0}
    hparams = FakeHParams()
    scheduled = ScheduledHParams(hparams, Schedule(0.2, from_step=5), lambda: step["now"])
    assert scheduled.syncnet_wt == 0.0
    step["now"] = 5
    assert scheduled.syncnet_wt == 0.2
    scheduled.set_hparam("syncnet_wt", 0.01)                     # Wav2Lip's gate
    assert scheduled.syncnet_wt == 0.2 and hparams.data["syncnet_wt"] == 0.0
    scheduled.set_hparam("batch_size", 4)
    assert scheduled.batch_size == 4


def test_librosa_shim_passes_sr_and_n_fft_as_keywords() -> None:
    def mel(*, sr, n_fft, n_mels=128):
        return sr, n_fft, n_mels

    assert librosa_shim_needed(mel)
    assert not librosa_shim_needed(lambda sr, n_fft, n_mels=128: None)
    assert positional_mel(mel)(16000, 800, n_mels=80) == (16000, 800, 80)


def test_check_reports_present_missing_and_changed_names(world, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        check.main(["--wav2lip-root", str(world["root"])])
    printed = capsys.readouterr().out
    assert done.value.code == 0 and "script hq: OK" in printed and "shim librosa  applied" in printed
    broken = write_checkout(tmp_path / "broken", replace={
        "wav2lip_train.py": ("def get_sync_loss(mel, g):", "def sync_loss_of(mel, g):"),
        "hq_wav2lip_train.py": ("def load_checkpoint(path, model,", "def load_checkpoint(model, path,"),
    })
    with pytest.raises(SystemExit) as done:
        check.main(["--wav2lip-root", str(broken)])
    printed = capsys.readouterr().out
    assert done.value.code == 1
    assert "missing           wav2lip_train.py: get_sync_loss" in printed
    assert "changed signature hq_wav2lip_train.py: load_checkpoint (has (model, path," in printed


@pytest.mark.parametrize("case", ["not_checkout", "missing_script", "missing_expert", "wrong_pair", "no_filelists",
                                  "from_step_alone", "broken_name", "no_usable_video"])
def test_usage_errors_are_one_line_with_status_2(world, tmp_path, capsys, case) -> None:
    root, expert, data = world["root"], world["expert"], world["data"]
    extra = []
    if case == "not_checkout":
        root = tmp_path
    elif case == "missing_script":
        root = write_checkout(tmp_path / "w2l")
        (root / "hq_wav2lip_train.py").unlink()
    elif case == "missing_expert":
        expert = tmp_path / "nowhere.safetensors"
    elif case == "wrong_pair":
        expert = world["landmarks"]
    elif case == "no_filelists":
        data = tmp_path / "data"
        data.mkdir()
    elif case == "from_step_alone":
        extra = ["--sync-from-step", "10"]
    elif case == "no_usable_video":
        data = tmp_path / "data"
        (data / "filelists").mkdir(parents=True)
        for split in ("train", "val"):
            (data / "filelists" / f"{split}.txt").write_text("spk9/clip9\n")
    elif case == "broken_name":
        root = write_checkout(tmp_path / "w2l", replace={"hq_wav2lip_train.py": ("syncnet_T = 5", "window = 5")})
    expected = {"not_checkout": "is not a Wav2Lip checkout", "missing_script": "has no hq_wav2lip_train.py",
                "missing_expert": "expert file not found", "wrong_pair": "cannot score (mel, rgb)",
                "no_filelists": "has no filelists/train.txt", "from_step_alone": "--sync-from-step needs --sync-weight",
                "broken_name": "syncnet_T missing", "no_usable_video": "Wav2Lip's dataset would loop forever"}[case]
    with pytest.raises(SystemExit) as done:
        train.main(["--wav2lip-root", str(root), "--script", "hq", "--expert", str(expert), *extra, "--",
                    "--data_root", str(data), "--checkpoint_dir", str(tmp_path / "ck")])
    error = capsys.readouterr().err
    assert done.value.code == 2
    assert error.startswith("error: ") and error.count("\n") == 1 and expected in error


def test_cli_error_has_no_traceback(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "integrations.wav2lip.train", "--wav2lip-root", str(tmp_path), "--", "--data_root", "x"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
