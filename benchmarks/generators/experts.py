"""The three sync experts of the generator benchmark, each its own ``pretrain.train`` run.

=============  ===============  =====================================================================
role           pair             recipe
=============  ===============  =====================================================================
``syncnet``    hubert x 3dmm    SyncNet-style: BCE only, negatives from the same clip only (variant b's loss)
``unisync``    hubert x 3dmm    full UniSync recipe, same architecture, steps and seed (variant c's loss)
``evaluator``  mel x 3dmm       full recipe, another seed and width, another audio representation;
                                only ever scores generators, never a loss
=============  ===============  =====================================================================

The evaluator listens to the mel, not to the HuBERT stand-in the generator and the loss experts
see, so a generator cannot please it by copying what the loss expert keys on in the features.
Every run trains on the train speakers of the same corpus, so validation and test speakers
stay unseen by all three.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_pretrain import RECIPES
from pretrain.config import load_config
from pretrain.train import train

REPO = Path(__file__).resolve().parents[2]
EVALUATOR_SEED_OFFSET = 1000
"""The evaluator trains with seed ``EVALUATOR_SEED_OFFSET + seed``: never the seed of a loss expert."""


@dataclass(frozen=True)
class ExpertRole:
    """How one role's expert is trained: base config and recipe overrides."""

    config: str
    recipe: tuple[str, ...]


ROLES = {
    "syncnet": ExpertRole("pretrain/configs/hubert_3dmm.yaml", tuple(RECIPES["syncnet"])),
    "unisync": ExpertRole("pretrain/configs/hubert_3dmm.yaml", tuple(RECIPES["unisync"])),
    "evaluator": ExpertRole("pretrain/configs/mel_3dmm.yaml", tuple(RECIPES["unisync"])),
}
LOSS_ROLES = ("syncnet", "unisync")


def expert_overrides(role: str, corpus: Path, run_dir: Path, steps: int, hidden: int, seed: int) -> list[str]:
    """``pretrain.train`` overrides of one expert run (recipe, corpus on disk, size, seed, output folder)."""
    if role not in ROLES:
        raise ValueError(f"expert role must be one of {sorted(ROLES)}, got {role!r}")
    check_every = max(1, steps // 3)
    return [
        *ROLES[role].recipe,
        "data.kind=folder", f"data.root={corpus}", "data.cache=true",
        f"model.hidden={hidden}", f"model.embed_dim={hidden}", "optim.batch_size=64", f"optim.steps={steps}",
        f"optim.warmup_steps={min(100, steps // 10)}", f"eval.every={check_every}", "eval.clips=6",
        f"checkpoint.every={check_every}", "checkpoint.keep=1", "log_every=50", "threads=1",
        f"seed={seed}", f"output_dir={run_dir}",
    ]


def train_expert(role: str, corpus: Path, out: Path, steps: int, hidden: int, seed: int) -> tuple[Path, dict]:
    """Train (or reuse, when ``OUT/experts/<role>_seed<seed>.safetensors`` exists) one expert.

    Returns the expert file and the run's ``result.json`` (held-out test accuracy, best step...).
    An interrupted run resumes from its last checkpoint.
    """
    name = f"{role}_seed{seed}"
    run_dir, path = out / "expert_runs" / name, out / "experts" / f"{name}.safetensors"
    result_file = run_dir / "result.json"
    if path.exists() and result_file.exists():
        return path, json.loads(result_file.read_text(encoding="utf-8"))
    config = load_config(REPO / ROLES[role].config, expert_overrides(role, corpus, run_dir, steps, hidden, seed))
    train(config, resume=True, export_path=str(path))
    return path, json.loads(result_file.read_text(encoding="utf-8"))
