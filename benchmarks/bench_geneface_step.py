"""Real GeneFace audio-to-motion training steps with GeneFace's expert vs UniSync, and checkpoint compatibility.

    python benchmarks/bench_geneface_step.py timing --geneface-root PATH --binary data/binary/unisync_procedural \
        --expert mouth.safetensors [--rounds 10] [--batch 8] [--full-size]
    python benchmarks/bench_geneface_step.py checkpoint --geneface-root PATH --work-dir checkpoints/X --steps 20

``timing``: one GeneFace ``VAESyncAudio2MotionTask`` built by GeneFace itself with its
``LandmarkHubertSyncNet`` (random weights, same architecture: a random checkpoint is written for its
``build_model`` to load) and one :class:`UniSyncVAESyncAudio2MotionTask` with the same generator
weights; batches from GeneFace's own ``LRS3SeqDataset`` / collater over the binarised data. Each round
runs one full training step of each (``training_step``, backward, gradient clipping, Adam; sync loss
on; order alternating) and times, on 1024 identical windows, the sync loss forward + backward of
GeneFace's expert, UniSync hubert x landmarks and UniSync hubert x 3dmm (expression coefficients of
the same windows). Reports medians of the paired per-round ratios, losses, and that the UniSync
expert is bit-identical after the steps and a validation-style ``eval()`` / ``train()`` flip.
``--full-size`` replaces both UniSync experts by random ones of the full architecture of
``pretrain/configs/hubert_{landmarks,3dmm}.yaml`` (hidden 128, embed 128).

``checkpoint``: counts the generator tensors that changed since the run's previous checkpoint, then
loads the checkpoint that a run with the adapter saved into *unpatched* GeneFace: its inference loader (``load_ckpt(VAEModel, work_dir, 'model', steps=N)``, strict) and its trainer's
resume path (``Trainer.restore_weights`` into GeneFace's own task, strict per entry).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from unisync_loss import UniSyncLoss, save_expert  # noqa: E402
from unisync_loss.model import UniSync, UniSyncConfig  # noqa: E402

from integrations.geneface.train import DEFAULT_CONFIG  # noqa: E402
from integrations.geneface.upstream import check_root, put_on_path  # noqa: E402

WINDOWS = 1024
"""Windows GeneFace's audio-to-motion task scores per step (its ``sync_batch_size``)."""


def enter_geneface(root: str, hparams_str: str) -> None:
    """chdir into the checkout, put it on the path, apply the shims and set GeneFace's hparams from our YAML."""
    path = check_root(root)
    os.chdir(path)
    put_on_path(path)
    from integrations.geneface.shims import apply_shims

    apply_shims()
    from utils.commons.hparams import set_hparams

    set_hparams(config=str(DEFAULT_CONFIG), hparams_str=hparams_str, print_hparams=False)


def random_geneface_syncnet(folder: Path) -> None:
    """A GeneFace syncnet checkpoint with random weights where GeneFace's ``build_model`` looks for one."""
    from modules.syncnet.models import LandmarkHubertSyncNet

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model": LandmarkHubertSyncNet(60).state_dict()}}, folder / "model_ckpt_steps_0.ckpt")


def full_size_expert(visual: dict, path: Path) -> str:
    """A random expert of the full pretraining architecture (UniSyncConfig defaults) written to ``path``."""
    model = UniSync(UniSyncConfig(audio={"hubert": {"dim": 1024}}, visual=visual, window=5))
    return str(save_expert(model.eval(), path, training={"data": "random weights (timing only)"}))


def timed(step) -> tuple[float, object]:
    start = time.perf_counter()
    result = step()
    return time.perf_counter() - start, result


def train_step(task, optimizer, batch, index: int) -> dict:
    """One step as GeneFace's ``Trainer.run_training_batch`` does it (single optimizer, no AMP)."""
    task.enable_sync = True
    output = task.training_step(batch, index, -1)
    output["loss"].backward()
    task.on_before_optimization(0)
    optimizer.step()
    optimizer.zero_grad()
    return output["progress_bar"]


def windows(batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1024 random valid windows: hubert (W, 10, 1024), mouth (W, 5, 60), exp (W, 5, 64), visual ones requiring grad."""
    frames = batch["y_mask"].sum(1).long()
    sample = torch.randint(0, frames.shape[0], (WINDOWS,), generator=generator)
    start = (torch.rand(WINDOWS, generator=generator) * (frames[sample] - 4)).long()
    rows, cols = start[:, None] + torch.arange(5), 2 * start[:, None] + torch.arange(10)
    hubert = batch["hubert"][sample[:, None], cols]
    mouth = batch["mouth_idexp_lm3d"][sample[:, None], rows].clone().requires_grad_(True)
    exp = batch["exp"][sample[:, None], rows].clone().requires_grad_(True)
    return hubert, mouth, exp


def timing(options: argparse.Namespace) -> None:
    torch.set_num_threads(options.threads)
    scratch = Path(tempfile.mkdtemp(prefix="bench_geneface_"))
    enter_geneface(options.geneface_root, f"binary_data_dir={options.binary},syncnet_work_dir={scratch / 'syncnet'},"
                                          f"syncnet_ckpt_steps=0,unisync_expert={options.expert}")
    random_geneface_syncnet(scratch / "syncnet")
    from tasks.audio2motion.dataset_utils.lrs3_dataset import LRS3SeqDataset
    from tasks.audio2motion.lm3d_vae_sync import VAESyncAudio2MotionTask
    from utils.commons.hparams import hparams

    from integrations.geneface.tasks import UniSyncVAESyncAudio2MotionTask

    expert_3dmm = options.expert_3dmm
    if options.full_size:
        hparams["unisync_expert"] = full_size_expert({"landmarks": {"points": 20, "coords": 3}}, scratch / "lm.safetensors")
        expert_3dmm = full_size_expert({"3dmm": {"dim": 64}}, scratch / "3dmm.safetensors")
    torch.manual_seed(0)
    geneface, unisync = VAESyncAudio2MotionTask(), UniSyncVAESyncAudio2MotionTask()
    geneface.build_model()
    unisync.build_model()
    unisync.model.load_state_dict(geneface.model.state_dict())
    optimizers = {id(t): t.build_optimizer(t.model) for t in (geneface, unisync)}
    for task in (geneface, unisync):
        task.on_epoch_start()
    loss_landmarks = unisync.syncnet_task.model
    loss_3dmm = UniSyncLoss("hubert", "3dmm", weights=expert_3dmm)
    expert_before = copy.deepcopy(loss_landmarks.expert.state_dict())

    dataset = LRS3SeqDataset("train")
    generator = torch.Generator().manual_seed(0)
    ratios = {"step": [], "sync_landmarks": [], "sync_3dmm": []}
    seconds = {"geneface step": [], "unisync step": [], "geneface sync": [], "unisync landmarks sync": [], "unisync 3dmm sync": []}
    logs = {}
    for index in range(options.rounds + 1):
        picks = torch.randperm(len(dataset), generator=generator)[: options.batch].tolist()
        batch = dataset.collater([dataset[i] for i in picks])
        order = (geneface, unisync) if index % 2 == 0 else (unisync, geneface)
        step_time = {}
        for task in order:
            step_time[id(task)], logs[id(task)] = timed(lambda: train_step(task, optimizers[id(task)], batch, index))
        hubert, mouth, exp = windows(batch, generator)

        def geneface_sync():
            audio, visual = geneface.syncnet_task.model(hubert, mouth)
            geneface.syncnet_task.model.cal_sync_loss(audio, visual, 1.0)[0].backward()

        t_geneface, _ = timed(geneface_sync)
        t_landmarks, _ = timed(lambda: loss_landmarks(hubert, mouth.unflatten(-1, (20, 3))).mean().backward())
        t_3dmm, _ = timed(lambda: loss_3dmm(hubert, exp).backward())
        if index == 0:
            continue  # warm-up round
        seconds["geneface step"].append(step_time[id(geneface)])
        seconds["unisync step"].append(step_time[id(unisync)])
        seconds["geneface sync"].append(t_geneface)
        seconds["unisync landmarks sync"].append(t_landmarks)
        seconds["unisync 3dmm sync"].append(t_3dmm)
        ratios["step"].append(step_time[id(geneface)] / step_time[id(unisync)])
        ratios["sync_landmarks"].append(t_landmarks / t_geneface)
        ratios["sync_3dmm"].append(t_3dmm / t_geneface)
        print(f"round {index}: geneface step {step_time[id(geneface)]:.3f} s (sync {logs[id(geneface)]['sync']:.4f}, "
              f"mse {logs[id(geneface)]['mse']:.4f}) | unisync step {step_time[id(unisync)]:.3f} s "
              f"(sync {logs[id(unisync)]['sync']:.4f}, mse {logs[id(unisync)]['mse']:.4f})", flush=True)
    unisync.eval()
    unisync.train()  # what GeneFace's Trainer.evaluate does after every validation
    identical = all(torch.equal(expert_before[k], v) for k, v in loss_landmarks.expert.state_dict().items())
    print(f"\nexperts: landmarks {loss_landmarks.source}, 3dmm {loss_3dmm.source}; batch {options.batch} clips, "
          f"{WINDOWS} windows, {options.rounds} rounds, threads {options.threads}")
    for name, values in seconds.items():
        print(f"median {name}: {statistics.median(values):.4f} s")
    print(f"median paired ratio geneface step / unisync step: {statistics.median(ratios['step']):.2f}x")
    print(f"median paired ratio unisync landmarks sync / geneface sync: {statistics.median(ratios['sync_landmarks']):.3f}")
    print(f"median paired ratio unisync 3dmm sync / geneface sync: {statistics.median(ratios['sync_3dmm']):.3f}")
    print(f"unisync expert bit-identical after the steps and an eval()/train() flip: {identical}; "
          f"expert in eval mode: {not loss_landmarks.expert.training}; "
          f"task parameters include the expert: {any(p is q for p in unisync.parameters() for q in loss_landmarks.expert.parameters())}")


def checkpoint(options: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="bench_geneface_"))
    work_dir = Path(options.work_dir).resolve()
    enter_geneface(options.geneface_root, f"syncnet_work_dir={scratch / 'syncnet'},syncnet_ckpt_steps=0")
    random_geneface_syncnet(scratch / "syncnet")
    from modules.audio2motion.vae import VAEModel
    from tasks.audio2motion.lm3d_vae_sync import VAESyncAudio2MotionTask
    from utils.commons.ckpt_utils import get_all_ckpts, get_last_checkpoint, load_ckpt
    from utils.commons.trainer import Trainer

    stored, path = get_last_checkpoint(str(work_dir), options.steps)
    print(f"checkpoint {path}: entries {sorted(stored['state_dict'])}, global_step {stored['global_step']}")
    earlier = [p for p in get_all_ckpts(str(work_dir)) if p != path]
    if earlier:
        previous = torch.load(earlier[0], map_location="cpu", weights_only=True)["state_dict"]["model"]
        changed = [k for k, v in stored["state_dict"]["model"].items() if not torch.equal(previous[k], v)]
        print(f"generator tensors changed since {Path(earlier[0]).name}: {len(changed)} of {len(previous)}")
    model = VAEModel(in_out_dim=68 * 3)
    load_ckpt(model, str(work_dir), "model", steps=options.steps)  # GeneFace's inference loader, strict
    same = all(torch.equal(model.state_dict()[k], v) for k, v in stored["state_dict"]["model"].items())
    print(f"unpatched GeneFace inference load (load_ckpt strict): ok, weights equal: {same}")
    trainer = Trainer(work_dir=str(scratch / "resume"), resume_from_checkpoint=options.steps)
    task = VAESyncAudio2MotionTask()
    task.build_model()
    trainer.task = task
    trainer.restore_weights(stored)  # GeneFace's resume path, strict per entry
    print(f"unpatched GeneFace resume (Trainer.restore_weights into VAESyncAudio2MotionTask): ok, "
          f"global_step {trainer.global_step}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--geneface-root", required=True)
    t.add_argument("--binary", required=True, help="binarised data folder, relative to the GeneFace root")
    t.add_argument("--expert", required=True, help="hubert x landmarks (20 mouth points) expert")
    t.add_argument("--expert-3dmm", default="procedural", help="hubert x 3dmm expert (default: the bundled one)")
    t.add_argument("--full-size", action="store_true", help="random experts of the full pretraining architecture")
    t.add_argument("--rounds", type=int, default=10)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("checkpoint")
    c.add_argument("--geneface-root", required=True)
    c.add_argument("--work-dir", required=True, help="a GeneFace work_dir (checkpoints/<exp_name>)")
    c.add_argument("--steps", type=int, required=True)
    options = parser.parse_args()
    if options.part == "timing":
        options.expert = str(Path(options.expert).resolve()) if Path(options.expert).is_file() else options.expert
        timing(options)
    else:
        checkpoint(options)


if __name__ == "__main__":
    main()
