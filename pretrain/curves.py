"""Training curves of a pretraining run as a PNG: loss, mean p_sync per pair kind, validation accuracy.

    python -m pretrain.curves runs/mel_rgb            # writes runs/mel_rgb/logs/curves.png

``pretrain.train`` writes the same picture at the end of every run, from ``OUTDIR/logs/metrics.csv``
(rows ``step,metric,value``). The middle panel is the one to look at first: positives should climb
away from the three negative kinds; all four stuck together at one value means a collapsed model.
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pretrain.pairs import PAIR_KINDS


def read_metrics(metrics_csv: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """``{metric: (steps, values)}`` from a ``step,metric,value`` CSV, in file order."""
    series: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    with open(metrics_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            steps, values = series[row["metric"]]
            steps.append(int(row["step"]))
            values.append(float(row["value"]))
    return dict(series)


def plot_training_curves(metrics_csv: str | Path, png: str | Path) -> Path:
    """Draw loss, p_sync per pair kind and validation accuracy against the step into ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(metrics_csv)
    figure, (loss_ax, p_ax, acc_ax) = plt.subplots(1, 3, figsize=(15, 4))
    for name in ("loss", "bce", "margin"):
        if name in series:
            loss_ax.plot(*series[name], label=name)
    loss_ax.set(title="training loss", xlabel="step")
    for kind in PAIR_KINDS:
        if f"p_{kind}" in series:
            p_ax.plot(*series[f"p_{kind}"], label=kind)
    p_ax.set(title="mean p_sync per pair kind", xlabel="step", ylim=(0, 1))
    if "val_accuracy" in series:
        acc_ax.plot(*series["val_accuracy"], marker="o")
    acc_ax.set(title="validation sync accuracy (±1 frame)", xlabel="step", ylim=(0, 1))
    for ax in (loss_ax, p_ax):
        if ax.lines:
            ax.legend()
    figure.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.curves", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a pretraining output_dir (holding logs/metrics.csv)")
    args = parser.parse_args(argv)
    metrics = args.run / "logs" / "metrics.csv"
    if not metrics.is_file():
        parser.error(f"{metrics} not found: expected the output_dir of a pretrain.train run")
    print(f"wrote {plot_training_curves(metrics, args.run / 'logs' / 'curves.png')}")


if __name__ == "__main__":
    main()
