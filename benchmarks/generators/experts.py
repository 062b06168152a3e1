"""The three sync experts of each generator in the benchmark, each its own ``pretrain.train`` run.

For a generator that hears audio representation ``A`` and draws visual representation ``V``
(motion generator: hubert -> 3dmm; image generator: mel -> rgb):

=============  ===============  =====================================================================
role           pair             recipe
=============  ===============  =====================================================================
``syncnet``    A x V            SyncNet-style: BCE only, negatives from the same clip only (variant b's loss)
``unisync``    A x V            full UniSync recipe, same architecture, steps and seed (variant c's loss)
``evaluator``  A' x V           full recipe, another seed and width and the *other* audio representation
                                A' (mel <-> hubert); only ever scores generators, never a loss
=============  ===============  =====================================================================

The evaluator does not hear the features the generator and its loss expert hear, so a generator
cannot please it by copying what the loss expert keys on in them. Every run trains on the train
speakers of the same corpus, so validation and test speakers stay unseen by all three.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from benchmarks.bench_pretrain import RECIPES
from pretrain.config import load_config
from pretrain.train import train

REPO = Path(__file__).resolve().parents[2]
EVALUATOR_SEED_OFFSET = 1000
"""The evaluator trains with seed ``EVALUATOR_SEED_OFFSET + seed``: never the seed of a loss expert."""


ROLES = {"syncnet": RECIPES["syncnet"], "unisync": RECIPES["unisync"], "evaluator": RECIPES["unisync"]}
"""Recipe overrides of each role (``benchmarks/bench_pretrain.py``)."""
LOSS_ROLES = ("syncnet", "unisync")
OTHER_AUDIO = {"mel": "hubert", "hubert": "mel"}


def expert_pair(role: str, audio: str, visual: str) -> tuple[str, str]:
    """The (audio, visual) pair of ``role``'s expert for a generator hearing ``audio`` and drawing ``visual``."""
    if role not in ROLES:
        raise ValueError(f"expert role must be one of {sorted(ROLES)}, got {role!r}")
    return (OTHER_AUDIO[audio] if role == "evaluator" else audio), visual


def expert_overrides(role: str, corpus: Path, run_dir: Path, steps: int, hidden: int, seed: int,
                     options: Sequence[str] = ()) -> list[str]:
    """``pretrain.train`` overrides of one expert run (recipe, corpus on disk, size, seed, output folder,
    then ``options``, e.g. ``model.visual.rgb.size=48``)."""
    check_every = max(1, steps // 3)
    return [
        *ROLES[role],
        "data.kind=folder", f"data.root={corpus}", "data.cache=true",
        f"model.hidden={hidden}", f"model.embed_dim={hidden}", "optim.batch_size=64", f"optim.steps={steps}",
        f"optim.warmup_steps={min(100, steps // 10)}", f"eval.every={check_every}", "eval.clips=6",
        f"checkpoint.every={check_every}", "checkpoint.keep=1", "log_every=50", "threads=1",
        f"seed={seed}", f"output_dir={run_dir}", *options,
    ]


def train_expert(role: str, audio: str, visual: str, corpus: Path, out: Path, steps: int, hidden: int,
                 seed: int, options: Sequence[str] = ()) -> tuple[Path, dict]:
    """Train (or reuse) ``role``'s expert for a generator hearing ``audio`` and drawing ``visual``.

    Written to ``OUT/experts/<pair>_<role>_seed<seed>.safetensors``; reused when it and its run's
    ``result.json`` exist, resumed from the last checkpoint when the run was interrupted.
    Returns the expert file and ``result.json`` (held-out test accuracy, best step...).
    """
    pair = expert_pair(role, audio, visual)
    name = f"{pair[0]}_{pair[1]}_{role}_seed{seed}"
    run_dir, path = out / "expert_runs" / name, out / "experts" / f"{name}.safetensors"
    result_file = run_dir / "result.json"
    if path.exists() and result_file.exists():
        return path, json.loads(result_file.read_text(encoding="utf-8"))
    config = load_config(REPO / "pretrain" / "configs" / f"{pair[0]}_{pair[1]}.yaml", expert_overrides(role, corpus, run_dir, steps, hidden, seed, options))
    train(config, resume=True, export_path=str(path))
    return path, json.loads(result_file.read_text(encoding="utf-8"))
