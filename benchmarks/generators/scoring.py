"""Scores of generated motion or frames against the corpus's ground truth and an independent evaluator expert.

Per clip, from the generated mouth track ``(n, 4)`` = jaw, spread, round, closure (motion: the
generated coefficients 0..3, where the corpus writes them; image: the mouth reader's reading of
the generated frames) and the true one:

- ``mouth_mae``: mean |generated - true| over the 4 mouth parameters (ground truth);
- ``lag``: the shift ``k`` in -``MAX_LAG``..``MAX_LAG`` frames maximising the correlation of the
  generated jaw opening at ``t + k`` with the true one at ``t`` (``k > 0``: the generated mouth opens
  late; 0 is perfect); ``abs_lag`` its magnitude, ``lag0`` 1 when it is 0 (averaged: the share of clips);
- ``oracle_accuracy``: the AVST sync-accuracy protocol (``unisync_loss.metrics.sync_accuracy``,
  offsets -15..15, +-1 frame) with an oracle in place of an expert: visual window ``j`` of the
  generated mouth scored against the *true* mouth window at ``j + o`` (``exp(-mean squared
  difference)``). On the true clips it gives the best any evaluator can do on the preset (silences
  are ambiguous);
- ``accuracy``, ``lse_d``, ``lse_c``: the evaluator expert's sync accuracy and LSE-D / LSE-C
  analogues (``unisync_loss.metrics.score_clip``; it hears the audio representation the generator
  does not: mel for motion, HuBERT for images);
- quality: ``mse`` over all 64 coefficients (motion); ``l1``, ``psnr`` (dB) over the frame and
  ``mouth_l1`` over its lower half (image).

Clip scores are averaged over clips; ``lags`` keeps the distribution.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
from torch import Tensor

from benchmarks.generators.image import ImageClip, MouthReader, lower_half, read_mouth
from benchmarks.generators.motion import MotionClip
from unisync_loss.metrics import DEFAULT_MAX_OFFSET, score_clip, sync_accuracy
from unisync_loss.model import UniSync

MAX_LAG = 5
"""Lags -5..5 frames (+-200 ms) searched for the best correlation."""
MOUTH = slice(0, 4)
"""Expression coefficients holding (jaw, spread, round, closure)."""
JAW = 0


def best_lag(generated: Tensor, true: Tensor, max_lag: int = MAX_LAG) -> int:
    """Lag ``k`` (frames) maximising corr(generated[t + k], true[t]) over the overlap; ``(n,)`` tracks."""
    n = true.shape[0]
    if generated.shape != true.shape or n <= 2 * max_lag + 2:
        raise ValueError(f"best_lag: expected two equal (n,) tracks with n > {2 * max_lag + 2}, "
                         f"got {tuple(generated.shape)} and {tuple(true.shape)}")
    correlations = []
    for k in range(-max_lag, max_lag + 1):
        a = generated[max(k, 0): n + min(k, 0)]
        b = true[max(-k, 0): n - max(k, 0)]
        correlations.append(torch.corrcoef(torch.stack([a, b]))[0, 1].nan_to_num(-1.0))
    return int(torch.stack(correlations).argmax()) - max_lag


def oracle_probabilities(generated: Tensor, true: Tensor, window: int, max_offset: int = DEFAULT_MAX_OFFSET) -> Tensor:
    """Offset score matrix ``(n - T + 1, 2M + 1)`` of an oracle that hears the true mouth ``(n, 4)``.

    Entry ``(j, o)`` = ``exp(-mean((generated[j:j+T] - true[j+o:j+o+T])²))``, NaN where the true
    window falls outside the clip: the layout ``unisync_loss.metrics.sync_accuracy`` expects.
    """
    gen_windows = generated.unfold(0, window, 1)  # (W, 4, T)
    true_windows = true.unfold(0, window, 1)
    count = gen_windows.shape[0]
    offsets = torch.arange(-max_offset, max_offset + 1)
    partner = torch.arange(count)[:, None] + offsets  # (W, 2M+1)
    valid = (partner >= 0) & (partner < count)
    distance = (gen_windows[:, None] - true_windows[partner.clamp(0, count - 1)]).pow(2).mean((-1, -2))
    return torch.where(valid, torch.exp(-distance), torch.full_like(distance, float("nan")))


def mouth_measures(generated: Tensor, true: Tensor, window: int) -> dict[str, float]:
    """Ground-truth measures of a generated mouth track ``(n, 4)`` against the true one ``(n, 4)``."""
    lag = best_lag(generated[:, JAW], true[:, JAW])
    oracle = sync_accuracy(oracle_probabilities(generated, true, window))
    return {"mouth_mae": float((generated - true).abs().mean()), "lag": float(lag), "abs_lag": float(abs(lag)),
            "lag0": float(lag == 0), "oracle_accuracy": float(oracle.accuracy)}


def evaluator_measures(evaluator: UniSync, audio: Tensor, visual: Tensor, audio_rep: str, visual_rep: str) -> dict[str, float]:
    """The evaluator's sync accuracy and LSE-D / LSE-C analogues of one clip (canonical tensors)."""
    expert = score_clip(evaluator, audio, visual, audio_rep, visual_rep)
    return {"accuracy": expert["accuracy"], "lse_d": expert["distance"], "lse_c": expert["confidence"]}


def score_motion_clip(clip: MotionClip, generated: Tensor, evaluator: UniSync) -> dict[str, float]:
    """Every per-clip measure (module docstring) of ``generated`` ``(n, 64)`` for ``clip``."""
    return {**mouth_measures(generated[:, MOUTH], clip.mouth, evaluator.config.window),
            **evaluator_measures(evaluator, clip.mel, generated, "mel", "3dmm"),
            "mse": float((generated - clip.coeffs).pow(2).mean())}


def summarise(per_clip: Sequence[dict[str, float]]) -> dict:
    """Mean of each measure over clips, plus ``lags``: {lag: number of clips}."""
    summary: dict = {name: sum(row[name] for row in per_clip) / len(per_clip) for name in per_clip[0]}
    summary["lags"] = {str(k): v for k, v in sorted(Counter(int(row["lag"]) for row in per_clip).items())}
    return summary


def score_motion(clips: Sequence[MotionClip], outputs: Sequence[Tensor], evaluator: UniSync) -> dict:
    """:func:`summarise` of every clip's :func:`score_motion_clip`."""
    return summarise([score_motion_clip(clip, out, evaluator) for clip, out in zip(clips, outputs, strict=True)])


def score_image_clip(clip: ImageClip, generated: Tensor, evaluator: UniSync, reader: MouthReader) -> dict[str, float]:
    """Every per-clip measure of generated frames ``(m, 3, H, W)`` (frames ``clip.frames``) for ``clip``.

    The mouth track is the mouth reader's reading of the frames; the evaluator (hubert x rgb) hears
    the HuBERT rows of the same frames; quality: L1 and PSNR over the frame, L1 over its lower half.
    """
    first, stop = clip.frames.start, clip.frames.stop
    true = clip.rgb[first:stop].float() / 255.0
    squared = (generated - true).pow(2).mean().clamp_min(1e-10)
    return {**mouth_measures(read_mouth(reader, generated), clip.mouth[first:stop], evaluator.config.window),
            **evaluator_measures(evaluator, clip.hubert[2 * first: 2 * stop], generated, "hubert", "rgb"),
            "l1": float((generated - true).abs().mean()), "psnr": float(-10.0 * torch.log10(squared)),
            "mouth_l1": float((lower_half(generated) - lower_half(true)).abs().mean())}


def score_image(clips: Sequence[ImageClip], outputs: Sequence[Tensor], evaluator: UniSync, reader: MouthReader) -> dict:
    """:func:`summarise` of every clip's :func:`score_image_clip`."""
    return summarise([score_image_clip(clip, out, evaluator, reader) for clip, out in zip(clips, outputs, strict=True)])
