"""Scores of generated motion against the corpus's ground truth and an independent evaluator expert.

Per clip (``n`` frames; generated and true coefficients ``(n, 64)``, true mouth ``(n, 4)`` =
jaw, spread, round, closure, which the corpus writes into coefficients 0..3):

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
  analogues (``unisync_loss.metrics.score_clip``, mel audio);
- ``mse``: reconstruction error over all 64 coefficients (quality).

Clip scores are averaged over clips; ``lags`` keeps the distribution.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
from torch import Tensor

from benchmarks.generators.motion import MotionClip
from unisync_loss.metrics import DEFAULT_MAX_OFFSET, score_clip, sync_accuracy
from unisync_loss.model import UniSync

MAX_LAG = 5
"""Lags -5..5 frames (+-200 ms) searched for the best correlation."""
MOUTH = slice(0, 4)
"""Expression coefficients holding (jaw, spread, round, closure)."""
JAW = 0
CLIP_MEASURES = ("mouth_mae", "lag", "abs_lag", "lag0", "oracle_accuracy", "accuracy", "lse_d", "lse_c", "mse")


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


def score_motion_clip(clip: MotionClip, generated: Tensor, evaluator: UniSync) -> dict[str, float]:
    """Every per-clip measure (module docstring) of ``generated`` ``(n, 64)`` for ``clip``."""
    mouth = generated[:, MOUTH]
    lag = best_lag(mouth[:, JAW], clip.mouth[:, JAW])
    oracle = sync_accuracy(oracle_probabilities(mouth, clip.mouth, evaluator.config.window))
    expert = score_clip(evaluator, clip.mel, generated, "mel", "3dmm")
    return {
        "mouth_mae": float((mouth - clip.mouth).abs().mean()),
        "lag": float(lag),
        "abs_lag": float(abs(lag)),
        "lag0": float(lag == 0),
        "oracle_accuracy": float(oracle.accuracy),
        "accuracy": expert["accuracy"],
        "lse_d": expert["distance"],
        "lse_c": expert["confidence"],
        "mse": float((generated - clip.coeffs).pow(2).mean()),
    }


def score_motion(clips: Sequence[MotionClip], outputs: Sequence[Tensor], evaluator: UniSync) -> dict:
    """Mean of each measure over clips, plus ``lags``: {lag: number of clips}."""
    per_clip = [score_motion_clip(clip, out, evaluator) for clip, out in zip(clips, outputs, strict=True)]
    summary: dict = {name: sum(row[name] for row in per_clip) / len(per_clip) for name in CLIP_MEASURES}
    summary["lags"] = {str(k): v for k, v in sorted(Counter(int(row["lag"]) for row in per_clip).items())}
    return summary
