"""GeneFace tasks that train with a UniSync expert instead of GeneFace's ``LandmarkHubertSyncNet``.

Use them as ``task_cls`` in a GeneFace YAML (``configs/*.yaml`` here). Importing this module applies
the run-time shims (``integrations.geneface.shims``) and imports GeneFace's task modules, so the
GeneFace checkout must be on ``sys.path`` (``python -m integrations.geneface.train`` sees to it).

GeneFace builds its expert inside its own methods (``SyncNetTask()``, ``.build_model()``,
``load_ckpt(...)`` on a GeneFace checkpoint that must exist, ``.eval()``). The subclasses run those
same methods with the task module's ``SyncNetTask`` answering a :class:`UniSyncSyncNetTask` and its
``load_ckpt`` skipping that expert, so nothing of GeneFace's is copied and no GeneFace syncnet
checkpoint is needed. Extra hparams (defined in our YAML so that ``--hparams`` can override them):

* ``unisync_expert``: expert file, cached expert name or ``procedural`` (required);
* ``unisync_visual``: ``landmarks`` (the tasks here predict landmarks);
* ``unisync_sync_start_steps``: ``-1`` keeps GeneFace's rule (sync loss on after a validation with
  sync <= 0.75); ``N >= 0`` also switches it on from global step ``N``;
* ``lambda_sync`` (VAE) / ``postnet_lambda_sync`` (postnet): GeneFace's own weights, made explicit.
"""
from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator
from unittest import mock

from unisync_loss import UniSyncLoss

from integrations.geneface.shims import apply_shims
from integrations.geneface.syncnet import UniSyncSyncNetTask

SHIMS = apply_shims()
"""The shims this process needed (see ``integrations.geneface.shims``)."""

import tasks.audio2motion.lm3d_vae_sync as vae_sync  # noqa: E402  (GeneFace; after the shims)
import tasks.postnet.lm3d_postnet_adv_sync as postnet_sync  # noqa: E402
from utils.commons.hparams import hparams  # noqa: E402


def unisync_syncnet_task() -> UniSyncSyncNetTask:
    """The stand-in expert task described by the current GeneFace hparams (``unisync_expert``, ``unisync_visual``)."""
    expert = hparams.get("unisync_expert", "")
    if not expert:
        raise ValueError("hparams: unisync_expert is empty; give an expert file or name "
                         "(--expert with integrations.geneface.train, or --hparams unisync_expert=PATH)")
    return UniSyncSyncNetTask(expert, hparams.get("unisync_visual", "landmarks"))


@contextmanager
def unisync_expert_in(module: ModuleType) -> Iterator[None]:
    """While GeneFace code of ``module`` builds its expert, it builds :func:`unisync_syncnet_task` instead.

    ``module.SyncNetTask`` is swapped for the stand-in factory and ``module.load_ckpt`` skips the
    stand-in's expert (any other model, e.g. the postnet's audio-to-motion model, loads as before).
    """
    original_load_ckpt = module.load_ckpt

    def load_ckpt(model: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(model, UniSyncLoss):
            return None
        return original_load_ckpt(model, *args, **kwargs)

    with mock.patch.object(module, "SyncNetTask", unisync_syncnet_task), mock.patch.object(module, "load_ckpt", load_ckpt):
        yield


def _sync_from_step_reached(global_step: int) -> bool:
    start = int(hparams.get("unisync_sync_start_steps", -1))
    return 0 <= start <= global_step


class UniSyncVAESyncAudio2MotionTask(vae_sync.VAESyncAudio2MotionTask):
    """GeneFace's audio-to-motion VAE task (``lm3d_vae_sync``) with a UniSync hubert x landmarks expert."""

    def build_model(self):
        if hparams.get("unisync_visual", "landmarks") != "landmarks":
            raise ValueError(f"unisync_visual={hparams.get('unisync_visual')!r}: the audio-to-motion VAE predicts "
                             "landmarks, so its expert must be a hubert x landmarks one")
        with unisync_expert_in(vae_sync):
            return super().build_model()

    def _training_step(self, sample, batch_idx, optimizer_idx):
        if _sync_from_step_reached(self.global_step):
            self.enable_sync = True
        return super()._training_step(sample, batch_idx, optimizer_idx)


class UniSyncPostnetAdvSyncTask(postnet_sync.PostnetAdvSyncTask):
    """GeneFace's postnet task (``lm3d_postnet_adv_sync``) with a UniSync hubert x landmarks expert.

    Set ``audio2motion_task_cls`` to :class:`UniSyncVAESyncAudio2MotionTask` (our postnet YAML does) so
    that the frozen audio-to-motion model it refines needs no GeneFace syncnet checkpoint either.
    """

    def build_syncnet_task(self):
        with unisync_expert_in(postnet_sync):
            return super().build_syncnet_task()
