"""GeneFace adapter against a stand-in GeneFace checkout written by the tests (no upstream code, no network)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from tests.geneface_standin import GENEFACE_MODULE_PREFIXES, write_standin
from unisync_loss import UniSyncLoss, save_expert
from unisync_loss.experts import ExpertFileError
from unisync_loss.model import UniSync

from integrations.geneface.shims import NUMPY_ALIASES
from integrations.geneface.syncnet import UniSyncSyncNetTask
from integrations.geneface.train import DEFAULT_CONFIG, geneface_argv

REPO = Path(__file__).resolve().parents[1]
HUBERT_DIM = 1024
MOUTH = {"landmarks": {"points": 20, "coords": 3}}


def _expert(path: Path, visual: dict | None = None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    options = {"hubert": {"dim": HUBERT_DIM}, **(visual or MOUTH)}
    config = tiny_config(["hubert"], list(visual or MOUTH), **options)
    return save_expert(UniSync(config).eval(), path)


@pytest.fixture(scope="module")
def mouth_expert(tmp_path_factory) -> Path:
    return _expert(tmp_path_factory.mktemp("experts") / "mouth.safetensors")


def _sample(frames: list[int], length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """GeneFace-style sample: hubert (B, 2T, 1024), mouth (B, T, 60), exp (B, T, 16), y_mask (B, T); padding is huge."""
    g = torch.Generator().manual_seed(seed)
    batch = len(frames)
    mask = (torch.arange(length)[None] < torch.tensor(frames)[:, None]).float()
    hubert = torch.randn(batch, 2 * length, HUBERT_DIM, generator=g)
    mouth = torch.randn(batch, length, 60, generator=g)
    hubert[mask.repeat_interleave(2, 1) == 0] = 1e4
    mouth[mask == 0] = 1e4
    return {"hubert": hubert, "mouth_idexp_lm3d": mouth.requires_grad_(True), "y_mask": mask,
            "exp": torch.randn(batch, length, 16, generator=g)}


# ---------------------------------------------------------------- the run_model contract

def test_sync_loss_is_mean_log_p_over_valid_windows_and_reaches_the_generator(mouth_expert):
    task = UniSyncSyncNetTask(str(mouth_expert))
    sample = _sample([5, 5, 3])  # one valid window for the first two samples, none for the third
    out = task.run_model(sample, infer=True, batch_size=64)
    reference = UniSyncLoss("hubert", "landmarks", weights=str(mouth_expert), reduction="none", landmark_convention="y_up")
    expected = reference(sample["hubert"][:2, :10], sample["mouth_idexp_lm3d"][:2, :5].detach().unflatten(-1, (20, 3))).mean()
    assert torch.allclose(out["sync_loss"], expected, atol=1e-5)
    out["sync_loss"].backward()
    grad = sample["mouth_idexp_lm3d"].grad
    assert grad[:2, :5].abs().sum() > 0 and grad[:, 5:].abs().sum() == 0 and grad[2].abs().sum() == 0


def test_windows_stay_inside_valid_frames(mouth_expert):
    task = UniSyncSyncNetTask(str(mouth_expert))
    frames = torch.tensor([7, 12, 5])
    starts, weight = task._window_starts(frames, 500)
    assert starts.shape == (3, 500) and bool((starts >= 0).all())
    assert bool((starts + 5 <= frames[:, None]).all())
    assert set(starts[0].tolist()) == {0, 1, 2} and bool((weight == 1).all())
    loss = task.run_model(_sample([7, 12, 5]), batch_size=1024)["sync_loss"].detach()
    assert torch.isfinite(loss) and 0 < float(loss) < 10  # the 1e4 padding never enters a window


def test_3dmm_expert_reads_exp_and_wrong_experts_fail_clearly(tmp_path, mouth_expert):
    expert_3dmm = _expert(tmp_path / "exp.safetensors", {"3dmm": {"dim": 16}})
    out = UniSyncSyncNetTask(str(expert_3dmm), "3dmm").run_model(_sample([6, 8]), batch_size=8)
    assert out["sync_loss"].ndim == 0 and float(out["sync_loss"]) > 0
    full_face = _expert(tmp_path / "face.safetensors", {"landmarks": {"points": 68, "coords": 3}})
    with pytest.raises(ValueError, match="20 iBUG mouth points"):
        UniSyncSyncNetTask(str(full_face))
    with pytest.raises(ExpertFileError):
        UniSyncSyncNetTask(str(expert_3dmm), "landmarks")
    with pytest.raises(ValueError, match="frozen"):
        UniSyncSyncNetTask(str(mouth_expert)).run_model(_sample([6]), infer=False)


# ---------------------------------------------------------------- inside the (stand-in) GeneFace checkout

@pytest.fixture
def geneface(tmp_path, monkeypatch, mouth_expert):
    """The stand-in checkout on sys.path and as cwd, GeneFace hparams from our YAML; cleaned up afterwards."""
    root = write_standin(tmp_path / "GeneFace")
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    missing_aliases = [name for name in NUMPY_ALIASES if name not in np.__dict__]
    from utils.commons.hparams import set_hparams

    set_hparams(config=str(DEFAULT_CONFIG), hparams_str=f"unisync_expert={mouth_expert}")
    import integrations.geneface.tasks as adapter

    yield adapter
    for name in list(sys.modules):
        if name.split(".")[0] in GENEFACE_MODULE_PREFIXES or name == "integrations.geneface.tasks":
            del sys.modules[name]
    for name in missing_aliases:
        delattr(np, name)


def _write_geneface_syncnet(root: Path, steps: int = 40000) -> None:
    from tasks.syncnet.lm3d_syncnet import SyncNetTask

    folder = root / "checkpoints" / "syncnet"
    folder.mkdir(parents=True, exist_ok=True)
    task = SyncNetTask()
    task.build_model()
    torch.save({"state_dict": {"model": task.model.state_dict()}}, folder / f"model_ckpt_steps_{steps}.ckpt")


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    sample = _sample([12, 9], seed=seed)
    sample["mouth_idexp_lm3d"] = sample["mouth_idexp_lm3d"].detach()
    sample["idexp_lm3d"] = torch.randn(2, 12, 204)
    return sample


def test_task_builds_without_geneface_checkpoint_or_cuda(geneface):
    from tasks.audio2motion.lm3d_vae_sync import VAESyncAudio2MotionTask

    with pytest.raises(AssertionError, match="ckpt not found"):
        VAESyncAudio2MotionTask().build_model()  # upstream needs its syncnet checkpoint
    task = geneface.UniSyncVAESyncAudio2MotionTask()
    task.build_model()
    assert isinstance(task.syncnet_task, UniSyncSyncNetTask)
    assert "data_util.face3d_helper.Face3DHelper -> SlicingFace3DHelper (CPU, no BFM files)" in geneface.SHIMS
    assert all(name in np.__dict__ for name in NUMPY_ALIASES)
    assert not any(p is q for p in task.parameters() for q in task.syncnet_task.model.expert.parameters())


def test_expert_stays_eval_and_bit_identical_through_training_and_validation(geneface):
    from utils.commons.trainer import Trainer

    task = geneface.UniSyncVAESyncAudio2MotionTask()
    task.build_model()
    expert = task.syncnet_task.model.expert
    before = {k: v.clone() for k, v in expert.state_dict().items()}
    generator_before = {k: v.clone() for k, v in task.model.state_dict().items()}
    optimizer = task.build_optimizer(task.model)
    trainer = Trainer()
    for step in range(2):
        task.enable_sync = True
        task.training_step(_batch(step), step)["loss"].backward()
        task.on_before_optimization(0)
        optimizer.step()
        optimizer.zero_grad()
        trainer.evaluate(task, [_batch(9)])  # ends with task.train()
    assert task.training and not expert.training
    assert all(torch.equal(before[k], v) for k, v in expert.state_dict().items())
    assert any(not torch.equal(generator_before[k], v) for k, v in task.model.state_dict().items())


def test_sync_term_gradient_reaches_the_generator(geneface):
    task = geneface.UniSyncVAESyncAudio2MotionTask()
    task.build_model()
    losses, _ = task.run_model(_batch())
    losses["sync"].backward()
    assert task.model.weight.grad.abs().sum() > 0


def test_checkpoints_without_the_expert_load_both_ways(geneface, tmp_path):
    from tasks.audio2motion.lm3d_vae_sync import VAESyncAudio2MotionTask
    from utils.commons.ckpt_utils import load_ckpt
    from utils.commons.trainer import Trainer

    ours = geneface.UniSyncVAESyncAudio2MotionTask()
    ours.build_model()
    trainer = Trainer()
    trainer.task, trainer.global_step = ours, 7
    checkpoint = trainer.dump_checkpoint()
    assert sorted(checkpoint["state_dict"]) == ["model"]  # the expert never enters GeneFace checkpoints

    _write_geneface_syncnet(Path.cwd())
    upstream = VAESyncAudio2MotionTask.__new__(VAESyncAudio2MotionTask)  # no CUDA here: skip its Face3DHelper
    torch.nn.Module.__init__(upstream)
    upstream.build_model()
    resume = Trainer()
    resume.task = upstream
    resume.restore_weights(checkpoint)  # unpatched GeneFace resumes our checkpoint (strict)
    assert torch.equal(upstream.model.weight, ours.model.weight) and resume.global_step == 7
    work = tmp_path / "work"
    work.mkdir()
    torch.save(checkpoint, work / "model_ckpt_steps_7.ckpt")
    inference_model = torch.nn.Linear(1024, 204)
    load_ckpt(inference_model, str(work), "model", steps=7)  # GeneFace's inference loader
    assert torch.equal(inference_model.weight, ours.model.weight)

    resume.task = upstream
    upstream_checkpoint = resume.dump_checkpoint()
    assert sorted(upstream_checkpoint["state_dict"]) == ["model", "syncnet_task"]
    again = geneface.UniSyncVAESyncAudio2MotionTask()
    again.build_model()
    back = Trainer()
    back.task = again
    back.restore_weights(upstream_checkpoint)  # a run started without the adapter resumes with it
    assert torch.equal(again.model.weight, upstream.model.weight)


def test_sync_gate_at_075_and_explicit_overrides(geneface, monkeypatch):
    from utils.commons.hparams import hparams

    task = geneface.UniSyncVAESyncAudio2MotionTask()
    task.build_model()
    for value, enabled in ((0.80, False), (0.75, True)):
        monkeypatch.setattr(task.syncnet_task, "run_model", lambda *a, v=value, **k: {"sync_loss": torch.tensor(v)})
        task.validation_step(_batch(), 0)
        assert task.enable_sync is enabled
    monkeypatch.undo()

    fresh = geneface.UniSyncVAESyncAudio2MotionTask()
    fresh.build_model()
    hparams["unisync_sync_start_steps"] = 3
    hparams["lambda_sync"] = 0.5
    fresh.global_step = 2
    total_off, losses_off = fresh._training_step(_batch(), 0, 0)
    assert not fresh.enable_sync and torch.allclose(total_off, losses_off["mse"])
    fresh.global_step = 3
    total_on, losses_on = fresh._training_step(_batch(), 0, 0)
    assert fresh.enable_sync and torch.allclose(total_on, losses_on["mse"] + 0.5 * losses_on["sync"])


def test_postnet_uses_the_expert_and_its_audio2motion_needs_no_geneface_syncnet(geneface, tmp_path):
    from utils.commons.hparams import hparams, set_hparams

    config = tmp_path / "postnet.yaml"
    config.write_text((Path(geneface.__file__).parent / "configs" / "lm3d_postnet_sync_unisync.yaml").read_text())
    set_hparams(config=str(config), hparams_str=f"unisync_expert={hparams['unisync_expert']}")
    a2m = geneface.UniSyncVAESyncAudio2MotionTask()
    a2m.build_model()
    Path(hparams["audio2motion_work_dir"]).mkdir(parents=True)
    torch.save({"state_dict": {"model": a2m.model.state_dict()}}, Path(hparams["audio2motion_work_dir"]) / "model_ckpt_steps_5.ckpt")
    task = geneface.UniSyncPostnetAdvSyncTask()
    assert isinstance(task.syncnet_task, UniSyncSyncNetTask)
    assert isinstance(task.audio2motion_task.syncnet_task, UniSyncSyncNetTask)
    assert torch.equal(task.audio2motion_task.model.weight, a2m.model.weight)


def test_unknown_hparams_key_fails_upstream_and_ours_are_in_the_yaml(geneface):
    from utils.commons.hparams import set_hparams

    with pytest.raises(KeyError):
        set_hparams(config="egs/datasets/lrs3/lm3d_vae_sync.yaml", hparams_str="unisync_expert=x")
    values = set_hparams(config=str(DEFAULT_CONFIG), hparams_str="unisync_expert=x,unisync_sync_start_steps=4,lambda_sync=0.2")
    assert (values["unisync_expert"], values["unisync_sync_start_steps"], values["lambda_sync"]) == ("x", 4, 0.2)


# ---------------------------------------------------------------- launcher and check (subprocesses)

def test_geneface_argv_merges_hparams_and_adds_our_config():
    args = geneface_argv(["--", "--exp_name", "x", "--hparams", "lr=0.1"], "/e.safetensors", "landmarks")
    assert args == ["--config", str(DEFAULT_CONFIG), "--exp_name", "x", "--hparams",
                    "lr=0.1,unisync_expert=/e.safetensors,unisync_visual=landmarks"]
    assert geneface_argv(["--config", "c.yaml"], "e", "landmarks")[-2:] == ["--hparams", "unisync_expert=e,unisync_visual=landmarks"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_launcher_runs_geneface_run_py_with_our_task(tmp_path, mouth_expert):
    root = write_standin(tmp_path / "GeneFace")
    done = _run("integrations.geneface.train", "--geneface-root", str(root), "--expert", str(mouth_expert),
                "--", "--exp_name", "demo")
    assert done.returncode == 0, done.stderr
    assert f"BUILT UniSyncVAESyncAudio2MotionTask UniSyncSyncNetTask {mouth_expert} checkpoints/demo" in done.stdout


def test_launcher_and_check_fail_clearly(tmp_path, mouth_expert):
    root = write_standin(tmp_path / "GeneFace")
    bad_root = _run("integrations.geneface.train", "--geneface-root", str(tmp_path), "--expert", str(mouth_expert))
    assert bad_root.returncode == 2 and "tasks/run.py is missing" in bad_root.stderr
    assert len(bad_root.stderr.strip().splitlines()) == 1
    no_expert = _run("integrations.geneface.train", "--geneface-root", str(root), "--expert", str(tmp_path / "none.safetensors"))
    assert no_expert.returncode == 2 and "none.safetensors" in no_expert.stderr
    wrong_pair = _run("integrations.geneface.check", "--geneface-root", str(root), "--expert", "procedural")
    assert wrong_pair.returncode == 2 and "20 iBUG mouth points" in wrong_pair.stderr

    ready = _run("integrations.geneface.check", "--geneface-root", str(root), "--expert", str(mouth_expert))
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "ready: yes" in ready.stdout and "SlicingFace3DHelper" in ready.stdout
    (root / "tasks" / "postnet" / "lm3d_postnet_adv_sync.py").write_text("PostnetAdvSyncTask = None\n")
    broken = _run("integrations.geneface.check", "--geneface-root", str(root))
    assert broken.returncode == 1 and "MISSING: tasks.postnet.lm3d_postnet_adv_sync.SyncNetTask" in broken.stdout


# ---------------------------------------------------------------- GeneFace-convention data for experts

def test_idexp_landmarks_have_no_pose_and_no_mean_shape():
    from integrations.geneface.corpus import geneface_item, idexp_landmarks
    from pretrain.synth.corpus import generate_split
    from pretrain.synth.face import FaceModel, Pose, apply_pose, rotation_matrices

    clip = generate_split("train", 3, 1, 0.4, "default", 0)[0]
    idexp = idexp_landmarks(clip, 0, "default")
    pose = clip.pose.numpy().astype(np.float64)
    posed = apply_pose(idexp + FaceModel.default().mean[None],
                       Pose(pose[:, :3], rotation_matrices(pose[:, :3]), pose[:, 3:6], pose[:, 6]))
    assert np.allclose(posed, clip.landmarks.numpy(), atol=1e-4)  # idexp + mean shape, posed = the corpus landmarks
    item = geneface_item(clip, 0, "default", 0)
    n = clip.n_frames
    assert item["coeff"].shape == (n, 257) and item["idexp_lm3d"].shape == (n, 68, 3)
    assert item["hubert"].shape == item["mel"].shape[:1] + (1024,) == (2 * n, 1024)
    assert np.array_equal(item["coeff"][:, 80:144], clip.coeffs.numpy())


def test_expert_data_folder_is_what_pretrain_reads(tmp_path):
    from integrations.geneface.corpus import expert_reps, write_expert_data
    from pretrain.data import FolderSource

    idexp = torch.randn(9, 68, 3)
    reps = expert_reps(torch.randn(19, 1024), idexp, torch.randn(9, 64))  # HuBERT one row long, as GeneFace's may be
    assert reps["hubert"].shape == (18, 1024) and torch.equal(reps["landmarks"], idexp[:, 48:68])
    with pytest.raises(ValueError, match="hubert"):
        expert_reps(torch.randn(10, 1024), idexp)
    write_expert_data(tmp_path, [("train", "a", "a/c0", reps), ("train", "b", "b/c0", reps), ("test", "c", "c/c0", reps)])
    source = FolderSource(tmp_path, "train", cache=False)
    assert [r.speaker for r in source.records] == ["a", "b"]
    loaded = source.load(0, ["hubert", "landmarks"])
    assert loaded["landmarks"].shape == (9, 20, 3) and source.window_count(0, ["hubert", "landmarks"], 5) == 5
