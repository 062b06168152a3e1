"""Start a pretraining run from an exported expert: add a head to a trained space, freeze what must not move.

A config with ``init.expert: EXPERT`` trains a model holding every head of EXPERT and of its own
``model.audio`` / ``model.visual`` (a head that EXPERT lacks starts from random weights), with
EXPERT's shared layers ε2 / ε4. ``init.freeze`` names the modules that stay exactly as EXPERT has
them; heads that none of the run's pairs uses are frozen as well (they receive no gradient, and
multi-process training needs every trainable parameter to take part in each step). Frozen
modules get ``requires_grad=False``, stay out of the optimiser and run in eval mode, so the
running statistics of a frozen ε2 / ε4 never move: training only a new head against a frozen
space leaves every other tensor of the expert bit-identical.

    init:
      expert: unisync_loss/experts/my_joint.safetensors
      freeze: [audio_unified, visual_unified, audio_heads]   # train visual_heads.parsing only
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from pretrain.config import TrainConfig
from unisync_loss.experts import load_expert, trained_pairs
from unisync_loss.model import UniSync, UniSyncConfig

SHARED_FIELDS = ("window", "hidden", "embed_dim", "pooled_len", "unified_layers", "embed_norm")
"""Architecture fields an expert and the config that extends it must agree on."""


def start_expert(config: TrainConfig) -> UniSync | None:
    """The expert ``init.expert`` names, loaded and checked against ``config.model``; ``None`` without one."""
    if config.init.expert is None:
        return None
    expert = load_expert(config.init.expert)
    differing = [f"{name}: expert {getattr(expert.config, name)!r}, config {getattr(config.model, name)!r}"
                 for name in SHARED_FIELDS if getattr(expert.config, name) != getattr(config.model, name)]
    for kind in ("audio", "visual"):
        for name, options in getattr(config.model, kind).items():
            known = getattr(expert.config, kind).get(name)
            if known is not None and known != options:
                differing.append(f"{kind} head {name}: expert {known!r}, config {options!r}")
    if differing:
        raise ValueError(f"init.expert {config.init.expert}: the config's model must match the expert it extends; "
                         f"differs in {'; '.join(differing)}")
    return expert


def merged_config(expert: UniSync | None, config: TrainConfig) -> UniSyncConfig:
    """``config.model`` plus every head of ``expert`` (the expert's heads first)."""
    if expert is None:
        return config.model
    merged = config.model.to_dict()
    for kind in ("audio", "visual"):
        merged[kind] = {**getattr(expert.config, kind), **getattr(config.model, kind)}
    return UniSyncConfig.from_dict(merged)


def load_start_weights(model: UniSync, expert: UniSync) -> None:
    """Copy every tensor of ``expert`` into ``model`` (which holds all its heads, plus maybe new ones)."""
    state = expert.state_dict()
    own = model.state_dict()
    missing = sorted(set(state) - set(own))
    if missing:
        raise ValueError(f"init.expert: the model lacks tensors {missing[:5]} of the expert")
    model.load_state_dict({**own, **state})


def expert_pairs(expert: UniSync | None, config: TrainConfig) -> list[tuple[str, str]]:
    """Pairs the exported expert serves: those ``expert`` was trained on, then this run's."""
    earlier = trained_pairs(expert.expert_header) if expert is not None else []
    return earlier + [pair for pair in config.pairs if pair not in earlier]


def frozen_modules(model: UniSync, config: TrainConfig) -> list[str]:
    """Names of the modules to freeze: ``init.freeze`` plus the heads no trained pair uses.

    ``ValueError`` naming the valid modules for a name that is not a module of ``model``.
    """
    used = {name for pair in config.pairs for name in pair}
    valid = ["audio_unified", "visual_unified", "audio_heads", "visual_heads",
             *(f"audio_heads.{name}" for name in model.audio_heads), *(f"visual_heads.{name}" for name in model.visual_heads)]
    unknown = [name for name in config.init.freeze if name not in valid]
    if unknown:
        raise ValueError(f"init.freeze: unknown module(s) {unknown}; valid: {valid}")
    unused = [f"{kind}_heads.{name}" for kind in ("audio", "visual") if f"{kind}_heads" not in config.init.freeze
              for name in getattr(model, f"{kind}_heads") if name not in used]
    return list(dict.fromkeys([*config.init.freeze, *unused]))


def freeze(model: nn.Module, names: Sequence[str]) -> None:
    """No gradient and eval mode for the submodules ``names``; call again after anything that sets ``model.train()``."""
    for name in names:
        model.get_submodule(name).requires_grad_(False).eval()
