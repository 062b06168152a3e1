"""Export a trained expert to a ``.safetensors`` expert file that ``UniSyncLoss`` loads.

``pretrain.train`` calls ``export_expert`` at the end of a run. From the command line::

    python -m pretrain.export RUN_DIR                      # RUN_DIR/best.safetensors -> expert cache
    python -m pretrain.export RUN_DIR --checkpoint step_001000 --out my_expert.safetensors

The default destination is ``unisync_loss.experts.default_expert_path(audio, visual)``
(``$UNISYNC_HOME/experts/<audio>_<visual>.safetensors``), where ``UniSyncLoss("<audio>", "<visual>")``
looks first; a joint expert goes to ``$UNISYNC_HOME/experts/<name>.safetensors`` (``TrainConfig.name``,
e.g. ``mel+hubert_3dmm+landmarks``), where ``UniSyncLoss`` finds it for every pair it was trained on. The metadata carries the representations, T and the training summary (data,
steps, validation / test accuracy, full config).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from safetensors.torch import load_file

from pretrain.config import TrainConfig, load_config
from pretrain.warmstart import expert_pairs, merged_config, start_expert
from unisync_loss.experts import EXPERT_SUFFIX, default_expert_path, experts_dir, load_expert, save_expert, trained_pairs
from unisync_loss.model import UniSync

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile wrappers


def training_summary(
    config: TrainConfig,
    data: dict[str, Any],
    steps: int,
    val_accuracy: float,
    test_accuracy: float | None = None,
    *,
    val_per_pair: dict[str, float] | None = None,
    test_per_pair: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The ``training`` block of an expert header: data summary, steps, accuracies, full config.

    A joint run adds each pair's accuracy (``val_accuracy_per_pair`` / ``test_accuracy_per_pair``,
    keyed ``<audio>_<visual>``); its ``val_accuracy`` / ``test_accuracy`` are their means.
    """
    summary = {"data": data, "steps": steps, "val_accuracy": val_accuracy, "config": config.to_dict()}
    if test_accuracy is not None:
        summary["test_accuracy"] = test_accuracy
    if val_per_pair and len(val_per_pair) > 1:
        summary["val_accuracy_per_pair"] = val_per_pair
    if test_per_pair:
        summary["test_accuracy_per_pair"] = test_per_pair
    return summary


def default_export_path(config: TrainConfig) -> Path:
    """Where a run exports by default: ``default_expert_path(audio, visual)``, for a joint run ``experts_dir()/<name>.safetensors``."""
    if len(config.model.audio) == len(config.model.visual) == 1:
        return default_expert_path(config.audio, config.visual)
    return experts_dir() / f"{config.name}{EXPERT_SUFFIX}"


def export_expert(
    model: UniSync,
    config: TrainConfig,
    training: dict[str, Any],
    path: str | Path | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """Write ``model`` with ``training`` (see ``training_summary``) to ``path`` or the expert cache.

    The header's ``pairs``: ``pairs``, else those ``model``'s own header records (an expert written
    by pretrain.train), else the pairs of ``config``.
    """
    header = getattr(model, "expert_header", None)
    pairs = pairs if pairs is not None else trained_pairs(header) if header is not None else config.pairs
    return save_expert(model, path or default_export_path(config), training=training, pairs=pairs)


def model_from_checkpoint(run_dir: str | Path, checkpoint: str) -> tuple[UniSync, TrainConfig]:
    """UniSync with the weights of ``run_dir/checkpoints/<checkpoint>`` (an ``accelerator.save_state`` folder)."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    weights = run_dir / "checkpoints" / checkpoint / "model.safetensors"
    if not weights.exists():
        raise ValueError(f"checkpoint {checkpoint!r} of {run_dir}: no {weights} (expected accelerate's save_state layout)")
    state = {_strip_wrappers(key): value for key, value in load_file(str(weights)).items()}
    model = UniSync(merged_config(start_expert(config), config))
    model.load_state_dict(state)
    return model.eval(), config


def _strip_wrappers(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pretrain.export", description="Export a pretraining run's expert.")
    parser.add_argument("run_dir", help="OUTDIR of a pretrain.train run")
    parser.add_argument("--checkpoint", help="a checkpoint name (step_XXXXXX) instead of the best expert")
    parser.add_argument("--out", help="destination (default: the expert cache, see default_export_path)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.checkpoint:
        model, config = model_from_checkpoint(run_dir, args.checkpoint)
        training = {"checkpoint": args.checkpoint, "config": config.to_dict()}
        pairs = expert_pairs(start_expert(config), config)
    else:
        model = load_expert(run_dir / "best.safetensors")
        config = load_config(run_dir / "config.yaml")
        pairs = None  # the best expert's header records them
        training = dict(model.expert_header["training"])  # written by pretrain.train at validation time
        result = run_dir / "result.json"
        if result.exists():  # the run finished: add its test accuracy
            training["test_accuracy"] = json.loads(result.read_text(encoding="utf-8"))["test_accuracy"]
    print(f"exported expert: {export_expert(model, config, training, args.out, pairs)}")


if __name__ == "__main__":
    main()
