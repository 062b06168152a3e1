"""pretrain.extract: HuBERT-style features into reps.safetensors, with a tiny random model (never a download)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

pytest.importorskip("transformers")
from torchvision.io import encode_jpeg, write_file  # noqa: E402
from transformers import HubertConfig, HubertModel  # noqa: E402

from pretrain.extract import HubertExtractor, align_rows, extract_hubert, main  # noqa: E402
from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS, write_wav  # noqa: E402

HIDDEN = 32
N_LAYERS = 2


def _tiny_model(folder: Path, stable_layer_norm: bool) -> Path:
    """A randomly initialised 2-layer HuBERT (hidden 32, 16-channel front end) saved with save_pretrained."""
    config = HubertConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=stable_layer_norm,
    )
    torch.manual_seed(0)
    HubertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny_hubert"), stable_layer_norm=False)


def _write_clip(folder: Path, n_frames: int, seconds: float, seed: int) -> Path:
    """A Wav2Lip-layout clip folder: ``n_frames`` small jpgs + ``seconds`` of noise-like audio."""
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    for i in range(n_frames):
        image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=generator)
        write_file(str(folder / f"{i}.jpg"), encode_jpeg(image))
    wave = 0.3 * torch.sin(torch.arange(int(seconds * SAMPLE_RATE)) * 0.05) + 0.05 * torch.randn(
        int(seconds * SAMPLE_RATE), generator=generator
    )
    write_wav(folder / "audio.wav", wave.clamp(-1, 1), SAMPLE_RATE)
    return folder


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _write_clip(root / "spk0" / "clip0", n_frames=10, seconds=10 / VIDEO_FPS, seed=1)
    _write_clip(root / "spk1" / "clip0", n_frames=7, seconds=7 / VIDEO_FPS + 0.02, seed=2)  # audio a bit long
    (root / "filelists").mkdir()
    (root / "filelists" / "test.txt").write_text("spk1/clip0\n")
    return root


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_writes_two_rows_per_frame_and_keeps_existing_keys(model_dir: Path, data_root: Path) -> None:
    reps = data_root / "spk0" / "clip0" / "reps.safetensors"
    landmarks = torch.randn(10, 68, 3)
    save_file({"landmarks": landmarks}, str(reps), metadata={"source": "user"})

    main(["hubert", "--model", str(model_dir), "--data", str(data_root)])

    tensors, metadata = _read(reps)
    assert tensors["hubert"].shape == (20, HIDDEN) and tensors["hubert"].dtype == torch.float32
    assert torch.equal(tensors["landmarks"], landmarks)
    assert metadata["source"] == "user"
    assert metadata["hubert.layer"] == str(N_LAYERS) and metadata["hubert.rate_hz"] == "50"
    assert "hubert" in metadata["hubert.model"]
    other, _ = _read(data_root / "spk1" / "clip0" / "reps.safetensors")
    assert other["hubert"].shape == (14, HIDDEN)
    assert not list(data_root.rglob(".tmp-*"))


def test_deterministic_skip_and_overwrite(model_dir: Path, data_root: Path) -> None:
    extractor = HubertExtractor(model_dir)
    first = extract_hubert(data_root, extractor, progress=False)
    assert (first.written, first.skipped) == (2, 0)
    reps = data_root / "spk0" / "clip0" / "reps.safetensors"
    before = _read(reps)[0]["hubert"]
    assert extract_hubert(data_root, extractor, progress=False).skipped == 2
    again = extract_hubert(data_root, HubertExtractor(model_dir), overwrite=True, progress=False)
    assert again.written == 2
    assert torch.equal(_read(reps)[0]["hubert"], before)


def test_split_selects_filelist_clips(model_dir: Path, data_root: Path) -> None:
    summary = extract_hubert(data_root, HubertExtractor(model_dir), split="test", progress=False)
    assert summary.written == 1
    assert (data_root / "spk1" / "clip0" / "reps.safetensors").exists()
    assert not (data_root / "spk0" / "clip0" / "reps.safetensors").exists()


def test_layer_selection(model_dir: Path) -> None:
    wave = torch.randn(SAMPLE_RATE) * 0.1
    outputs = {layer: HubertExtractor(model_dir, layer=layer).features(wave) for layer in (0, 1, N_LAYERS, -1, -2)}
    assert outputs[0].shape == (49, HIDDEN)  # (16000 - 400) // 320 + 1
    assert torch.equal(outputs[-1], outputs[N_LAYERS])
    assert torch.equal(outputs[-2], outputs[1])
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)
    assert not torch.allclose(outputs[1], outputs[N_LAYERS], atol=1e-3)
    with pytest.raises(ValueError, match="--layer"):
        HubertExtractor(model_dir, layer=N_LAYERS + 1)


@pytest.mark.parametrize("stable_layer_norm", [False, True])
def test_chunked_matches_unchunked(tmp_path: Path, stable_layer_norm: bool) -> None:
    """Chunk boundaries on the 320-sample stride: exact below attention, close (context-limited) above."""
    folder = _tiny_model(tmp_path / "model", stable_layer_norm)
    wave = torch.randn(6 * SAMPLE_RATE, generator=torch.Generator().manual_seed(3)) * 0.1
    for layer, atol, max_rel in ((0, 1e-5, 1e-5), (-1, None, 0.03)):
        whole = HubertExtractor(folder, layer, chunk_seconds=0).features(wave)
        chunked = HubertExtractor(folder, layer, chunk_seconds=1.0, context_seconds=1.0).features(wave)
        blind = HubertExtractor(folder, layer, chunk_seconds=1.0, context_seconds=0.0).features(wave)
        assert whole.shape == chunked.shape == blind.shape == (299, HIDDEN)
        rel = float((chunked - whole).norm() / whole.norm())
        assert rel < max_rel
        assert rel < 0.2 * float((blind - whole).norm() / whole.norm())  # the context is what makes it match
        if atol is not None:
            torch.testing.assert_close(chunked, whole, atol=atol, rtol=0)


def test_align_rows_pads_with_last_row_and_trims() -> None:
    features = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(align_rows(features, 5), torch.tensor([[0.0, 1], [2, 3], [4, 5], [4, 5], [4, 5]]))
    assert torch.equal(align_rows(features, 2), features[:2])


def test_rejects_non_checkpoint_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        HubertExtractor(tmp_path)
