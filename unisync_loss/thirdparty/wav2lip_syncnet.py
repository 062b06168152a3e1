"""Wav2Lip's expert discriminator ``SyncNet_color``, rebuilt from its published architecture.

Written for this project from the layer list of ``models/syncnet.py`` and ``models/conv.py`` in
Rudrabha/Wav2Lip (read at commit 5c90fa9, Apr 2025); no upstream code is copied. The module's
state dict has exactly the upstream keys (``face_encoder.{i}.conv_block.{0,1}.*``,
``audio_encoder.{i}.conv_block.{0,1}.*``) and shapes, so Wav2Lip's ``lipsync_expert.pth`` loads
into it key for key (:mod:`unisync_loss.thirdparty.checkpoints`).

Every block is Conv2d + BatchNorm2d, the input added back (residual blocks) before the ReLU.
Inputs: a log-mel window ``(B, 1, 80, 16)`` (the project's ``mel``, identical to Wav2Lip's) and
5 face frames whose lower halves, 48 x 96 BGR in [0, 1], are stacked on the channels frame by
frame ``(B, 15, 48, 96)``. Outputs: 512-d embeddings, flattened and L2-normalised, non-negative
(ReLU), so ``p_sync`` is their cosine, exactly Wav2Lip's ``cosine_similarity(a, v)``, and
Wav2Lip's sync loss is ``-log p_sync``.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from unisync_loss.audio import log_mel
from unisync_loss.model import sync_prob
from unisync_loss.representations import MouthCrop
from unisync_loss.thirdparty.base import ThirdPartyConfig, ThirdPartyExpert

FACE_SIZE = 96
"""Wav2Lip's face crops are 96 x 96; the expert sees the lower half, 48 x 96."""

Stride = int | tuple[int, int]


class ConvNormBlock(nn.Module):
    """Conv2d + BatchNorm2d (+ the input when ``residual``) + ReLU, held as ``conv_block`` = [conv, norm]."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: Stride, padding: int, residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding), nn.BatchNorm2d(out_channels))
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_block(x)
        return F.relu(out + x if self.residual else out)


def _stage(in_channels: int, out_channels: int, kernel: int, stride: Stride, padding: int, residual_blocks: int) -> list[ConvNormBlock]:
    """One plain block changing the width / resolution, then ``residual_blocks`` residual 3 x 3 blocks."""
    blocks = [ConvNormBlock(in_channels, out_channels, kernel, stride, padding)]
    blocks += [ConvNormBlock(out_channels, out_channels, 3, 1, 1, residual=True) for _ in range(residual_blocks)]
    return blocks


def _encoder(stages: Sequence[list[ConvNormBlock]]) -> nn.Sequential:
    return nn.Sequential(*[block for stage in stages for block in stage])


class Wav2LipSyncNet(ThirdPartyExpert):
    """Wav2Lip's ``SyncNet_color`` with the scoring interface of UniSync (``mel`` x ``rgb``, T = 5, cosine).

    ``face_encoder``: ``(B, 15, 48, 96) -> (B, 512, 1, 1)``; ``audio_encoder``:
    ``(B, 1, 80, 16) -> (B, 512, 1, 1)``. Build it with random weights, or load a checkpoint with
    :func:`unisync_loss.thirdparty.load_sync_expert` (``"wav2lip:lipsync_expert.pth"``).
    """

    config = ThirdPartyConfig(
        architecture="wav2lip_syncnet_color", window=5, audio="mel", visual="rgb", embed_dim=512,
        measure="cosine", native_channel_order="bgr", native_range=(0.0, 1.0),
    )

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder = _encoder([
            _stage(15, 32, 7, 1, 3, 0),
            _stage(32, 64, 5, (1, 2), 1, 2),
            _stage(64, 128, 3, 2, 1, 3),
            _stage(128, 256, 3, 2, 1, 2),
            _stage(256, 512, 3, 2, 1, 2),
            _stage(512, 512, 3, 2, 1, 0),
            _stage(512, 512, 3, 1, 0, 0),
            _stage(512, 512, 1, 1, 0, 0),
        ])
        self.audio_encoder = _encoder([
            _stage(1, 32, 3, 1, 1, 2),
            _stage(32, 64, 3, (3, 1), 1, 2),
            _stage(64, 128, 3, 3, 1, 2),
            _stage(128, 256, 3, (3, 2), 1, 2),
            _stage(256, 512, 3, 1, 0, 0),
            _stage(512, 512, 1, 1, 0, 0),
        ])
        self.mouth_crop = MouthCrop(FACE_SIZE)
        self.eval()

    def sync_prob(self, audio_emb: Tensor, visual_emb: Tensor) -> Tensor:
        """Cosine of the embeddings ``(B, 512), (B, 512) -> (B,)`` float32 in [0, 1] (Wav2Lip's ``cosine_similarity``)."""
        return sync_prob(audio_emb, visual_emb)

    def audio_clip(self, wave: Tensor) -> Tensor:
        """The clip's log-mel ``(80, 1 + S // 200)`` (Wav2Lip's ``audio.melspectrogram``) of a 16 kHz wave ``(S,)``."""
        return log_mel(wave)

    def _audio_embedding(self, x: Tensor) -> Tensor:
        return F.normalize(self.audio_encoder(x).flatten(1), p=2, dim=1)

    def _visual_embedding(self, frames: Tensor, channel_order: str, value_range: tuple[float, float]) -> Tensor:
        mouth = self._native_pixels(self.mouth_crop(frames), channel_order, value_range)  # (B, 3, T, 48, 96) BGR
        stacked = rearrange(mouth, "b c t h w -> b (t c) h w")  # frame-major channels, as Wav2Lip concatenates
        return F.normalize(self.face_encoder(stacked).flatten(1), p=2, dim=1)
