"""The procedural-corpus experts shipped in the package: one per pair, loadable by name, and they sync.

Each is scored on clips of its own corpus's held-out speakers (recorded in its header), so the
test fails if an expert file is swapped, damaged, or no longer matches the model code.
"""
import pytest
import torch

from pretrain.data import open_source
from pretrain.evaluate import sync_accuracy
from unisync_loss import UniSyncLoss, read_expert_header
from unisync_loss.experts import BUNDLED_DIR, bundled_expert_path
from unisync_loss.representations import AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS
from unisync_loss.windows import cut_windows

PAIRS = [(audio, visual) for audio in AUDIO_REPRESENTATIONS for visual in VISUAL_REPRESENTATIONS]
CHANCE = 3 / 31
"""Sync accuracy of a random expert: 3 of the 31 candidate offsets lie within ±1 frame."""


@pytest.mark.parametrize(("audio", "visual"), PAIRS, ids=[f"{a}_{v}" for a, v in PAIRS])
def test_bundled_expert_loads_by_name_and_syncs_held_out_speakers(audio, visual):
    header = read_expert_header(bundled_expert_path(audio, visual))
    assert header["training"]["test_accuracy"] > 3 * CHANCE
    assert_syncs_held_out_speakers(header, "procedural", audio, visual)


@pytest.mark.parametrize(("audio", "visual"), PAIRS, ids=[f"{a}_{v}" for a, v in PAIRS])
def test_bundled_unified_expert_serves_every_pair(audio, visual):
    header = read_expert_header(BUNDLED_DIR / "procedural_unified.safetensors")
    assert sorted(map(tuple, header["pairs"])) == sorted(PAIRS)
    assert header["training"]["held_out_per_pair"][f"{audio}_{visual}"]["sync_accuracy"] > 6 * CHANCE
    assert_syncs_held_out_speakers(header, "procedural_unified", audio, visual)


def assert_syncs_held_out_speakers(header, weights, audio, visual):
    """The expert ``weights`` names scores its corpus's test clips above chance and ranks in-sync windows first."""
    source = header["training"]["data"]["source"]
    assert source["kind"] == "procedural"
    sync_loss = UniSyncLoss(audio, visual, weights=weights, landmark_convention="y_up")  # corpus landmarks are y-up
    test = open_source(source, "test")
    assert sync_accuracy(sync_loss.expert, test, audio, visual, indices=range(2)) > 2 * CHANCE

    clip = test.load(0, (audio, visual))
    starts = list(range(0, 60, 6))
    windows = {name: cut_windows(clip[name], name, starts, sync_loss.expert.config.window) for name in (audio, visual)}
    in_sync = sync_loss(windows[audio], windows[visual])
    shifted = sync_loss(windows[audio].roll(2, dims=0), windows[visual])  # audio 12 frames away
    assert torch.isfinite(in_sync) and in_sync < shifted


def test_readme_example_runs():
    sync_loss = UniSyncLoss("hubert", "3dmm", weights="procedural")
    hubert = torch.randn(8, 10, 1024)
    coeffs = torch.randn(8, 5, 64, requires_grad=True)
    loss = sync_loss(hubert, coeffs)
    loss.backward()
    assert loss.ndim == 0 and coeffs.grad.shape == (8, 5, 64) and coeffs.grad.abs().sum() > 0
    assert all(p.grad is None for p in sync_loss.expert.parameters())
