"""UniSync model: config round trip, heads for every pair, T=16, sync_prob edge cases, no batch statistics."""
from __future__ import annotations

import pytest
import torch

from unisync_loss.model import FrameEncoder, UniSync, UniSyncConfig, sync_prob
from unisync_loss.representations import AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS


def test_config_round_trip_fills_defaults() -> None:
    config = UniSyncConfig({"hubert": {"dim": 768}}, {"landmarks": {"mouth": list(range(48, 68))}}, window=16, hidden=32)
    data = config.to_dict()
    assert data["visual"]["landmarks"] == {
        "points": 68, "coords": 3, "mouth": list(range(48, 68)), "rotation": False, "eye_corners": [36, 45],
        "convention": "y_up",
    }
    assert UniSyncConfig.from_dict(data) == config
    assert data["window"] == 16 and data["hidden"] == 32 and data["embed_dim"] == 128


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"audio": {"mel": {}}, "visual": {"rgb": {}}, "depth": 3}, "unknown field\\(s\\) depth"),
        ({"audio": {"mel": {}}}, "field\\(s\\) visual required"),
        ({"audio": {"rgb": {}}, "visual": {"rgb": {}}}, "UniSyncConfig.audio: 'rgb' is a visual representation"),
        ({"audio": {}, "visual": {"rgb": {}}}, "must map at least one audio representation"),
        ({"audio": {"mel": {}}, "visual": {"rgb": {}}, "window": 0}, "window must be a positive integer"),
    ],
)
def test_config_errors(data, message) -> None:
    with pytest.raises(ValueError, match=message):
        UniSyncConfig.from_dict(data)


@pytest.mark.parametrize("window", [5, 16])
def test_every_pair_scores_in_unit_interval(make_model, make_input, window) -> None:
    model = make_model(AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS, window=window)
    for audio in AUDIO_REPRESENTATIONS:
        audio_emb = model.embed_audio(make_input(audio, model.config, batch=3), audio)
        assert audio_emb.shape == (3, 16)
        for visual in VISUAL_REPRESENTATIONS:
            p_sync = model(make_input(audio, model.config, batch=3), make_input(visual, model.config, batch=3), audio, visual)
            assert p_sync.shape == (3,) and p_sync.dtype == torch.float32
            assert ((p_sync >= 0) & (p_sync <= 1)).all()


def test_heads_share_unified_layers(make_model) -> None:
    model = make_model(AUDIO_REPRESENTATIONS, VISUAL_REPRESENTATIONS)
    assert set(model.audio_heads) == set(AUDIO_REPRESENTATIONS)
    assert set(model.visual_heads) == set(VISUAL_REPRESENTATIONS)
    names = [name for name, _ in model.named_parameters()]
    assert sum(name.startswith("visual_unified.") for name in names) == len(list(model.visual_unified.parameters()))
    assert not any("BatchNorm" in type(m).__name__ for m in model.modules())


def test_eval_scores_each_window_on_its_own(make_model, make_input) -> None:
    model = make_model(["mel"], ["rgb"])
    audio, visual = make_input("mel", model.config, batch=4), make_input("rgb", model.config, batch=4)
    together = model(audio, visual, "mel", "rgb")
    alone = torch.cat([model(audio[i : i + 1], visual[i : i + 1], "mel", "rgb") for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_training_standardises_embeddings_and_tracks_statistics(make_model, make_input) -> None:
    model = make_model(["hubert"], ["3dmm"]).train()
    hubert = make_input("hubert", model.config, batch=64)
    embedding = model.embed_audio(hubert, "hubert")
    assert torch.allclose(embedding.mean(dim=0), torch.zeros(embedding.shape[1]), atol=1e-4)
    assert torch.allclose(embedding.var(dim=0, unbiased=False), torch.ones(embedding.shape[1]), atol=1e-2)
    norm = model.audio_unified.norm
    assert not torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    before = norm.running_mean.clone()
    model.eval().embed_audio(hubert, "hubert")
    assert torch.equal(norm.running_mean, before)


def test_embedding_norm_rejects_bad_settings(make_model, make_input) -> None:
    with pytest.raises(ValueError, match=r"embed_norm must be one of \('batch', 'none'\), got 'layer'"):
        UniSyncConfig({"mel": {}}, {"3dmm": {}}, embed_norm="layer")
    model = make_model(["hubert"], ["3dmm"]).train()
    with pytest.raises(ValueError, match="at least 2 windows per batch.*got a batch of 1"):
        model.embed_audio(make_input("hubert", model.config, batch=1), "hubert")
    assert model.eval().embed_audio(make_input("hubert", model.config, batch=1), "hubert").shape == (1, 16)


def test_missing_head_and_wrong_modality(make_model, make_input) -> None:
    model = make_model(["hubert"], ["3dmm"])
    with pytest.raises(ValueError, match="no 'landmarks' head; it has audio heads \\[hubert\\], visual heads \\[3dmm\\]"):
        model.embed_visual(torch.zeros(1, 5, 68, 3), "landmarks")
    with pytest.raises(ValueError, match="'3dmm' is a visual representation, not audio"):
        model.embed_audio(make_input("3dmm", model.config), "3dmm")


def test_forward_rejects_batch_mismatch(make_model, make_input) -> None:
    model = make_model(["mel"], ["landmarks"])
    audio, visual = make_input("mel", model.config, batch=3), make_input("landmarks", model.config, batch=2)
    with pytest.raises(ValueError, match=r"batch size mismatch: audio mel has B=3 \(3, 1, 80, 16\), visual landmarks has B=2 \(2, 5, 68, 3\)"):
        model(audio, visual, "mel", "landmarks")


def test_statistics_standardise_inputs(make_model, make_input) -> None:
    model = make_model(["hubert"], ["3dmm"])
    hubert = make_input("hubert", model.config)
    mean, std = torch.linspace(-1, 1, 24), torch.linspace(0.5, 2, 24)
    model.set_statistics("hubert", mean, std)
    shifted = model.embed_audio(hubert * std + mean, "hubert")
    model.set_statistics("hubert", torch.zeros(24), torch.ones(24))
    torch.testing.assert_close(shifted, model.embed_audio(hubert, "hubert"), atol=1e-5, rtol=1e-5)


def test_sync_prob_values_and_zero_vectors() -> None:
    a = torch.tensor([[1.0, 2.0, -3.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -0.5]], requires_grad=True)
    v = torch.tensor([[2.0, 4.0, -5.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], requires_grad=True)
    p = sync_prob(a, v)
    torch.testing.assert_close(p, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    p.sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(v.grad).all()
    orthogonal = sync_prob(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]]))
    assert orthogonal.item() == 0.0


def test_sync_prob_is_float32_for_bf16_embeddings() -> None:
    a, v = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    p = sync_prob(a, v)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p, sync_prob(a.float(), v.float()))


def test_float64_model_accepts_float32_and_integer_inputs(make_model, make_input) -> None:
    model = make_model(["mel"], ["parsing"]).double()
    labels = torch.randint(0, 19, (2, 5, 40, 40), dtype=torch.uint8)
    p_sync = model(make_input("mel", model.config), labels, "mel", "parsing")
    assert p_sync.shape == (2,) and torch.isfinite(p_sync).all()


def test_model_is_constructible_from_config_object() -> None:
    model = UniSync(UniSyncConfig({"mel": {}}, {"rgb": {}}))
    assert model.config.visual["rgb"] == {"size": 96}
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_frame_encoder_folds_are_layout_independent() -> None:
    """Both folds (channels-first, channels-last) give the same features whatever the memory order of the input."""
    torch.manual_seed(0)
    first = FrameEncoder(channels=4, hidden=16).eval()
    last = FrameEncoder(channels=4, hidden=16, channels_last=True).eval()
    last.load_state_dict(first.state_dict())
    frames = torch.randn(2, 4, 5, 12, 24)
    classes_last = frames.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    assert torch.equal(classes_last, frames) and not classes_last.is_contiguous()
    for encoder in (first, last):
        for x in (frames, classes_last):
            torch.testing.assert_close(encoder(x), first(frames), atol=1e-5, rtol=1e-5)
    assert first(frames).shape == (2, 16, 5)
