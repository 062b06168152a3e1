"""Framing augmentation: move and resize the face crop of each visual window, the same way for all its frames.

Real face crops are not framed exactly as the procedural corpus frames its faces (a detector box
puts the mouth higher and the face larger than :mod:`unisync_loss.framing`'s crop). An rgb or
parsing expert trained on one framing only reads the mouth where that framing puts it; this
augmentation shows it windows whose crop is rescaled by ``s`` and moved by ``(dx, dy)`` (shares of
the crop side), drawn per window and kept for all its ``T`` frames (a moving crop would be motion
the audio does not explain).

:func:`reframe` is the geometric operation (also used to measure an expert's accuracy at a fixed
framing offset, ``benchmarks/bench_framing.py``); :func:`augment_framing` draws the parameters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FRAMED_REPRESENTATIONS = ("rgb", "parsing")
"""Visual representations that are images of the face crop (the augmentation applies to them only)."""


def reframe(windows: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Windows seen through a crop ``scale`` times the side of theirs, its centre moved by ``shift`` crop sides.

    ``windows``: rgb ``(B, 3, T, H, W)`` float (bilinear) or parsing labels ``(B, T, H, W)``
    integer (nearest, labels stay labels); ``scale`` ``(B,)`` (> 1: a larger crop, the face looks
    smaller); ``shift`` ``(B, 2)`` as (x, y) shares of the crop side (y > 0: the crop moves down,
    the face moves up in it). Pixels from outside the original crop repeat its border. Returns a
    tensor of the input's shape and dtype; ``scale = 1, shift = 0`` returns the input's values.
    """
    if windows.dim() not in (4, 5) or scale.shape != windows.shape[:1] or shift.shape != (windows.shape[0], 2):
        raise ValueError(f"reframe: expected windows (B, 3, T, H, W) or (B, T, H, W) with scale (B,) and shift (B, 2), "
                         f"got {tuple(windows.shape)}, {tuple(scale.shape)}, {tuple(shift.shape)}")
    labels = not windows.is_floating_point()
    batch, height, width = windows.shape[0], windows.shape[-2], windows.shape[-1]
    images = windows.unsqueeze(1) if labels else windows  # (B, C, T, H, W)
    channels, frames = images.shape[1], images.shape[2]
    flat = images.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)
    theta = torch.zeros(batch, 2, 3, dtype=torch.float32, device=windows.device)
    theta[:, 0, 0] = theta[:, 1, 1] = scale.float()
    theta[:, :, 2] = 2.0 * shift.float()  # a crop side spans 2 in grid coordinates ([-1, 1])
    theta = theta.repeat_interleave(frames, dim=0)
    grid = F.affine_grid(theta, [batch * frames, channels, height, width], align_corners=False)
    sampled = F.grid_sample(flat.float(), grid.to(flat.device), mode="nearest" if labels else "bilinear",
                            padding_mode="border", align_corners=False)
    out = sampled.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)
    return out.squeeze(1).to(windows.dtype) if labels else out.to(windows.dtype)


def augment_framing(windows: Tensor, max_scale: float, max_shift: float, generator: torch.Generator) -> Tensor:
    """:func:`reframe` each window with ``scale ~ U[1 - max_scale, 1 + max_scale]`` and ``shift ~ U[-max_shift, max_shift]^2``.

    Parameters come from ``generator`` (CPU), one draw per window; ``max_scale = max_shift = 0``
    returns ``windows`` unchanged.
    """
    if not 0.0 <= max_scale < 1.0 or not 0.0 <= max_shift <= 0.5:
        raise ValueError(f"framing augmentation: expected 0 <= max_scale < 1 and 0 <= max_shift <= 0.5, got {max_scale}, {max_shift}")
    if max_scale == 0.0 and max_shift == 0.0:
        return windows
    batch = windows.shape[0]
    scale = 1.0 + max_scale * (2.0 * torch.rand(batch, generator=generator) - 1.0)
    shift = max_shift * (2.0 * torch.rand(batch, 2, generator=generator) - 1.0)
    return reframe(windows, scale, shift)
