"""SyncNet v2 of syncnet_python (Chung & Zisserman, "Out of time", 2016), rebuilt from its published architecture.

Written for this project from the layer list of ``SyncNetModel.py`` in joonson/syncnet_python
(read at commit 6efbb1c, Mar 2020); no upstream code is copied. The state dict has exactly the
upstream keys (``netcnnaud.*``, ``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``, Sequential
indices included, pooling and ReLU layers keeping their places), so ``syncnet_v2.model`` loads
into it key for key (:mod:`unisync_loss.thirdparty.checkpoints`).

Audio stream: MFCC window ``(B, 1, 13, 20)`` (0.2 s, :mod:`unisync_loss.thirdparty.mfcc`) ->
five Conv2d + BatchNorm2d + ReLU blocks with max pooling -> ``(B, 512)`` -> Linear, BatchNorm1d,
ReLU, Linear -> 1024-d. Visual stream: 5 frames of 224 x 224 BGR face crops with raw 0-255
values ``(B, 3, 5, 224, 224)`` -> Conv3d (first kernel 5 x 7 x 7 spans the 5 frames) blocks ->
``(B, 512)`` -> the same MLP shape -> 1024-d. The embeddings are not normalised; syncnet_python
compares them by Euclidean distance (:mod:`unisync_loss.thirdparty.lse`).
"""
from __future__ import annotations

import kornia
from torch import Tensor, nn

from unisync_loss.thirdparty.base import ThirdPartyConfig, ThirdPartyExpert
from unisync_loss.thirdparty.mfcc import mfcc

FRAME_SIZE = 224
EMBED_DIM = 1024


def _conv_bn_relu(conv: nn.Module, channels: int, norm: type[nn.Module]) -> list[nn.Module]:
    return [conv, norm(channels), nn.ReLU()]


def _audio_cnn() -> nn.Sequential:
    """``(B, 1, 13, 20) -> (B, 512, 1, 1)``."""
    return nn.Sequential(
        *_conv_bn_relu(nn.Conv2d(1, 64, 3, padding=1), 64, nn.BatchNorm2d),
        nn.MaxPool2d(1, 1),
        *_conv_bn_relu(nn.Conv2d(64, 192, 3, padding=1), 192, nn.BatchNorm2d),
        nn.MaxPool2d(3, (1, 2)),
        *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, nn.BatchNorm2d),
        *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, nn.BatchNorm2d),
        *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, nn.BatchNorm2d),
        nn.MaxPool2d(3, 2),
        *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4)), 512, nn.BatchNorm2d),
    )


def _lip_cnn() -> nn.Sequential:
    """``(B, 3, 5, 224, 224) -> (B, 512, 1, 1, 1)``."""
    return nn.Sequential(
        *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), 96, nn.BatchNorm3d),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
        *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
        *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
        *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6)), 512, nn.BatchNorm3d),
    )


def _projection() -> nn.Sequential:
    """``(B, 512) -> (B, 1024)``: Linear, BatchNorm1d, ReLU, Linear."""
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBED_DIM))


class SyncNetV2(ThirdPartyExpert):
    """syncnet_python's SyncNet v2 with the scoring interface of UniSync (``mfcc`` x ``rgb``, T = 5, Euclidean).

    Visual windows are full face crops ``(B, 3, 5, H, W)`` (RGB in [0, 1] by default); they are
    resized to 224 x 224 when needed (bilinear, antialiased) and converted to BGR 0-255. For
    numbers comparable with papers, give it syncnet_python's crops: S3FD face track, box scaled
    by 1 + 2 x 0.4, at 25 fps.
    """

    config = ThirdPartyConfig(
        architecture="syncnet_v2", window=5, audio="mfcc", visual="rgb", embed_dim=EMBED_DIM,
        measure="euclidean", native_channel_order="bgr", native_range=(0.0, 255.0),
    )

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = _audio_cnn()
        self.netfcaud = _projection()
        self.netfclip = _projection()
        self.netcnnlip = _lip_cnn()
        self.eval()

    def distance(self, audio_emb: Tensor, visual_emb: Tensor) -> Tensor:
        """Euclidean distance ``(B, 1024), (B, 1024) -> (B,)`` as syncnet_python computes it (lower is in sync).

        ``torch.nn.functional.pairwise_distance(visual, audio)`` (its eps 1e-6 included), in float32.
        """
        return nn.functional.pairwise_distance(visual_emb.float(), audio_emb.float())

    def audio_clip(self, wave: Tensor) -> Tensor:
        """The clip's MFCC ``(13, F)`` at 100 Hz of a 16 kHz wave ``(S,)`` in [-1, 1] (syncnet_python's features)."""
        return mfcc(wave)

    def _audio_embedding(self, x: Tensor) -> Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def _visual_embedding(self, frames: Tensor, channel_order: str, value_range: tuple[float, float]) -> Tensor:
        if tuple(frames.shape[-2:]) != (FRAME_SIZE, FRAME_SIZE):
            frames = kornia.geometry.transform.resize(frames, (FRAME_SIZE, FRAME_SIZE), interpolation="bilinear", antialias=True)
        return self.netfclip(self.netcnnlip(self._native_pixels(frames, channel_order, value_range)).flatten(1))
