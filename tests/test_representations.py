"""Representation specs: options, the bad-input table, value-check policy and differentiable preprocessing."""
from __future__ import annotations

import math

import pytest
import torch

from unisync_loss.model import UniSync
from unisync_loss.representations import (
    AUDIO_REPRESENTATIONS,
    IBUG_MOUTH,
    REPRESENTATIONS,
    VISUAL_REPRESENTATIONS,
    LandmarkPreprocess,
    canonical_rgb,
    modality,
    spec,
)

EXPECTED = {
    "mel": "(B, 1, 80, S=16)",
    "hubert": "(B, 2T=10, D=24)",
    "rgb": "(B, 3, T=5, H, W)",
    "parsing": "(B, K=19, T=5, H, W) float probabilities or (B, T=5, H, W) integer labels",
    "landmarks": "(B, T=5, N=68, 3)",
    "3dmm": "(B, T=5, D=16)",
}
"""Expected-shape text for the tiny options of conftest (T = 5)."""


def _with(value: float, shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.zeros(shape)
    x.view(-1)[1] = value
    return x


def _ramp(low: float, high: float, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.linspace(low, high, math.prod(shape)).reshape(shape)


def _landmarks_with_degenerate_window(index: int) -> torch.Tensor:
    """A batch of 3 plausible pixel-unit landmark windows, window ``index`` collapsed onto one point."""
    points = 200.0 + 30.0 * torch.randn(3, 5, 68, 3, generator=torch.Generator().manual_seed(0))
    points[index] = torch.tensor([310.0, 240.0, 5.0])
    return points


BAD_INPUTS = [
    ("mel", torch.zeros(2, 80, 16), "rank must be 4"),
    ("mel", torch.zeros(2, 1, 80, 15), "S = mel_steps(T) (dim 3) must be 16"),
    ("mel", torch.zeros(2, 1, 64, 16), "mel bins (dim 2) must be 80"),
    ("mel", torch.zeros(2, 2, 80, 16), "channels (dim 1) must be 1"),
    ("mel", torch.zeros(2, 1, 80, 16, dtype=torch.int16), "dtype must be floating point"),
    ("mel", _with(math.nan, (2, 1, 80, 16)), "NaN"),
    ("hubert", torch.zeros(2, 9, 24), "2T (dim 1) must be 10"),
    ("hubert", torch.zeros(2, 10, 25), "D (dim 2) must be 24"),
    ("hubert", _with(math.nan, (2, 10, 24)), "NaN"),
    ("hubert", _with(math.inf, (2, 10, 24)), "Inf"),
    ("hubert", torch.zeros(0, 10, 24), "the batch is empty"),
    ("hubert", torch.zeros(2, 10, 24, dtype=torch.long), "dtype must be floating point"),
    ("rgb", torch.zeros(2, 4, 5, 40, 40), "channels (dim 1) must be 3"),
    ("rgb", torch.zeros(2, 3, 4, 40, 40), "T (dim 2) must be 5"),
    ("rgb", torch.zeros(2, 3, 40, 40), "rank must be 5"),
    ("rgb", torch.zeros(2, 3, 5, 40, 40, dtype=torch.uint8), "dtype must be floating point"),
    ("rgb", torch.zeros(2, 3, 5, 1, 40), "at least 2 x 1 pixels"),
    ("rgb", _with(-math.inf, (2, 3, 5, 40, 40)), "Inf"),
    ("parsing", torch.zeros(2, 18, 5, 40, 40), "K (classes) (dim 1) must be 19"),
    ("parsing", torch.zeros(2, 5, 40, 40), "a rank-4 input holds integer labels"),
    ("parsing", torch.zeros(2, 19, 5, 40, 40, dtype=torch.long), "a rank-5 input holds float class probabilities"),
    ("parsing", torch.full((2, 5, 40, 40), 19, dtype=torch.uint8), "labels must lie in [0, 19)"),
    ("parsing", torch.zeros(2, 6, 40, 40, dtype=torch.long), "T (dim 1) must be 5"),
    ("parsing", torch.zeros(5, 40, 40, dtype=torch.long), "rank must be 5 (probabilities) or 4 (labels)"),
    ("parsing", torch.zeros(0, 5, 40, 40, dtype=torch.long), "the batch is empty"),
    ("landmarks", torch.zeros(2, 5, 67, 3), "N (points) (dim 2) must be 68"),
    ("landmarks", torch.zeros(2, 5, 68, 2), "coords (dim 3) must be 3"),
    ("landmarks", torch.zeros(2, 16, 68, 3), "T (dim 1) must be 5"),
    ("landmarks", torch.zeros(2, 5, 68, 3, dtype=torch.int32), "dtype must be floating point"),
    ("landmarks", _with(math.nan, (2, 5, 68, 3)), "NaN"),
    ("3dmm", torch.zeros(2, 5, 15), "D (dim 2) must be 16"),
    ("3dmm", torch.zeros(2, 16), "rank must be 3"),
    ("3dmm", _with(math.inf, (2, 5, 16)), "Inf"),
    ("3dmm", torch.zeros(0, 5, 16), "the batch is empty"),
    # value checks (CPU): mis-scaled or degenerate input, each naming what was expected and what came
    ("mel", _ramp(-100.0, 0.0, (2, 1, 80, 16)),
     "values must lie in Wav2Lip's symmetric log-mel scale [-4, 4], got values in [-100, 0]: a mel in dB"),
    ("mel", torch.full((2, 1, 80, 16), 1000.0), "must lie in Wav2Lip's symmetric log-mel scale [-4, 4], got values in [1000, 1000]"),
    ("mel", torch.full((2, 1, 80, 16), -11.5), "must lie in Wav2Lip's symmetric log-mel scale [-4, 4], got values in [-11.5, -11.5]"),
    ("rgb", _ramp(0.0, 255.0, (2, 3, 5, 40, 40)),
     "must lie in [0, 1], got values in [0, 255]: set UniSyncLoss(value_range=(0, 255)) for 8-bit frames"),
    ("rgb", _ramp(-1.0, 1.0, (2, 3, 5, 40, 40)), "must lie in [0, 1], got values in [-1, 1]: set UniSyncLoss(value_range=(0, 255))"),
    ("rgb", torch.full((2, 3, 5, 40, 40), 1.5), "must lie in [0, 1], got values in [1.5, 1.5]"),
    ("rgb", torch.zeros(2, 3, 5, 48, 96),
     "frames must be full face crops (H about W; the expert crops the lower half itself), got H x W = 48 x 96"),
    ("rgb", torch.zeros(2, 3, 5, 16, 32), "got H x W = 16 x 32, which looks like a lower-half (mouth) crop"),
    ("parsing", _ramp(-5.0, 5.0, (2, 19, 5, 40, 40)),
     "class probabilities must lie in [0, 1], got values in [-5, 5]: logits? apply softmax(dim=1) first"),
    ("parsing", torch.full((2, 19, 5, 40, 40), 0.5), "class probabilities summed over K must lie in [0.9, 1.1], got values in [9.5, 9.5]"),
    ("parsing", torch.zeros(2, 19, 5, 40, 40), "class probabilities summed over K must lie in [0.9, 1.1], got values in [0, 0]"),
    ("parsing", torch.zeros(2, 5, 48, 96, dtype=torch.long), "got H x W = 48 x 96, which looks like a lower-half (mouth) crop"),
    ("landmarks", torch.zeros(2, 5, 68, 3),
     "window 0 of the batch is degenerate (all points at one place, e.g. a failed detector): RMS spread 0 around the centroid"),
    ("landmarks", torch.tensor([310.0, 240.0, 5.0]).expand(2, 5, 68, 3).contiguous(),
     "window 0 of the batch is degenerate (all points at one place, e.g. a failed detector): RMS spread 0 around the centroid "
     "with coordinates up to 310; expected a spread above 0.0001 x max(1, |coordinate|)"),
    ("landmarks", _landmarks_with_degenerate_window(1), "window 1 of the batch is degenerate"),
    ("landmarks", _landmarks_with_degenerate_window(2).half(), "window 2 of the batch is degenerate"),
    ("3dmm", torch.full((2, 5, 16), 1e19),
     "values must lie within 1000 standard deviations of the expert's training statistics, got 1e+19 standard deviations at feature 0"),
    ("3dmm", _with(1e5, (2, 5, 16)), "got 1e+05 standard deviations at feature 1 (mean 0, std 1; values in [0, 1e+05])"),
    ("hubert", torch.full((2, 10, 24), -1e20), "within 1000 standard deviations of the expert's training statistics, got 1e+20"),
    ("hubert", _with(-3e3, (2, 10, 24)), "got 3e+03 standard deviations at feature 1"),
]


@pytest.fixture
def all_heads(make_model) -> UniSync:
    return make_model(AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS)


def test_bad_input_table_has_at_least_50_cases() -> None:
    assert len(BAD_INPUTS) >= 50
    assert {name for name, _, _ in BAD_INPUTS} == set(REPRESENTATIONS)


@pytest.mark.parametrize(("name", "bad", "problem"), BAD_INPUTS, ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_raises_value_error_naming_representation_and_shapes(all_heads, name, bad, problem) -> None:
    with pytest.raises(ValueError) as caught:
        all_heads.validate(bad, name)
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert EXPECTED[name] in message
    assert f"got {tuple(bad.shape)}" in message
    assert problem in message


def test_valid_inputs_pass(all_heads, make_input) -> None:
    for name in REPRESENTATIONS:
        all_heads.validate(make_input(name, all_heads.config), name)
    all_heads.validate(torch.randint(0, 19, (2, 5, 40, 40), dtype=torch.uint8), "parsing")


def test_non_tensor_is_a_type_error(all_heads) -> None:
    with pytest.raises(TypeError, match=r"3dmm: expected a tensor \(B, T=5, D=16\), got list"):
        all_heads.validate([[0.0] * 16] * 5, "3dmm")


def test_value_checks_follow_check_finite_policy(all_heads) -> None:
    nan = _with(math.nan, (2, 5, 16))
    all_heads.validate(nan, "3dmm", check_finite=False)
    with pytest.raises(ValueError, match="NaN"):
        all_heads.validate(nan, "3dmm", check_finite=None)
    with pytest.raises(ValueError, match="NaN"):
        all_heads.validate(nan, "3dmm", check_finite=True)
    with pytest.raises(ValueError, match="D \\(dim 2\\) must be 16"):
        all_heads.validate(torch.zeros(2, 5, 3), "3dmm", check_finite=False)


def test_modality_and_unknown_names() -> None:
    assert [modality(n) for n in REPRESENTATIONS] == ["audio"] * 2 + ["visual"] * 4
    with pytest.raises(ValueError, match="unknown representation 'flow'; known: mel, hubert, rgb"):
        modality("flow")


def test_options_fill_defaults_and_reject_unknown_or_bad_values() -> None:
    assert spec("hubert").options(None) == {"dim": 1024}
    assert spec("landmarks").options({"points": 478})["eye_corners"] == [36, 45]
    with pytest.raises(ValueError, match="hubert: unknown option\\(s\\) dims; valid options: dim"):
        spec("hubert").options({"dims": 768})
    with pytest.raises(ValueError, match="option 'mouth' must be a non-empty list of point indices in \\[0, 20\\)"):
        spec("landmarks").options({"points": 20, "mouth": list(IBUG_MOUTH)})
    with pytest.raises(ValueError, match="option 'coords' must be 2 or 3"):
        spec("landmarks").options({"coords": 4})
    with pytest.raises(ValueError, match="mel: unknown option"):
        spec("mel").options({"n_mels": 64})


def test_rgb_preprocess_crops_lower_half_and_resizes_differentiably() -> None:
    preprocess = spec("rgb").preprocessor({"size": 32}, 5)
    frames = torch.rand(2, 3, 5, 64, 64, requires_grad=True)
    out = preprocess(frames)
    assert out.shape == (2, 3, 5, 16, 32)
    out.sum().backward()
    assert frames.grad[..., :32, :].abs().sum() == 0
    assert frames.grad[..., 32:, :].abs().sum() > 0
    exact = torch.rand(1, 3, 5, 32, 32)
    assert torch.equal(preprocess(exact), (exact[..., 16:, :] - 0.5) / 0.5)


def test_canonical_rgb_channel_order_and_value_range() -> None:
    rgb = torch.rand(2, 3, 5, 8, 8)
    assert torch.equal(canonical_rgb(rgb.flip(1), "bgr", (0.0, 1.0)), rgb)
    torch.testing.assert_close(canonical_rgb(rgb * 255.0, "rgb", (0.0, 255.0)), rgb)
    torch.testing.assert_close(canonical_rgb(rgb * 2.0 - 1.0, "rgb", (-1.0, 1.0)), rgb)


@pytest.mark.parametrize("size", [32, 40])  # resized, and already at the expert's size (no resize)
def test_parsing_labels_equal_one_hot_probabilities(size: int) -> None:
    preprocess = spec("parsing").preprocessor({"classes": 19, "size": size}, 5)
    labels = torch.randint(0, 19, (2, 5, 40, 40))
    labels[0, 0, -1, 0] = 19  # out of range: no class (value checks refuse it before this point)
    one_hot = (labels.unsqueeze(1) == torch.arange(19).view(1, -1, 1, 1, 1)).float()
    assert torch.equal(preprocess(labels), preprocess(one_hot))
    assert preprocess(labels).shape == (2, 19, 5, size // 2, size)


def test_landmarks_normalisation_is_translation_and_scale_invariant() -> None:
    preprocess = spec("landmarks").preprocessor(spec("landmarks").options({"mouth": list(IBUG_MOUTH)}), 5)
    points = torch.randn(2, 5, 68, 3)
    moved = 37.0 * points + torch.tensor([120.0, -40.0, 7.0])
    torch.testing.assert_close(preprocess(moved), preprocess(points), atol=1e-5, rtol=0)
    assert preprocess(points).shape == (2, 20 * 3, 5)


def test_landmarks_rotation_option_removes_in_plane_rotation() -> None:
    preprocess = LandmarkPreprocess(mouth=None, rotation=True, eye_corners=(36, 45))
    points = torch.randn(2, 5, 68, 2)
    angle = torch.tensor(0.7)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    rotated = points @ rotation.T
    torch.testing.assert_close(preprocess(rotated), preprocess(points), atol=1e-5, rtol=0)
    aligned = preprocess(points).reshape(2, 68, 2, 5)
    torch.testing.assert_close(aligned[:, 45, 1], aligned[:, 36, 1], atol=1e-5, rtol=0)


def test_standardisation_statistics_shape_is_checked(all_heads) -> None:
    with pytest.raises(ValueError, match=r"mean must have shape \(24,\), got \(23,\)"):
        all_heads.set_statistics("hubert", torch.zeros(23), torch.ones(23))
    with pytest.raises(ValueError, match="std must be > 0"):
        all_heads.set_statistics("3dmm", torch.zeros(16), torch.zeros(16))
    with pytest.raises(ValueError, match="landmarks: has no standardisation statistics"):
        all_heads.set_statistics("landmarks", torch.zeros(3), torch.ones(3))
