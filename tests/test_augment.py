"""Framing augmentation of rgb / parsing windows (pretrain.augment) and its config switch."""
from __future__ import annotations

import pytest
import torch

from pretrain.augment import augment_framing, reframe
from pretrain.config import TrainConfig


def test_reframe_moves_and_scales_the_crop_labels_stay_labels() -> None:
    rgb = torch.zeros(2, 3, 5, 96, 96)
    rgb[..., 72, :] = 1.0  # a bright row at 3/4 of the height (pixel centre 72.5)
    moved = reframe(rgb, torch.ones(2), torch.tensor([[0.0, 0.25], [0.0, 0.0]]))
    assert moved.shape == rgb.shape and moved.dtype == rgb.dtype
    assert int(moved[0, 0, 0, :, 10].argmax()) == 48  # crop moved down by a quarter side: the row moves up 24 px
    torch.testing.assert_close(moved[1], rgb[1], atol=1e-5, rtol=0)  # identity
    assert torch.equal(moved[0, :, 0], moved[0, :, 4])  # every frame of a window framed alike
    zoomed = reframe(rgb, torch.tensor([2.0, 1.0]), torch.zeros(2, 2))
    assert int(zoomed[0, 0, 0, :, 10].argmax()) == 60  # twice the side: the row halves its distance to the centre
    labels = torch.randint(0, 19, (2, 5, 96, 96))
    relabelled = reframe(labels, torch.tensor([1.1, 0.9]), torch.tensor([[0.05, -0.05], [0.0, 0.1]]))
    assert relabelled.dtype == labels.dtype and set(relabelled.unique().tolist()) <= set(range(19))


def test_augment_framing_draws_per_window_and_is_off_at_zero() -> None:
    windows = torch.rand(4, 3, 5, 32, 32)
    assert augment_framing(windows, 0.0, 0.0, torch.Generator().manual_seed(0)) is windows
    first = augment_framing(windows, 0.15, 0.1, torch.Generator().manual_seed(0))
    again = augment_framing(windows, 0.15, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(first, again) and not torch.allclose(first, windows)
    assert not torch.allclose(first[0] - windows[0], first[1] - windows[1])  # each window its own crop
    with pytest.raises(ValueError, match="max_scale"):
        augment_framing(windows, 1.5, 0.1, torch.Generator())


def test_config_switch_defaults_off_and_refuses_non_image_representations() -> None:
    from pretrain.train import TrainingData

    config = TrainConfig.from_dict({"model": {"audio": {"mel": {}}, "visual": {"landmarks": {}}}})
    assert (config.augment.framing_scale, config.augment.framing_shift) == (0.0, 0.0)
    config.augment.framing_shift = 0.1
    with pytest.raises(ValueError, match="reframe face crops"):
        TrainingData(config)
