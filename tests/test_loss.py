"""UniSyncLoss: gradients for all 8 pairs, frozen expert, autocast, reductions, input conventions, CUDA path."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from unisync_loss.experts import ExpertFileError, default_expert_path, save_expert
from unisync_loss.loss import UniSyncLoss
from unisync_loss.representations import AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS

PAIRS = [(audio, visual) for audio in AUDIO_REPRESENTATIONS for visual in VISUAL_REPRESENTATIONS]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")


@pytest.fixture
def hubert_3dmm(make_model) -> UniSyncLoss:
    return UniSyncLoss("hubert", "3dmm", weights=make_model(["hubert"], ["3dmm"]), reduction="none")


@pytest.mark.parametrize(("audio", "visual"), PAIRS)
def test_gradients_reach_inputs_but_not_the_expert(make_expert, make_input, audio, visual) -> None:
    loss_fn = UniSyncLoss(audio, visual, weights=make_expert(audio, visual))
    config = loss_fn.expert.config
    audio_x = make_input(audio, config, batch=3).requires_grad_(True)
    visual_x = make_input(visual, config, batch=3).requires_grad_(True)
    loss = loss_fn(audio_x, visual_x)
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss)
    for x in (audio_x, visual_x):
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.expert.parameters())


def test_audio_without_requires_grad_still_gives_visual_gradient(make_expert, make_input) -> None:
    loss_fn = UniSyncLoss("mel", "landmarks", weights=make_expert("mel", "landmarks"))
    audio = make_input("mel", loss_fn.expert.config)
    visual = make_input("landmarks", loss_fn.expert.config).requires_grad_(True)
    loss_fn(audio, visual).backward()
    assert audio.grad is None and visual.grad.abs().sum() > 0


def test_loss_matches_model_and_reductions(hubert_3dmm, make_input) -> None:
    config = hubert_3dmm.expert.config
    audio, visual = make_input("hubert", config, batch=4), make_input("3dmm", config, batch=4)
    p_sync = hubert_3dmm.expert(audio, visual, "hubert", "3dmm")
    per_sample = hubert_3dmm(audio, visual)
    torch.testing.assert_close(per_sample, -torch.log(p_sync))
    torch.testing.assert_close(hubert_3dmm.sync_prob(audio, visual), p_sync)
    for reduction, expected in (("mean", per_sample.mean()), ("sum", per_sample.sum())):
        hubert_3dmm.reduction = reduction
        torch.testing.assert_close(hubert_3dmm(audio, visual), expected)
    linear = UniSyncLoss("hubert", "3dmm", weights=hubert_3dmm.expert, kind="linear", reduction="none")
    torch.testing.assert_close(linear(audio, visual), 1.0 - p_sync)
    assert hubert_3dmm.embed_audio(audio).shape == hubert_3dmm.embed_visual(visual).shape == (4, 16)


def test_log_loss_is_bounded_by_eps_when_p_sync_is_zero(make_model, make_input) -> None:
    model = make_model(["hubert"], ["3dmm"])
    with torch.no_grad():
        model.visual_unified.project.weight.zero_()
        model.visual_unified.project.bias.fill_(-1.0)
    loss_fn = UniSyncLoss("hubert", "3dmm", weights=model, eps=1e-4, reduction="none")
    visual = make_input("3dmm", model.config).requires_grad_(True)
    loss = loss_fn(make_input("hubert", model.config), visual)
    torch.testing.assert_close(loss, torch.full((2,), -torch.log(torch.tensor(1e-4)).item()))
    loss.sum().backward()
    assert torch.isfinite(visual.grad).all()
    with pytest.raises(ValueError, match="eps must lie in \\(0, 1\\)"):
        UniSyncLoss("hubert", "3dmm", weights=model, eps=0.0)


def test_expert_is_frozen_and_hidden_from_a_parent(make_expert, make_input) -> None:
    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 4)
            self.sync_loss = UniSyncLoss("mel", "rgb", weights=make_expert("mel", "rgb"))

    parent = Generator()
    assert [name for name, _ in parent.named_parameters()] == ["layer.weight", "layer.bias"]
    assert set(parent.state_dict()) == {"layer.weight", "layer.bias"}
    optimizer = torch.optim.Adam(parent.parameters())
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 2
    parent.train()
    assert parent.sync_loss.training and not parent.sync_loss.expert.training
    assert not any(m.training for m in parent.sync_loss.expert.modules())
    parent.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in parent.sync_loss.expert.parameters())
    config = parent.sync_loss.expert.config
    loss = parent.sync_loss(make_input("mel", config).double(), make_input("rgb", config).double())
    assert torch.isfinite(loss)


def test_given_model_is_copied_not_frozen_in_place(make_model) -> None:
    model = make_model(["mel"], ["3dmm"]).train()
    loss_fn = UniSyncLoss("mel", "3dmm", weights=model)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert loss_fn.expert is not model and not loss_fn.expert.training


def test_expert_without_the_requested_head(make_expert, make_model) -> None:
    with pytest.raises(ExpertFileError, match="audio heads \\[mel\\], visual heads \\[rgb\\]; it cannot score \\(mel, parsing\\)"):
        UniSyncLoss("mel", "parsing", weights=make_expert("mel", "rgb"))
    with pytest.raises(ValueError, match="it cannot score \\(hubert, rgb\\)"):
        UniSyncLoss("hubert", "rgb", weights=make_model(["mel"], ["rgb"]))


def test_no_expert_anywhere_is_an_error_never_random_weights(unisync_home) -> None:
    with pytest.raises(ExpertFileError, match="no expert for \\(hubert, 3dmm\\) found: looked at"):
        UniSyncLoss("hubert", "3dmm")


def test_cached_expert_is_found_by_pair(make_model, unisync_home, make_input) -> None:
    model = make_model(["hubert"], ["landmarks"])
    save_expert(model, default_expert_path("hubert", "landmarks"))
    loss_fn = UniSyncLoss("hubert", "landmarks", landmark_convention="y_up")  # the expert's own convention: no turn
    audio, visual = make_input("hubert", model.config), make_input("landmarks", model.config)
    assert torch.equal(loss_fn.sync_prob(audio, visual), model(audio, visual, "hubert", "landmarks"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reduction": "max"}, "reduction must be"),
        ({"kind": "bce"}, "kind must be"),
        ({"channel_order": "rbg"}, "channel_order must be"),
        ({"value_range": (1.0, 0.0)}, "value_range must be"),
    ],
)
def test_bad_options(make_model, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        UniSyncLoss("mel", "rgb", weights=make_model(["mel"], ["rgb"]), **kwargs)


def test_batch_mismatch_and_bad_shapes_are_reported(hubert_3dmm, make_input) -> None:
    config = hubert_3dmm.expert.config
    with pytest.raises(ValueError, match=r"batch size mismatch: audio hubert has B=2 \(2, 10, 24\), visual 3dmm has B=3"):
        hubert_3dmm(make_input("hubert", config, batch=2), make_input("3dmm", config, batch=3))
    with pytest.raises(ValueError, match=r"hubert: .*expected \(B, 2T=10, D=24\), got \(2, 10, 1024\)"):
        hubert_3dmm(torch.zeros(2, 10, 1024), make_input("3dmm", config))


def test_autocast_bf16_on_cpu_is_close_to_fp32(make_expert, make_input) -> None:
    loss_fn = UniSyncLoss("mel", "rgb", weights=make_expert("mel", "rgb"), reduction="none")
    config = loss_fn.expert.config
    audio, visual = make_input("mel", config, batch=4), make_input("rgb", config, batch=4).requires_grad_(True)
    reference = loss_fn(audio, visual)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss_fn(audio, visual)
        assert loss_fn.embed_visual(visual).dtype == torch.bfloat16
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed, reference, atol=0.05, rtol=0.05)
    mixed.sum().backward()
    assert torch.isfinite(visual.grad).all()


def test_window_of_16_frames(make_expert, make_input) -> None:
    loss_fn = UniSyncLoss("mel", "parsing", weights=make_expert("mel", "parsing", window=16))
    config = loss_fn.expert.config
    visual = make_input("parsing", config).requires_grad_(True)
    loss_fn(make_input("mel", config), visual).backward()
    assert make_input("mel", config).shape == (2, 1, 80, 52)
    assert visual.grad.abs().sum() > 0


def test_bgr_and_value_range_conventions(make_model, make_input) -> None:
    model = make_model(["mel"], ["rgb"])
    audio, rgb = make_input("mel", model.config), make_input("rgb", model.config)
    reference = UniSyncLoss("mel", "rgb", weights=model)(audio, rgb)
    bgr = UniSyncLoss("mel", "rgb", weights=model, channel_order="bgr")(audio, rgb.flip(1))
    bytes_range = UniSyncLoss("mel", "rgb", weights=model, value_range=(0, 255))(audio, rgb * 255.0)
    assert torch.equal(bgr, reference)
    torch.testing.assert_close(bytes_range, reference)


def test_parsing_labels_and_one_hot_give_the_same_loss(make_model, make_input) -> None:
    loss_fn = UniSyncLoss("hubert", "parsing", weights=make_model(["hubert"], ["parsing"]))
    labels = torch.randint(0, 19, (2, 5, 40, 40))
    one_hot = torch.nn.functional.one_hot(labels, 19).permute(0, 4, 1, 2, 3).float()
    audio = make_input("hubert", loss_fn.expert.config)
    assert torch.equal(loss_fn(audio, labels), loss_fn(audio, one_hot))


def test_landmark_loss_is_translation_and_scale_invariant(make_model, make_input) -> None:
    loss_fn = UniSyncLoss("mel", "landmarks", weights=make_model(["mel"], ["landmarks"]))
    audio, points = make_input("mel", loss_fn.expert.config), make_input("landmarks", loss_fn.expert.config)
    moved = 3.5 * points + torch.tensor([-80.0, 12.0, 300.0])
    torch.testing.assert_close(loss_fn(audio, moved), loss_fn(audio, points), atol=1e-5, rtol=0)


@needs_cuda
@pytest.mark.parametrize(("audio", "visual"), [("mel", "rgb"), ("hubert", "parsing"), ("hubert", "landmarks")])
def test_cuda_forward_backward_without_host_sync(make_expert, make_input, audio, visual) -> None:
    loss_fn = UniSyncLoss(audio, visual, weights=make_expert(audio, visual)).cuda()
    config = loss_fn.expert.config
    audio_x = make_input(audio, config, batch=4).cuda()
    visual_x = make_input(visual, config, batch=4).cuda().requires_grad_(True)
    loss_fn(audio_x, visual_x)  # warm-up: lazy CUDA initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = loss_fn(audio_x, visual_x)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(visual_x.grad).all() and visual_x.grad.abs().sum() > 0
    assert all(p.device.type == "cuda" for p in loss_fn.expert.parameters())


@needs_cuda
def test_cuda_autocast_bf16_and_device_mismatch(make_expert, make_input) -> None:
    loss_fn = UniSyncLoss("mel", "3dmm", weights=make_expert("mel", "3dmm")).cuda()
    config = loss_fn.expert.config
    audio, visual = make_input("mel", config).cuda(), make_input("3dmm", config).cuda()
    reference = loss_fn(audio, visual)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = loss_fn(audio, visual)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="3dmm: input on cpu but the expert is on cuda:0"):
        loss_fn(audio, visual.cpu())
