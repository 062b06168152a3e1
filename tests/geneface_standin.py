"""A stand-in GeneFace checkout for the adapter's tests: same module paths, names and contracts, no upstream code.

``write_standin(root)`` writes a tiny package tree with GeneFace's layout (``tasks/run.py``,
``utils/commons/{hparams,base_task,trainer,ckpt_utils}.py``, ``tasks/syncnet/lm3d_syncnet.py``,
``tasks/audio2motion/lm3d_vae_sync.py``, ``tasks/postnet/lm3d_postnet_adv_sync.py``,
``data_util/face3d_helper.py``, ``egs/...yaml``) whose behaviour reproduces what the adapter relies on
and guards against: a ``Face3DHelper`` that needs CUDA, a ``build_model`` that asserts a syncnet
checkpoint exists, ``--hparams`` that only overrides existing keys, a trainer whose ``evaluate`` ends
with ``task.train()``, checkpoints of every child module with parameters, strict loading, and a sync
loss switched on after a validation sync value <= 0.75. The generator is a linear map from HuBERT to
68 x 3 landmarks per frame; the stand-in "GeneFace expert" is a linear layer.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

FILES = {
    "utils/commons/hparams.py": '''
        import argparse, os, yaml
        hparams = {}

        def _load(path):
            with open(path) as f:
                node = yaml.safe_load(f)
            merged = {}
            for base in node.pop("base_config", []) or []:
                merged.update(_load(base))
            merged.update(node)
            return merged

        def set_hparams(config="", exp_name="", hparams_str="", print_hparams=True, global_hparams=True):
            if config == "" and exp_name == "":
                parser = argparse.ArgumentParser()
                parser.add_argument("--config", default="")
                parser.add_argument("--exp_name", default="")
                parser.add_argument("-hp", "--hparams", default="")
                parser.add_argument("--reset", action="store_true")
                args, _ = parser.parse_known_args()
                config, exp_name, hparams_str = args.config, args.exp_name, args.hparams
            values = _load(config) if config else {}
            for item in filter(None, hparams_str.split(",")):
                key, value = item.split("=")
                values[key] = type(values[key])(value)  # KeyError for a key the config lacks, as upstream
            values["work_dir"] = f"checkpoints/{exp_name}" if exp_name else values.get("work_dir", "")
            hparams.clear()
            hparams.update(values)
            return values
    ''',
    "utils/commons/ckpt_utils.py": '''
        import os, torch

        def load_ckpt(cur_model, ckpt_base_dir, model_name="model", force=True, strict=True, steps=None):
            path = f"{ckpt_base_dir}/model_ckpt_steps_{steps}.ckpt"
            assert os.path.exists(path), f"| ckpt not found in {ckpt_base_dir}."
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"][model_name]
            cur_model.load_state_dict(state, strict=strict)
    ''',
    "utils/commons/base_task.py": '''
        import torch
        from torch import nn
        from utils.commons.hparams import hparams

        class BaseTask(nn.Module):
            def __init__(self):
                super().__init__()
                self.global_step = 0
                self.trainer = None
                self.model = None

            def training_step(self, sample, batch_idx, optimizer_idx=-1):
                total_loss, log = self._training_step(sample, batch_idx, optimizer_idx)
                return {"loss": total_loss, "progress_bar": log}

            def on_before_optimization(self, opt_idx):
                torch.nn.utils.clip_grad_norm_(self.parameters(), hparams.get("clip_grad_norm", 1.0))
    ''',
    "utils/commons/trainer.py": '''
        import torch

        class Trainer:
            def __init__(self, work_dir=""):
                self.work_dir = work_dir
                self.task = None
                self.global_step = 0

            def evaluate(self, task, batches):
                task.eval()
                with torch.no_grad():
                    outputs = [task.validation_step(batch, i) for i, batch in enumerate(batches)]
                task.train()
                return outputs

            def dump_checkpoint(self):
                return {"global_step": self.global_step, "state_dict": {
                    k: v.state_dict() for k, v in self.task.named_children() if len(list(v.parameters())) > 0}}

            def restore_weights(self, checkpoint):
                for k, v in checkpoint["state_dict"].items():
                    getattr(self.task, k).load_state_dict(v)
                self.global_step = checkpoint["global_step"]
    ''',
    "data_util/face3d_helper.py": '''
        import torch

        class Face3DHelper:
            def __init__(self, bfm_dir="deep_3drecon/BFM", use_gpu=True):
                if use_gpu and not torch.cuda.is_available():
                    raise RuntimeError("Face3DHelper(use_gpu=True) needs CUDA and the BFM files")
    ''',
    "tasks/syncnet/lm3d_syncnet.py": '''
        import torch
        from torch import nn
        from utils.commons.base_task import BaseTask

        class SyncNetTask(BaseTask):
            def build_model(self):
                self.model = nn.Linear(60 + 1024, 1)
                return self.model

            def run_model(self, sample, infer=False, batch_size=1024):
                frames = int(sample["y_mask"].sum(1).min())
                x = torch.cat([sample["mouth_idexp_lm3d"][:, :frames], sample["hubert"][:, : 2 * frames : 2]], -1)
                p = torch.sigmoid(self.model(x)).clamp(1e-6, 1 - 1e-6)
                return {"sync_loss": -torch.log(p).mean()}
    ''',
    "tasks/audio2motion/lm3d_vae_sync.py": '''
        import torch
        from torch import nn
        from utils.commons.base_task import BaseTask
        from utils.commons.ckpt_utils import load_ckpt
        from utils.commons.hparams import hparams
        from tasks.syncnet.lm3d_syncnet import SyncNetTask
        from data_util.face3d_helper import Face3DHelper

        class VAESyncAudio2MotionTask(BaseTask):
            def __init__(self):
                super().__init__()
                self.enable_sync = False
                self.face3d_helper = Face3DHelper(use_gpu=True)

            def build_model(self):
                self.syncnet_task = SyncNetTask()
                self.syncnet_task.build_model()
                load_ckpt(self.syncnet_task.model, hparams["syncnet_work_dir"], steps=hparams["syncnet_ckpt_steps"])
                for p in self.syncnet_task.parameters():
                    p.requires_grad = False
                self.syncnet_task.eval()
                self.model = nn.Linear(1024, 68 * 3)
                return self.model

            def build_optimizer(self, model):
                return torch.optim.Adam(model.parameters(), lr=hparams["lr"])

            def run_model(self, sample, infer=False, sync_batch_size=1024):
                mask = sample["y_mask"]
                pred = self.model(sample["hubert"][:, ::2]) * mask[:, :, None]
                lm = pred.reshape(pred.size(0), pred.size(1), 68, 3)
                _, mouth = self.face3d_helper.get_eye_mouth_lm_from_lm3d_batch(lm)
                out = self.syncnet_task.run_model({"mouth_idexp_lm3d": mouth.reshape(mouth.size(0), mouth.size(1), -1),
                                                   "hubert": sample["hubert"], "y_mask": mask},
                                                  infer=True, batch_size=sync_batch_size)
                mse = ((pred - sample["idexp_lm3d"]) ** 2 * mask[:, :, None]).sum() / (mask.sum() * 204)
                return {"sync": out["sync_loss"], "mse": mse}, {"pred": pred, "mask": mask}

            def _training_step(self, sample, batch_idx, optimizer_idx):
                losses, _ = self.run_model(sample)
                weights = {"mse": 1.0, "sync": hparams.get("lambda_sync", 0.01) if self.enable_sync else 0.0}
                total = sum(weights[k] * v for k, v in losses.items() if v.requires_grad)
                return total, losses

            def validation_step(self, sample, batch_idx):
                losses, _ = self.run_model(sample, sync_batch_size=10000)
                losses = {k: float(v) for k, v in losses.items()}
                if losses["sync"] <= 0.75 and not self.enable_sync:
                    self.enable_sync = True
                return {"losses": losses}
    ''',
    "tasks/postnet/lm3d_postnet_adv_sync.py": '''
        import importlib
        from torch import nn
        from utils.commons.base_task import BaseTask
        from utils.commons.ckpt_utils import load_ckpt
        from utils.commons.hparams import hparams
        from tasks.syncnet.lm3d_syncnet import SyncNetTask
        from data_util.face3d_helper import Face3DHelper

        class PostnetAdvSyncTask(BaseTask):
            def __init__(self):
                super().__init__()
                self.audio2motion_task = self.build_audio2motion_task()
                self.syncnet_task = self.build_syncnet_task()
                self.face3d_helper = Face3DHelper(use_gpu=True)

            def build_audio2motion_task(self):
                module, name = hparams["audio2motion_task_cls"].rsplit(".", 1)
                task = getattr(importlib.import_module(module), name)()
                task.build_model()
                load_ckpt(task.model, hparams["audio2motion_work_dir"], "model", steps=hparams["audio2motion_ckpt_steps"])
                task.eval()
                return task

            def build_syncnet_task(self):
                self.syncnet_task = SyncNetTask()
                self.syncnet_task.build_model()
                load_ckpt(self.syncnet_task.model, hparams["syncnet_work_dir"], "model", steps=hparams["syncnet_ckpt_steps"])
                for p in self.syncnet_task.parameters():
                    p.requires_grad = False
                self.syncnet_task.eval()
                return self.syncnet_task

            def build_model(self):
                self.model = nn.Linear(204, 204)
                return self.model

            def run_model(self, sample, infer=False):
                return {}, {}

            def _training_step(self, sample, batch_idx, optimizer_idx):
                return None
    ''',
    "tasks/run.py": '''
        import importlib
        from utils.commons.hparams import hparams, set_hparams

        if __name__ == "__main__":
            set_hparams()
            module, name = hparams["task_cls"].rsplit(".", 1)
            task = getattr(importlib.import_module(module), name)()
            task.build_model()
            print("BUILT", type(task).__name__, type(task.syncnet_task).__name__, hparams["unisync_expert"], hparams["work_dir"])
    ''',
    "modules/syncnet/models.py": '''
        # the real checkout holds LandmarkHubertSyncNet here; the adapter never imports it
    ''',
    "egs/egs_bases/audio2motion/vae_sync.yaml": '''
        task_cls: tasks.audio2motion.lm3d_vae_sync.VAESyncAudio2MotionTask
        syncnet_work_dir: checkpoints/syncnet
        syncnet_ckpt_steps: 40000
        lr: 0.001
        clip_grad_norm: 1.0
        work_dir: ''
    ''',
    "egs/datasets/lrs3/lm3d_vae_sync.yaml": '''
        base_config:
          - egs/egs_bases/audio2motion/vae_sync.yaml
    ''',
    "egs/datasets/videos/May/lm3d_postnet_sync.yaml": '''
        base_config:
          - egs/egs_bases/audio2motion/vae_sync.yaml
        task_cls: tasks.postnet.lm3d_postnet_adv_sync.PostnetAdvSyncTask
        audio2motion_task_cls: tasks.audio2motion.lm3d_vae_sync.VAESyncAudio2MotionTask
        audio2motion_work_dir: checkpoints/a2m
        audio2motion_ckpt_steps: 5
        postnet_lambda_sync: 0.1
    ''',
}

GENEFACE_MODULE_PREFIXES = ("utils", "tasks", "modules", "data_util")


def write_standin(root: Path) -> Path:
    """Write the stand-in checkout under ``root`` and return ``root``."""
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root
