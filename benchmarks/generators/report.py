"""The benchmark's table (mean +- spread over seeds, paired comparisons) as Markdown and its README figure."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

import matplotlib
import torch
from torch import Tensor

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from unisync_loss.atomic import atomic_path  # noqa: E402

SYNC_COLUMNS = (  # (measure, header, decimals, scale)
    ("mouth_mae", "mouth MAE ↓", 4, 1.0),
    ("abs_lag", "mean abs lag (frames) ↓", 2, 1.0),
    ("lag0", "lag 0 share ↑", 2, 1.0),
    ("oracle_accuracy", "oracle sync acc. % ↑", 1, 100.0),
    ("accuracy", "evaluator sync acc. % ↑", 1, 100.0),
    ("lse_d", "LSE-D ↓", 3, 1.0),
    ("lse_c", "LSE-C ↑", 3, 1.0),
)
MOTION_COLUMNS = SYNC_COLUMNS + (("mse", "MSE (64 coeffs) ↓", 4, 1.0),)
IMAGE_COLUMNS = SYNC_COLUMNS + (("l1", "L1 ↓", 4, 1.0), ("psnr", "PSNR dB ↑", 2, 1.0), ("mouth_l1", "lower-half L1 ↓", 4, 1.0))
Columns = Sequence[tuple[str, str, int, float]]
HEADLINE = ("mouth_mae", "oracle_accuracy", "accuracy")
"""Measures whose paired differences decide the verdicts."""
LOWER_IS_BETTER = {"mouth_mae", "abs_lag", "lse_d", "mse", "l1", "mouth_l1"}


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: Sequence[dict], columns: Columns) -> dict[str, tuple[float, float]]:
    """Per measure of ``columns``, mean and spread over ``runs`` (one score dict per seed)."""
    return {name: mean_spread([run[name] for run in runs]) for name, *_ in columns}


def paired_difference(better: Sequence[dict], worse: Sequence[dict], name: str) -> tuple[float, float, int]:
    """Improvement of ``better`` over ``worse`` per seed (positive = better), its mean, spread and
    the number of seeds where it is positive."""
    sign = -1.0 if name in LOWER_IS_BETTER else 1.0
    diffs = [sign * (b[name] - w[name]) for b, w in zip(better, worse, strict=True)]
    return (*mean_spread(diffs), sum(d > 0 for d in diffs))


def verdict(better: Sequence[dict], worse: Sequence[dict], columns: Columns) -> str:
    """Per headline measure: paired mean gain +- spread over seeds, and whether it exceeds the spread."""
    parts = []
    for name, header, decimals, scale in columns:
        if name not in HEADLINE:
            continue
        mean, spread, wins = paired_difference(better, worse, name)
        clear = wins == len(better) and mean > spread
        word = "clear gain" if clear else ("clear loss" if wins == 0 and -mean > spread else "within seed spread")
        parts.append(f"{header.split(' ↓')[0].split(' ↑')[0]}: {mean * scale:+.{decimals}f} ± {spread * scale:.{decimals}f} "
                     f"({wins}/{len(better)} seeds better; {word})")
    return "; ".join(parts)


def markdown_table(rows: Sequence[tuple[str, dict[str, tuple[float, float]]]], columns: Columns) -> str:
    """``rows``: (label, aggregate) pairs -> a Markdown table with ``mean ± spread`` cells."""
    lines = ["| variant | " + " | ".join(header for _, header, _, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, values in rows:
        cells = []
        for name, _, decimals, scale in columns:
            mean, spread = values[name]
            cells.append(f"{mean * scale:.{decimals}f} ± {spread * scale:.{decimals}f}" if spread else f"{mean * scale:.{decimals}f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save ``fig`` to ``path`` atomically (temporary file, then rename) and close it."""
    with atomic_path(path) as temporary:
        fig.savefig(temporary)
    plt.close(fig)
    return path


def plot_jaw_tracks(true: Sequence[float], tracks: dict[str, Sequence[float]], title: str, path: Path,
                    start_frame: int = 0) -> Path:
    """True jaw opening over time against each variant's generated opening (frames at 25 fps)."""
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=110)
    seconds = [(start_frame + i) / 25 for i in range(len(true))]
    ax.plot(seconds, true, color="black", linewidth=2.2, label="ground truth")
    for label, track in tracks.items():
        ax.plot(seconds, track, linewidth=1.3, label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("jaw opening")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=4, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_mouth_strips(strips: dict[str, Tensor], path: Path) -> Path:
    """One row per label: the lower halves of frames ``(k, 3, H, W)`` uint8, side by side."""
    fig, axes = plt.subplots(len(strips), 1, figsize=(9, 0.75 * len(strips)), dpi=110, squeeze=False)
    for ax, (label, frames) in zip(axes[:, 0], strips.items()):
        lower = frames[..., frames.shape[-2] // 2:, :]  # (k, 3, H/2, W)
        ax.imshow(torch.cat(list(lower), dim=-1).permute(1, 2, 0).numpy())
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path)
