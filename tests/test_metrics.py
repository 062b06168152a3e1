"""Sync metrics on hand-built embeddings with known answers, and score_clip end to end."""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from unisync_loss.audio import log_mel
from unisync_loss.metrics import (
    SyncAccuracy,
    chance_accuracy,
    clip_sync,
    offset_probabilities,
    score_clip,
    sync_accuracy,
)
from unisync_loss.model import sync_prob
from unisync_loss.windows import cut_windows


def one_hot_embeddings(n_audio: int, n_visual: int, shift: int) -> tuple[Tensor, Tensor]:
    """Audio window k -> e_k; visual window j -> e_{j + shift}: they match only at offset ``shift``."""
    eye = torch.eye(n_audio + n_visual + abs(shift) + 1)
    return eye[:n_audio], eye[torch.arange(n_visual) + shift]


def test_offset_probabilities_known_shift() -> None:
    audio, visual = one_hot_embeddings(30, 20, 3)
    probs = offset_probabilities(audio, visual)
    assert probs.shape == (20, 31) and probs.dtype == torch.float32
    valid = ~probs.isnan()
    assert torch.equal(probs[:, 15 + 3], torch.ones(20))
    assert (probs[valid] > 0).sum() == 20  # one hit per visual window, every other valid pair is 0
    result = sync_accuracy(probs, true_offset=3)
    assert torch.equal(result.predicted, torch.full((20,), 3))
    assert result.accuracy == 1.0 and result.offset_error == 0.0
    assert sync_accuracy(probs, true_offset=2).accuracy == 1.0  # within ±1
    assert sync_accuracy(probs, true_offset=0).accuracy == 0.0
    assert sync_accuracy(probs, true_offset=0).offset_error == 3.0
    assert sync_accuracy(probs, true_offset=0, tolerance=3).accuracy == 1.0
    sync = clip_sync(probs)
    assert int(sync.offset) == 3 and float(sync.distance) == 0.0 and float(sync.confidence) == 1.0


def test_offset_probabilities_equal_brute_force_with_masking() -> None:
    g = torch.Generator().manual_seed(0)
    audio, visual = torch.randn(12, 8, generator=g), torch.randn(10, 8, generator=g)
    probs = offset_probabilities(audio, visual, max_offset=4)
    assert probs.shape == (10, 9)
    for j in range(10):
        for column, offset in enumerate(range(-4, 5)):
            k = j + offset
            if 0 <= k < 12:
                torch.testing.assert_close(probs[j, column], sync_prob(audio[k : k + 1], visual[j : j + 1])[0])
            else:
                assert math.isnan(probs[j, column])


def test_masked_candidates_are_never_predicted() -> None:
    # Audio windows are all-zero (p = 0 everywhere) except window 0, which matches every visual
    # window; for the late windows it lies beyond -max_offset, so they must pick an in-clip candidate.
    audio = torch.zeros(20, 4)
    audio[0] = torch.tensor([1.0, 0, 0, 0])
    audio[1:, 1] = torch.linspace(0.1, 1.0, 19)  # orthogonal to the visual direction: p = 0
    visual = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(20, 1)
    probs = offset_probabilities(audio, visual, max_offset=5)
    predicted = sync_accuracy(probs, tolerance=0).predicted
    audio_index = torch.arange(20) + predicted
    assert ((audio_index >= 0) & (audio_index < 20)).all()
    assert torch.equal(predicted[:6], -torch.arange(6))  # windows 0..5 reach audio window 0
    assert torch.equal(predicted[6:], torch.full((14,), -5))  # all-equal scores: first valid offset
    # Windows near the end have no positive offsets inside the clip: those columns are masked.
    assert probs[19, 6:].isnan().all() and not probs[19, :6].isnan().any()


def test_context_averages_neighbouring_windows() -> None:
    probs = torch.full((6, 5), 0.1)
    probs[:, 2] = torch.tensor([0.9, 0.0, 0.9, 0.9, 0.0, 0.9])  # offset 0 wins except in windows 1 and 4
    probs[[1, 4], 4] = 0.5  # where offset +2 wins
    assert sync_accuracy(probs, tolerance=0).accuracy == pytest.approx(4 / 6)
    smoothed = sync_accuracy(probs, tolerance=0, context=3)
    assert smoothed.predicted.shape == (4,)
    assert smoothed.accuracy == 1.0  # means over 3 windows: offset 0 gets 0.6, offset +2 at most 0.23
    masked = probs.clone()
    masked[0, 0] = float("nan")
    assert sync_accuracy(masked, context=2).predicted.shape == (5,)


def test_chance_counts_the_unmasked_candidates_of_each_window() -> None:
    unmasked = torch.rand(4, 31)
    assert float(chance_accuracy(unmasked)) == pytest.approx(3 / 31)
    assert float(chance_accuracy(unmasked, tolerance=0)) == pytest.approx(1 / 31)
    audio, visual = one_hot_embeddings(6, 6, 0)
    probs = offset_probabilities(audio, visual, max_offset=3)  # window j has candidates -j .. min(3, 5 - j)
    candidates = [4, 5, 6, 6, 5, 4]
    near_truth = [2, 3, 3, 3, 3, 2]  # offsets -1, 0, +1 that are inside the clip
    expected = sum(c / k for c, k in zip(near_truth, candidates)) / 6
    assert float(chance_accuracy(probs)) == pytest.approx(expected)
    assert float(chance_accuracy(probs)) > 3 / 7  # masking raises chance above (2 tol + 1) / (2M + 1)
    # true offset +2: windows 4 and 5 have no true audio and are not scored; within ±1 of +2 are +1, +2, +3
    near_two = [3, 3, 3, 2]
    assert float(chance_accuracy(probs, true_offset=2)) == pytest.approx(sum(c / k for c, k in zip(near_two, candidates[:4])) / 4)
    metric = SyncAccuracy()
    metric.update(probs)
    metric.update(unmasked[:, 12:19])
    assert float(metric.compute()["chance"]) == pytest.approx((expected + 3 / 7) / 2)


def test_confidence_is_larger_for_a_sharp_peak() -> None:
    sharp = torch.full((10, 31), 0.2)
    sharp[:, 15] = 1.0
    flat = torch.full((10, 31), 0.5)
    flat[:, 17] = 0.55
    sharp_sync, flat_sync = clip_sync(sharp), clip_sync(flat)
    assert int(sharp_sync.offset) == 0 and int(flat_sync.offset) == 2
    assert float(sharp_sync.distance) == pytest.approx(0.0) and float(sharp_sync.confidence) == pytest.approx(0.8)
    assert float(flat_sync.distance) == pytest.approx(0.45) and float(flat_sync.confidence) == pytest.approx(0.05)


def test_clip_sync_uses_masked_means_and_numpy_median() -> None:
    probs = torch.tensor([[float("nan"), 0.2, 0.9, 0.3], [0.6, 0.4, 0.7, float("nan")]])  # 4 columns: not 2M + 1
    with pytest.raises(ValueError, match=r"\(W >= 1, 2M \+ 1\), got \(2, 4\)"):
        clip_sync(probs)
    probs = torch.tensor([[float("nan"), 0.2, 0.9], [0.6, 0.4, 0.7], [0.6, float("nan"), float("nan")]])
    sync = clip_sync(probs)
    torch.testing.assert_close(sync.profile, torch.tensor([0.4, 0.7, 0.2]))
    assert int(sync.offset) == 1 and float(sync.distance) == pytest.approx(0.2)
    assert float(sync.confidence) == pytest.approx(0.4 - 0.2)
    odd = torch.tensor([[0.9, 0.5, 0.2, float("nan"), float("nan")]])  # d = 0.1, 0.5, 0.8 and two masked
    assert float(clip_sync(odd).confidence) == pytest.approx(0.5 - 0.1)
    even = torch.tensor([[0.9, 0.5, 0.2, 0.1, float("nan")]])  # d = 0.1, 0.5, 0.8, 0.9: median 0.65
    assert float(clip_sync(even).confidence) == pytest.approx(0.65 - 0.1)


def test_bad_arguments_raise() -> None:
    audio, visual = one_hot_embeddings(10, 10, 0)
    with pytest.raises(ValueError, match=r"audio \(Wa, E\) and visual \(Wv, E\).*\(10, 20\) and \(10, 21\)"):
        offset_probabilities(audio[:, 1:], visual)
    probs = offset_probabilities(audio, visual, max_offset=2)
    with pytest.raises(ValueError, match="true_offset 3 is outside the scored offsets -2..2"):
        sync_accuracy(probs, true_offset=3)
    with pytest.raises(ValueError, match="context <= windows"):
        sync_accuracy(probs, context=11)
    short = offset_probabilities(audio[:2], visual[:1], max_offset=2)  # audio window 0 + 2 does not exist
    with pytest.raises(ValueError, match=r"no window has its true audio candidate \(offset 2\)"):
        sync_accuracy(short, true_offset=2)


def test_module_equals_mean_of_functional_results() -> None:
    g = torch.Generator().manual_seed(1)
    clips = [(torch.rand(n, 31, generator=g), t) for n, t in ((12, 0), (30, 3), (7, -2))]
    metric = SyncAccuracy(tolerance=1)
    for probs, true_offset in clips:
        metric.update(probs, true_offset)
    results = [sync_accuracy(p, t) for p, t in clips]
    summary = metric.compute()
    assert summary["clips"] == 3 and summary["windows"] == 49
    assert float(summary["accuracy"]) == pytest.approx(sum(float(r.accuracy) for r in results) / 3)
    assert float(summary["offset_error"]) == pytest.approx(sum(float(r.offset_error) for r in results) / 3)
    metric.reset()
    with pytest.raises(ValueError, match="no clip was added"):
        metric.compute()
    metric(clips[0][0], 0)
    assert float(metric.compute()["accuracy"]) == pytest.approx(float(results[0].accuracy))


class MeanEmbedder(nn.Module):
    """Stand-in expert: a window's embedding is the time mean of its features (hubert / 3dmm)."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.window = window
        self.embedded: list[int] = []

    def embed_audio(self, x: Tensor, representation: str) -> Tensor:
        assert representation == "hubert" and x.shape[1:] == (2 * self.window, 8)
        self.embedded.append(x.shape[0])
        return self.scale * x.mean(dim=1)

    def embed_visual(self, x: Tensor, representation: str) -> Tensor:
        assert representation == "3dmm" and x.shape[1:] == (self.window, 8)
        self.embedded.append(x.shape[0])
        return self.scale * x.mean(dim=1)


@pytest.mark.parametrize("shift", [0, 4, -3])
def test_score_clip_finds_a_known_shift(shift: int) -> None:
    g = torch.Generator().manual_seed(2)
    per_frame = torch.rand(60, 8, generator=g)  # non-negative, so ReLU keeps everything
    hubert = per_frame[10:50].repeat_interleave(2, dim=0)  # 40 frames of audio
    coeffs = per_frame[10 + shift : 50 + shift]  # video frame j shows what audio frame j + shift says
    model = MeanEmbedder(window=5)
    result = score_clip(model, hubert, coeffs, "hubert", "3dmm", window=5, batch_size=7, true_offset=shift)
    rows = 36 - max(shift, 0)  # the last `shift` visual windows have their true audio after the clip
    assert result["windows"] == rows and result["probabilities"].shape == (rows, 31)
    assert sorted(model.embedded, reverse=True)[:2] == [7, 7] and sum(model.embedded) == 36 + rows  # once per window
    assert result["offset"] == shift and result["accuracy"] == 1.0 and result["offset_error"] == 0.0
    assert result["predicted"].shape == (36 - abs(shift),)  # windows whose true audio is outside the clip are skipped
    assert result["distance"] == pytest.approx(0.0, abs=1e-6) and result["confidence"] > 0


def test_score_clip_with_a_real_unisync(make_model: Callable) -> None:
    model = make_model(["mel"], ["rgb"])
    g = torch.Generator().manual_seed(3)
    n_frames = 12
    mel = log_mel(0.1 * torch.randn(640 * n_frames - 300, generator=g))  # audio a bit shorter than the video
    rgb = torch.randint(0, 256, (n_frames, 3, 40, 40), generator=g, dtype=torch.uint8)
    result = score_clip(model, mel, rgb, "mel", "rgb", batch_size=4, max_offset=3)
    probs = result["probabilities"]
    assert result["windows"] == 7 and probs.shape == (7, 7)  # audio holds 7 windows, video 8
    for j, offset in ((0, 0), (2, 3), (5, -2), (6, 0)):
        audio = cut_windows(mel, "mel", [j + offset], 5)
        visual = cut_windows(rgb, "rgb", [j], 5)
        with torch.no_grad():
            torch.testing.assert_close(probs[j, offset + 3], model(audio, visual, "mel", "rgb")[0], atol=1e-5, rtol=1e-5)
    assert probs[6, 4:].isnan().all() and probs[0, :3].isnan().all()
    assert 0.0 <= result["accuracy"] <= 1.0 and -3 <= result["offset"] <= 3
    with pytest.raises(ValueError, match="clip too short for T=5"):
        score_clip(model, mel[:, :10], rgb, "mel", "rgb")
