"""A GeneFace-like motion generator (HuBERT stand-in -> 3DMM expression coefficients) and its training.

The generator is a small non-causal temporal conv net: the two 50 Hz feature rows of each video
frame are concatenated, projected, passed through residual dilated 1-D convolutions and mapped to
the 64 expression coefficients of that frame. It trains on random segments of the train speakers'
clips with a reconstruction loss (MSE on all coefficients) plus, optionally, ``sync_weight`` times
a frozen expert's sync loss (``unisync_loss.UniSyncLoss``) on the 5-frame windows of each segment.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn

from pretrain.data import FolderSource
from unisync_loss import UniSyncLoss
from unisync_loss.progress import progress

HUBERT_PER_FRAME = 2
"""HuBERT rows (50 Hz) per video frame (25 fps)."""


@dataclass(frozen=True)
class MotionClip:
    """One clip's tensors: ``hubert`` (2n, D), ``coeffs`` (n, 64) true 3DMM, ``mouth`` (n, 4) true
    (jaw, spread, round, closure), ``mel`` (80, F) for the evaluator."""

    clip_id: str
    hubert: Tensor
    coeffs: Tensor
    mouth: Tensor
    mel: Tensor


def load_motion_clips(source: FolderSource) -> list[MotionClip]:
    """Every clip of ``source``: a procedural corpus written by ``pretrain.synth`` (its ``reps.safetensors``
    carry the ground-truth ``mouth`` next to the representations)."""
    clips = []
    for index, record in enumerate(source.records):
        tensors = source.load(index, ("hubert", "3dmm", "mel"))
        with safe_open(str(source.clip_dir(index) / "reps.safetensors"), framework="pt") as reps:
            mouth = reps.get_tensor("mouth")
        clips.append(MotionClip(record.clip_id, tensors["hubert"].float(), tensors["3dmm"].float(), mouth.float(),
                                tensors["mel"].float()))
    return clips


class MotionGenerator(nn.Module):
    """``(B, 2n, D)`` HuBERT-rate features -> ``(B, n, out_dim)`` expression coefficients.

    Features are standardised with train statistics (``mean``, ``std`` buffers, set by
    :func:`train_motion`); any ``n`` works (the convolutions pad, so clips of any length go through).
    """

    def __init__(self, audio_dim: int = 1024, out_dim: int = 64, hidden: int = 128, layers: int = 4, kernel: int = 5):
        super().__init__()
        self.register_buffer("mean", torch.zeros(audio_dim))
        self.register_buffer("std", torch.ones(audio_dim))
        self.project = nn.Linear(HUBERT_PER_FRAME * audio_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(hidden, hidden, kernel, padding=2 ** i * (kernel // 2), dilation=2 ** i),
                          nn.GroupNorm(8, hidden), nn.ReLU())
            for i in range(layers)
        )
        self.head = nn.Conv1d(hidden, out_dim, 1)

    def forward(self, audio: Tensor) -> Tensor:
        batch, rows, dim = audio.shape
        if rows % HUBERT_PER_FRAME or dim != self.mean.shape[0]:
            raise ValueError(f"MotionGenerator: expected (B, 2n, {self.mean.shape[0]}), got {tuple(audio.shape)}")
        x = ((audio - self.mean) / self.std).reshape(batch, rows // HUBERT_PER_FRAME, HUBERT_PER_FRAME * dim)
        x = self.project(x).transpose(1, 2)  # (B, hidden, n)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x).transpose(1, 2)  # (B, n, out_dim)


@dataclass(frozen=True)
class MotionTraining:
    """Budget of one generator run; identical for every variant of a seed."""

    steps: int = 1500
    batch: int = 16
    segment: int = 24
    """frames per training segment"""
    hidden: int = 128
    lr: float = 1e-3
    window_stride: int = 4
    """the sync loss sees the 5-frame windows starting every ``window_stride`` frames of a segment"""


def sync_windows(audio: Tensor, coeffs: Tensor, window: int, stride: int) -> tuple[Tensor, Tensor]:
    """Expert windows of segments: ``(B, 2L, D)``, ``(B, L, C)`` -> ``(B·W, 2T, D)``, ``(B·W, T, C)``.

    Window ``k`` starts at frame ``k·stride`` (video) = row ``2·k·stride`` (HuBERT), as ``cut_windows`` cuts.
    """
    audio_windows = audio.unfold(1, HUBERT_PER_FRAME * window, HUBERT_PER_FRAME * stride)  # (B, W, D, 2T)
    visual_windows = coeffs.unfold(1, window, stride)  # (B, W, C, T)
    return (audio_windows.permute(0, 1, 3, 2).reshape(-1, HUBERT_PER_FRAME * window, audio.shape[-1]),
            visual_windows.permute(0, 1, 3, 2).reshape(-1, window, coeffs.shape[-1]))


def train_motion(clips: list[MotionClip], settings: MotionTraining, seed: int, sync_loss: UniSyncLoss | None = None,
                 sync_weight: float = 0.0, desc: str = "motion") -> MotionGenerator:
    """Train a :class:`MotionGenerator` on ``clips`` (train speakers) with MSE + ``sync_weight`` · sync loss.

    ``seed`` fixes the initial weights and the segment order, so variants of one seed differ only
    in their loss.
    """
    if (sync_loss is None) != (sync_weight == 0.0):
        raise ValueError(f"train_motion: a sync loss needs a positive sync_weight and vice versa, got "
                         f"sync_loss={'set' if sync_loss is not None else None}, sync_weight={sync_weight}")
    torch.manual_seed(seed)
    features = torch.cat([clip.hubert for clip in clips])
    model = MotionGenerator(features.shape[1], clips[0].coeffs.shape[1], settings.hidden)
    model.mean.copy_(features.mean(0))
    model.std.copy_(features.std(0).clamp_min(1e-6))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    order = torch.Generator().manual_seed(seed)
    length = settings.segment
    window = sync_loss.expert.config.window if sync_loss is not None else 0
    for _ in progress(range(settings.steps), desc=desc):
        picks = torch.randint(len(clips), (settings.batch,), generator=order)
        starts = [int(torch.randint(clips[i].coeffs.shape[0] - length + 1, (1,), generator=order)) for i in picks]
        audio = torch.stack([clips[i].hubert[HUBERT_PER_FRAME * s: HUBERT_PER_FRAME * (s + length)] for i, s in zip(picks, starts)])
        target = torch.stack([clips[i].coeffs[s: s + length] for i, s in zip(picks, starts)])
        generated = model(audio)
        loss = F.mse_loss(generated, target)
        if sync_loss is not None:
            loss = loss + sync_weight * sync_loss(*sync_windows(audio, generated, window, settings.window_stride))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def generate_motion(model: MotionGenerator, clips: list[MotionClip]) -> list[Tensor]:
    """The generated coefficients ``(n, 64)`` of every clip, each from its whole audio."""
    return [model(clip.hubert[None])[0] for clip in clips]
