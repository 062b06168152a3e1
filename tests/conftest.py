"""Shared fixtures: tiny randomly initialised UniSync models and expert files for any representation pair."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pytest
import torch
from torch import Tensor

from unisync_loss.audio import mel_steps
from unisync_loss.experts import save_expert
from unisync_loss.model import UniSync, UniSyncConfig

TINY_OPTIONS = {
    "mel": {},
    "hubert": {"dim": 24},
    "rgb": {"size": 32},
    "parsing": {"classes": 19, "size": 32},
    "landmarks": {"points": 68, "coords": 3},
    "3dmm": {"dim": 16},
}
"""Small per-representation options used by every tiny model (rgb / parsing at a 32-pixel face size)."""
FRAME_SIZE = 40
"""Height and width of the rgb / parsing test frames (larger than 32, so the resize path runs)."""


def tiny_config(audio: Sequence[str], visual: Sequence[str], window: int = 5, **options: dict) -> UniSyncConfig:
    """A tiny config with heads for ``audio`` and ``visual``; ``options`` override TINY_OPTIONS per name."""
    def heads(names: Sequence[str]) -> dict[str, dict]:
        return {name: dict(options.get(name, TINY_OPTIONS[name])) for name in names}

    return UniSyncConfig(heads(audio), heads(visual), window=window, hidden=16, embed_dim=16, pooled_len=3, unified_layers=1)


def sample_input(name: str, config: UniSyncConfig, batch: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """A valid random input for representation ``name`` of ``config`` (``batch`` windows)."""
    window = config.window
    options = {**config.audio, **config.visual}[name]
    if name == "mel":
        return torch.randn(batch, 1, 80, mel_steps(window), generator=generator)
    if name == "hubert":
        return torch.randn(batch, 2 * window, options["dim"], generator=generator)
    if name == "rgb":
        return torch.rand(batch, 3, window, FRAME_SIZE, FRAME_SIZE, generator=generator)
    if name == "parsing":
        logits = torch.randn(batch, options["classes"], window, FRAME_SIZE, FRAME_SIZE, generator=generator)
        return logits.softmax(dim=1)
    if name == "landmarks":
        return 50.0 + 10.0 * torch.randn(batch, window, options["points"], options["coords"], generator=generator)
    return torch.randn(batch, window, options["dim"], generator=generator)


@pytest.fixture
def make_input() -> Callable[..., Tensor]:
    """``make_input(name, config, batch=2, generator=None)`` -> a valid random input (see ``sample_input``)."""
    return sample_input


@pytest.fixture
def make_model() -> Callable[..., UniSync]:
    """``make_model(audio_names, visual_names, window=5, seed=0, **options)`` -> tiny UniSync in eval mode."""
    def build(audio: Sequence[str], visual: Sequence[str], window: int = 5, seed: int = 0, **options: dict) -> UniSync:
        torch.manual_seed(seed)
        return UniSync(tiny_config(audio, visual, window, **options)).eval()

    return build


@pytest.fixture
def unisync_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$UNISYNC_HOME`` for the test."""
    home = tmp_path / "unisync_home"
    monkeypatch.setenv("UNISYNC_HOME", str(home))
    return home


@pytest.fixture
def make_expert(tmp_path: Path, make_model: Callable[..., UniSync]) -> Callable[..., Path]:
    """``make_expert(audio, visual, window=5, **options)`` -> path of a saved tiny expert for the pair."""
    def build(audio: str, visual: str, window: int = 5, **options: dict) -> Path:
        model = make_model([audio], [visual], window, **options)
        return save_expert(model, tmp_path / f"{audio}_{visual}_T{window}.safetensors", training={"kind": "random init"})

    return build
