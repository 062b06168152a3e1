"""Landmark coordinate conventions (y-down detectors vs y-up corpus), 2D/3D fitting and decoder-layout frames."""
from __future__ import annotations

import pytest
import torch

from unisync_loss import UniSyncLoss, load_expert, score_clip
from unisync_loss.experts import bundled_expert_path
from unisync_loss.representations import fit_landmarks, rgb_clip, spec


def test_expert_without_convention_in_its_header_is_y_up_corpus_convention() -> None:
    bundled = load_expert(bundled_expert_path("mel", "landmarks"))
    assert "convention" not in bundled.expert_header["config"]["visual"]["landmarks"]
    assert bundled.config.visual["landmarks"]["convention"] == "y_up"
    with pytest.raises(ValueError, match="option 'convention' must be one of"):
        spec("landmarks").options({"convention": "down"})


def test_fit_landmarks_turns_y_and_z_between_conventions_and_fits_depth() -> None:
    up3d = spec("landmarks").options({"coords": 3})
    points = torch.arange(2 * 68 * 3, dtype=torch.float32).reshape(2, 68, 3)
    turned = fit_landmarks(points, up3d, convention="y_down")
    torch.testing.assert_close(turned, points * torch.tensor([1.0, -1.0, -1.0]))
    assert fit_landmarks(points, up3d, convention="y_up") is points
    down2d = spec("landmarks").options({"coords": 2, "convention": "y_down"})
    torch.testing.assert_close(fit_landmarks(points, down2d, convention="y_down"), points[..., :2])  # z dropped
    flat = points[..., :2]
    with pytest.raises(ValueError, match=r"trained on 3D points \(\.\.\., 68, 3\), got 2D points \(2, 68, 2\) float32; pass pad_depth=True"):
        fit_landmarks(flat, up3d)
    padded = fit_landmarks(flat, up3d, convention="y_up", pad_depth=True)
    assert padded.shape == (2, 68, 3) and padded[..., 2].abs().sum() == 0
    with pytest.raises(ValueError, match=r"takes N=68 points per frame, got 5 in \(2, 5, 2\)"):
        fit_landmarks(flat[:, :5], up3d)


def test_window_shape_error_explains_the_2d_3d_decision(make_model) -> None:
    model = make_model(["mel"], ["landmarks"])
    with pytest.raises(ValueError, match=r"coords \(dim 3\) must be 3, got 2 \(2D landmarks for an expert trained on 3D ones: fit_landmarks"):
        model.embed_visual(torch.zeros(2, 5, 68, 2), "landmarks")


def test_loss_turns_detector_landmarks_to_the_expert_convention(make_model, make_input) -> None:
    model = make_model(["mel"], ["landmarks"])
    audio, points = make_input("mel", model.config), make_input("landmarks", model.config)
    y_down = UniSyncLoss("mel", "landmarks", weights=model)  # default: detectors' convention
    y_up = UniSyncLoss("mel", "landmarks", weights=model, landmark_convention="y_up")
    turned = points * torch.tensor([1.0, -1.0, -1.0])
    torch.testing.assert_close(y_down.sync_prob(audio, points), model(audio, turned, "mel", "landmarks"))
    torch.testing.assert_close(y_up.sync_prob(audio, points), model(audio, points, "mel", "landmarks"))
    with pytest.raises(ValueError, match="landmark_convention must be one of"):
        UniSyncLoss("mel", "landmarks", weights=model, landmark_convention="down")


def test_bundled_expert_reads_detector_style_pixels_only_in_the_right_convention(corpus_clip) -> None:
    """Corpus 2D pixels (y down, as a detector gives them): turned, the bundled expert finds offset 0."""
    expert = load_expert(bundled_expert_path("mel", "landmarks"))
    options = expert.config.visual["landmarks"]
    mel = corpus_clip.representation("mel")
    right = fit_landmarks(corpus_clip.landmarks2d, options, convention="y_down", pad_depth=True)
    wrong = fit_landmarks(corpus_clip.landmarks2d, options, convention="y_up", pad_depth=True)
    assert score_clip(expert, mel, right, "mel", "landmarks")["offset"] == 0
    assert score_clip(expert, mel, wrong, "mel", "landmarks")["accuracy"] < score_clip(expert, mel, right, "mel", "landmarks")["accuracy"]


def test_rgb_clip_accepts_decoder_layout() -> None:
    decoded = torch.randint(0, 256, (4, 10, 12, 3), dtype=torch.uint8)
    canonical = rgb_clip(decoded)
    assert canonical.shape == (4, 3, 10, 12) and torch.equal(canonical[:, 1], decoded[..., 1])
    assert rgb_clip(canonical) is canonical
    with pytest.raises(ValueError, match=r"expected frames \(n, 3, H, W\) or \(n, H, W, 3\), got \(4, 10, 12\)"):
        rgb_clip(decoded[..., 0])


@pytest.fixture(scope="module")
def corpus_clip():
    """One 3 s clip of a speaker the bundled experts never trained on (index 31 of their 32-speaker corpus is a test speaker)."""
    from pretrain.synth.clip import generate_clip
    from pretrain.synth.speakers import make_speaker

    return generate_clip(make_speaker(0, 31, "default"), seconds=3.0, preset="default", seed=0)
