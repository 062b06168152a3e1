"""Cutting model-ready windows of T video frames out of canonical per-clip tensors.

Canonical per-clip tensors (one clip of ``n`` video frames at 25 fps) and the batched windows
:func:`cut_windows` makes of them (``W`` = number of starts):

==============  ==========================  ==========================================
name            clip tensor                 windows
==============  ==========================  ==========================================
``mel``         ``(80, F)``, F ≈ 3.2 n + 1  ``(W, 1, 80, mel_steps(T))`` from column ``mel_start(i)``
``hubert``      ``(2n, D)``                 ``(W, 2T, D)`` from row ``2i``
``rgb``         ``(n, 3, H, W)`` uint8/float ``(W, 3, T, H, W)`` float in [0, 1]
``parsing``     ``(n, H, W)`` integer labels ``(W, T, H, W)`` long
``parsing``     ``(n, K, H, W)`` float probs ``(W, K, T, H, W)`` float
``landmarks``   ``(n, N, d)``               ``(W, T, N, d)``
``3dmm``        ``(n, D)``                  ``(W, T, D)``
``mfcc``        ``(13, F)``, F ≈ 4 n        ``(W, 1, 13, 4 T)`` from column ``4 i`` (SyncNet v2's audio only)
==============  ==========================  ==========================================

The window starting at video frame ``i`` is valid for a representation only when it lies fully
inside that tensor; nothing is ever zero-padded. The audio of a clip may be a frame or two
shorter or longer than its video, so the starts valid for a pair of representations are
``0 .. num_valid_windows(...) - 1``, the minimum over both.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from unisync_loss.audio import HUBERT_PER_FRAME, N_MELS, mel_start, mel_steps
from unisync_loss.representations import REPRESENTATIONS

_SHAPES = {
    "mel": "(80, F)",
    "hubert": "(2n, D)",
    "rgb": "(n, 3, H, W)",
    "parsing": "(n, H, W) integer labels or (n, K, H, W) float probabilities",
    "landmarks": "(n, N, 2 or 3)",
    "3dmm": "(n, D)",
    "mfcc": "(13, F) MFCC at 100 Hz",
}


def _check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window T must be a positive integer (video frames), got {window!r}")


def num_windows(n_frames: int, window: int) -> int:
    """Windows of ``window`` frames inside ``n_frames`` video frames: ``max(0, n_frames - window + 1)``."""
    _check_window(window)
    return max(0, n_frames - window + 1)


def time_length(clip: Tensor, representation: str) -> int:
    """Length of the time axis of a canonical clip tensor (mel columns, HuBERT rows or video frames)."""
    _check_clip(clip, representation)
    return clip.shape[1] if representation in ("mel", "mfcc") else clip.shape[0]


def window_count(representation: str, length: int, window: int) -> int:
    """Valid starts of a canonical tensor of ``representation`` with ``length`` steps on its time axis.

    ``length`` counts mel columns for ``mel``, HuBERT rows for ``hubert`` and video frames for the
    visual representations. A start ``i`` is valid when ``i + window`` frames fit entirely.
    """
    _check_window(window)
    if representation == "mel":
        span = mel_steps(window)
        # Starts i with mel_start(i) = floor(16 i / 5) <= length - span, i.e. 16 i < 5 (length - span + 1).
        free = length - span + 1
        return 0 if free <= 0 else (5 * free + 15) // 16
    if representation == "hubert":
        return num_windows(length // HUBERT_PER_FRAME, window)
    if representation == "mfcc":
        from unisync_loss.thirdparty.mfcc import mfcc_window_count  # third-party features: imported on use

        return mfcc_window_count(length, window)
    if representation in REPRESENTATIONS:
        return num_windows(length, window)
    raise ValueError(f"unknown representation {representation!r}; known: {', '.join(REPRESENTATIONS)}")


def num_valid_windows(clip: Mapping[str, Tensor], window: int) -> int:
    """Number of starts valid for every representation of ``clip`` (name -> canonical tensor) at once."""
    if not clip:
        raise ValueError("num_valid_windows: got no representations")
    return min(window_count(name, time_length(tensor, name), window) for name, tensor in clip.items())


def valid_starts(clip: Mapping[str, Tensor], window: int) -> Tensor:
    """Video-frame starts ``(W,)`` long valid for every representation of ``clip``: ``0 .. W - 1``."""
    return torch.arange(num_valid_windows(clip, window))


def cut_windows(clip: Tensor, representation: str, starts: Tensor | Sequence[int], window: int) -> Tensor:
    """Batched windows of ``window`` frames starting at video frames ``starts`` ``(W,)``.

    ``clip`` is a canonical per-clip tensor (see the module table); the result has the
    model-side layout of ``representation``, on ``clip``'s device. rgb comes out as float in
    [0, 1] (uint8 is divided by 255, float is taken as already scaled), parsing labels as long.
    ``ValueError`` for a malformed clip or a start whose window does not fit entirely inside it.
    """
    _check_clip(clip, representation)
    _check_window(window)
    starts = torch.as_tensor(starts, device=clip.device)
    if starts.ndim != 1 or starts.dtype.is_floating_point or starts.dtype == torch.bool:
        raise ValueError(f"{representation}: starts must be a 1-D integer sequence of video frames, got {tuple(starts.shape)} {starts.dtype}")
    starts = starts.long()
    count = window_count(representation, time_length(clip, representation), window)
    if starts.numel() and (int(starts.min()) < 0 or int(starts.max()) >= count):
        raise ValueError(
            f"{representation}: window starts must lie in [0, {count - 1}] for a clip {tuple(clip.shape)} "
            f"with T={window} (the window must fit inside the clip), got starts in [{int(starts.min())}, {int(starts.max())}]"
        )
    if representation == "mel":
        columns = mel_start(starts)[:, None] + torch.arange(mel_steps(window), device=clip.device)  # (W, L)
        return clip[:, columns].permute(1, 0, 2).unsqueeze(1)  # (80, W, L) -> (W, 1, 80, L)
    if representation == "mfcc":
        from unisync_loss.thirdparty.mfcc import cut_mfcc_windows

        return cut_mfcc_windows(clip, starts, window)
    if representation == "hubert":
        rows = HUBERT_PER_FRAME * starts[:, None] + torch.arange(HUBERT_PER_FRAME * window, device=clip.device)
        return clip[rows]  # (W, 2T, D)
    frames = clip[starts[:, None] + torch.arange(window, device=clip.device)]  # (W, T, ...)
    if representation == "rgb":
        frames = frames.permute(0, 2, 1, 3, 4)  # (W, 3, T, H, W)
        return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames
    if representation == "parsing":
        return frames.long() if clip.ndim == 3 else frames.permute(0, 2, 1, 3, 4)
    return frames  # landmarks (W, T, N, d), 3dmm (W, T, D)


def _check_clip(clip: Tensor, representation: str) -> None:
    """``ValueError`` naming the representation, expected and received shapes for a malformed clip tensor."""
    if representation not in _SHAPES:
        raise ValueError(f"unknown representation {representation!r}; known: {', '.join(REPRESENTATIONS)}")
    if not isinstance(clip, Tensor):
        raise ValueError(f"{representation}: expected a canonical clip tensor {_SHAPES[representation]}, got {type(clip).__name__}")
    shape, floating = clip.shape, clip.is_floating_point()
    if representation == "mel":
        ok = clip.ndim == 2 and shape[0] == N_MELS and floating
    elif representation == "mfcc":
        from unisync_loss.thirdparty.mfcc import NUM_CEPSTRA

        ok = clip.ndim == 2 and shape[0] == NUM_CEPSTRA and floating
    elif representation in ("hubert", "3dmm"):
        ok = clip.ndim == 2 and floating
    elif representation == "rgb":
        ok = clip.ndim == 4 and shape[1] == 3 and (floating or clip.dtype == torch.uint8)
    elif representation == "parsing":
        labels = clip.ndim == 3 and not floating and not clip.is_complex() and clip.dtype != torch.bool
        ok = labels or (clip.ndim == 4 and floating)
    else:
        ok = clip.ndim == 3 and shape[-1] in (2, 3) and floating
    if not ok:
        raise ValueError(
            f"{representation}: expected a canonical clip tensor {_SHAPES[representation]}, "
            f"got {tuple(shape)} {clip.dtype}"
        )
