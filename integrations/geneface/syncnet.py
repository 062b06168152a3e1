"""``UniSyncSyncNetTask``: the stand-in for GeneFace's ``SyncNetTask`` that scores with a frozen UniSync expert.

Every GeneFace consumer of the expert calls ``self.syncnet_task.run_model(sample, infer=True,
batch_size=N)`` and reads ``['sync_loss']``; this class keeps that contract:

* ``sample['hubert']`` ``(B, 2T, 1024)`` HuBERT features at 50 Hz, ``sample['y_mask']`` ``(B, T)`` (1 on
  valid video frames, which come first), and the visual stream: ``sample['mouth_idexp_lm3d']``
  ``(B, T, 60)`` (iBUG points 48-67 of the predicted 68 x 3 idexp landmarks, flattened) for a
  ``landmarks`` expert, or ``sample['exp']`` ``(B, T, 64)`` expression coefficients for a ``3dmm`` expert.
* ``N`` random 5-frame windows (``ceil(N / B)`` per sample, GeneFace's count), each lying inside the
  sample's valid frames for both streams; samples with fewer valid frames than a window contribute none.
* ``sync_loss`` = mean over the windows of ``-log p_sync`` (GeneFace's BCE against 1 with every window a
  positive), so GeneFace's 0.75 gate keeps its meaning.

The expert sits in a :class:`~unisync_loss.UniSyncLoss` (held outside the module tree), so the task
has no parameters: GeneFace's checkpoints never contain it, ``task.train()`` never reaches it, and no
optimizer or gradient clipping sees it. It accepts (and ignores) the ``syncnet_task`` entry of a
checkpoint written with GeneFace's own expert, so such runs resume under the adapter.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from unisync_loss import UniSyncLoss
from unisync_loss.audio import HUBERT_PER_FRAME

VISUAL_KEYS = {"landmarks": "mouth_idexp_lm3d", "3dmm": "exp"}
"""Visual representation of the expert -> the key of GeneFace's sample that holds it."""
MOUTH_POINTS = 20
"""iBUG points 48-67: what GeneFace passes as ``mouth_idexp_lm3d`` (60 values per frame)."""


class UniSyncSyncNetTask(nn.Module):
    """GeneFace's ``SyncNetTask`` interface over a frozen UniSync expert (``hubert`` x ``landmarks`` or ``3dmm``).

    Args:
        expert: an expert file path, the name of a cached expert, or ``"procedural"`` (see ``UniSyncLoss``).
        visual: ``"landmarks"`` (the expert must take ``(B, T, 20, 3)`` mouth points) or ``"3dmm"``.

    ``ValueError`` / ``ExpertFileError`` when the expert cannot score (hubert, ``visual``) or its
    landmark head does not take GeneFace's 20 mouth points.
    """

    def __init__(self, expert: str, visual: str = "landmarks") -> None:
        super().__init__()
        if visual not in VISUAL_KEYS:
            raise ValueError(f"unisync_visual must be one of {sorted(VISUAL_KEYS)}, got {visual!r}")
        # GeneFace's idexp landmarks are model coordinates (y up), never image pixels.
        self.model = UniSyncLoss("hubert", visual, weights=expert, reduction="none", kind="log", landmark_convention="y_up")
        self.visual = visual
        self.visual_key = VISUAL_KEYS[visual]
        self.window = self.model.expert.config.window
        if visual == "landmarks":
            options = self.model.expert.config.visual["landmarks"]
            if options["points"] != MOUTH_POINTS or options["coords"] != 3 or options["mouth"] is not None:
                raise ValueError(
                    f"{self.model.source}: GeneFace passes the 20 iBUG mouth points (48-67) x 3 per frame; "
                    f"the expert's landmarks head takes points={options['points']}, coords={options['coords']}, "
                    f"mouth={options['mouth']} (train one with pretrain/configs/geneface_hubert_landmarks.yaml)"
                )

    def build_model(self) -> None:
        """GeneFace calls this on its expert task; the expert is already loaded."""
        return None

    def run_model(self, sample: Mapping[str, Tensor], infer: bool = True, batch_size: int = 1024) -> dict[str, Tensor]:
        """``{'sync_loss': scalar}``: mean ``-log p_sync`` over ``ceil(batch_size / B)`` random windows of each sample that holds one."""
        if not infer:
            raise ValueError("UniSyncSyncNetTask.run_model: the UniSync expert is frozen (infer=True only); "
                             "train experts with python -m pretrain.train")
        if self.visual_key not in sample:
            raise ValueError(f"UniSyncSyncNetTask ({self.visual} expert): the sample has no {self.visual_key!r} "
                             f"(keys: {sorted(sample)}); a {self.visual} expert needs the generator's output there")
        hubert, visual = sample["hubert"], sample[self.visual_key]
        frames = self._valid_frames(sample["y_mask"], hubert, visual)
        per_sample = math.ceil(batch_size / hubert.shape[0])
        # Samples shorter than a window are left out before the expert sees them: their padding
        # (zeros from GeneFace's collater) is no input to judge, and the loss's value checks refuse it.
        usable = frames >= self.window
        if not bool(usable.any()):
            return {"sync_loss": visual.sum() * 0.0}  # no window anywhere: zero, still part of the graph
        hubert, visual, frames = hubert[usable], visual[usable], frames[usable]
        starts, _ = self._window_starts(frames, per_sample)
        audio_windows, visual_windows = self._cut(hubert, visual, starts)
        return {"sync_loss": self.model(audio_windows, visual_windows).mean()}

    def _valid_frames(self, y_mask: Tensor, hubert: Tensor, visual: Tensor) -> Tensor:
        """``(B,)`` frames usable by both streams: valid video frames, capped by the audio and visual lengths."""
        if hubert.ndim != 3 or visual.ndim != 3 or y_mask.ndim != 2 or not (
                hubert.shape[0] == visual.shape[0] == y_mask.shape[0]):
            raise ValueError(
                f"GeneFace sample: expected hubert (B, 2T, D), {self.visual_key} (B, T, C), y_mask (B, T); got "
                f"{tuple(hubert.shape)}, {tuple(visual.shape)}, {tuple(y_mask.shape)}")
        cap = min(visual.shape[1], y_mask.shape[1], hubert.shape[1] // HUBERT_PER_FRAME)
        if cap < self.window:
            raise ValueError(f"GeneFace sample: {cap} frames per sample, fewer than the expert's window of "
                             f"{self.window} (hubert {tuple(hubert.shape)}, {self.visual_key} {tuple(visual.shape)})")
        return y_mask.sum(dim=1).long().clamp(max=cap)

    def _window_starts(self, frames: Tensor, per_sample: int) -> tuple[Tensor, Tensor]:
        """Random starts ``(B, per_sample)`` inside ``frames``, and their weights (0 where a sample is too short)."""
        positions = (frames - self.window + 1).clamp_min(0)  # number of valid starts per sample
        uniform = torch.rand(frames.shape[0], per_sample, device=frames.device)
        starts = torch.minimum((uniform * positions[:, None]).long(), (positions[:, None] - 1).clamp_min(0))
        weight = (positions[:, None] > 0).float().expand_as(starts)
        return starts, weight

    def _cut(self, hubert: Tensor, visual: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        """Windows ``(B * W, 2T, D)`` of HuBERT and ``(B * W, T, ...)`` of the visual stream at ``starts`` ``(B, W)``."""
        batch = torch.arange(starts.shape[0], device=starts.device)[:, None, None]
        frames = starts[:, :, None] + torch.arange(self.window, device=starts.device)
        rows = HUBERT_PER_FRAME * starts[:, :, None] + torch.arange(HUBERT_PER_FRAME * self.window, device=starts.device)
        audio = hubert[batch, rows].flatten(0, 1)
        video = visual[batch, frames].flatten(0, 1)
        if self.visual == "landmarks":
            video = video.unflatten(-1, (-1, 3))
        return audio, video

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Accept the ``syncnet_task`` entry of a checkpoint written with GeneFace's expert, and ignore it.

        GeneFace's trainer strict-loads every entry of a checkpoint into the task attribute of that
        name; this task has no state, so only an empty dict or GeneFace-expert weights (``model.*``) come.
        """
        unexpected = [key for key in state_dict if not key.startswith("model.")]
        if unexpected:
            raise ValueError(f"UniSyncSyncNetTask: expected GeneFace SyncNet weights (model.*) or nothing, "
                             f"got keys {unexpected[:5]}")
        return super().load_state_dict({}, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        return f"visual={self.visual!r}, sample key={self.visual_key!r}, window={self.window}"
