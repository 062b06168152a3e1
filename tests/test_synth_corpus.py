"""The assembled procedural corpus (pretrain.synth: presets, speakers, clip, corpus, contact sheet, CLI)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_jpeg, read_file

from pretrain.synth import render
from pretrain.synth.__main__ import main
from pretrain.synth.clip import Clip, generate_clip
from pretrain.synth.corpus import generate_corpus, generate_split, split_speakers, write_corpus
from pretrain.synth.presets import PRESETS, get_preset
from pretrain.synth.speakers import make_speaker
from unisync_loss.audio import read_wav

SAMPLES_PER_FRAME = 640
LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    """64 default-preset clips of 3 s, one per speaker (enough frames for |r| < 0.1 to mean something)."""
    return list(generate_corpus(64, 1, 3.0, "default", seed=5))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny corpus written twice: in this process, and by two worker processes."""
    root = tmp_path_factory.mktemp("corpus")
    args = dict(speakers=4, clips_per_speaker=2, seconds=1.0, preset="default", seed=11, progress=False)
    write_corpus(root / "a", workers=1, **args)
    write_corpus(root / "b", workers=2, **args)
    write_corpus(root / "a", workers=1, **args)  # over an existing corpus: clips are replaced
    return root / "a", root / "b"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _band_energy(wave: torch.Tensor, low: float = 300.0, high: float = 3000.0) -> np.ndarray:
    """Log energy in [low, high] Hz per video frame (640 samples, Hann), (n,)."""
    w = wave.double().numpy()
    n = w.size // SAMPLES_PER_FRAME
    frames = w[:n * SAMPLES_PER_FRAME].reshape(n, SAMPLES_PER_FRAME) * np.hanning(SAMPLES_PER_FRAME)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(SAMPLES_PER_FRAME, 1.0 / 16000)
    return np.log(power[:, (freqs >= low) & (freqs <= high)].sum(axis=1) + 1e-8)


def _lagged_r(x: np.ndarray, y: np.ndarray, lag: int) -> float:
    """Pearson r of x[t] and y[t + lag]."""
    if lag > 0:
        x, y = x[:-lag], y[lag:]
    elif lag < 0:
        x, y = x[-lag:], y[:lag]
    return float(np.corrcoef(x, y)[0, 1])


def _interior(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 4 neighbours carry the same label (no anti-aliased edge), (n, H, W) bool."""
    inside = np.zeros(labels.shape, dtype=bool)
    c = labels[:, 1:-1, 1:-1]
    inside[:, 1:-1, 1:-1] = ((labels[:, :-2, 1:-1] == c) & (labels[:, 2:, 1:-1] == c)
                             & (labels[:, 1:-1, :-2] == c) & (labels[:, 1:-1, 2:] == c))
    return inside


def test_same_seed_gives_identical_files_whatever_the_workers(written: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = written
    files_a, files_b = _files(a), _files(b)
    assert len(files_a) == 8 * (25 + 2) + 4  # 8 clips x (25 frames, audio.wav, reps) + manifest + 3 filelists
    assert files_a == files_b
    assert not [p for p in a.rglob(".*")]  # no temporary folders or files left behind
    write_corpus(tmp_path, 4, 2, 1.0, "default", seed=12, workers=1, progress=False)
    assert _files(tmp_path)["spk000/clip000/audio.wav"] != files_a["spk000/clip000/audio.wav"]


def test_disk_holds_the_in_memory_clips(written: tuple[Path, Path]) -> None:
    root = written[0]
    clip = next(generate_corpus(4, 2, 1.0, "default", seed=11))
    folder = root / clip.clip_id
    from safetensors.torch import load_file
    reps = load_file(folder / "reps.safetensors")
    assert set(reps) == {"hubert", "landmarks", "landmarks2d", "3dmm", "parsing", "mouth", "pose", "units"}
    for key, tensor in (("hubert", clip.hubert), ("landmarks", clip.landmarks), ("3dmm", clip.coeffs),
                        ("parsing", clip.parsing), ("mouth", clip.mouth), ("landmarks2d", clip.landmarks2d)):
        assert torch.equal(reps[key], tensor), key
    wave, rate = read_wav(folder / "audio.wav")
    assert rate == 16000 and wave.shape == clip.wave.shape
    assert (wave - clip.wave).abs().max() < 1e-4  # 16-bit PCM
    frames = torch.stack([decode_jpeg(read_file(str(folder / f"{i}.jpg"))) for i in range(clip.n_frames)])
    assert frames.shape == clip.rgb.shape
    assert (frames.float() - clip.rgb.float()).abs().mean() < 3.0  # JPEG quality 90


def test_manifest_and_filelists_are_consistent_and_split_by_speaker(written: tuple[Path, Path]) -> None:
    root = written[0]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["generator"] == "unisync-procedural" and manifest["seed"] == 11
    assert (manifest["preset"], manifest["fps"], manifest["sample_rate"], manifest["image_size"]) == ("default", 25, 16000, 96)
    entries = {e["id"]: e for e in manifest["clips"]}
    assert len(entries) == 8
    speakers_of = {}
    for split in ("train", "val", "test"):
        ids = (root / "filelists" / f"{split}.txt").read_text().split()
        assert ids and all(entries[i]["split"] == split for i in ids)
        assert sorted(ids) == sorted(i for i, e in entries.items() if e["split"] == split)
        speakers_of[split] = {entries[i]["speaker"] for i in ids}
    assert speakers_of == {"train": {"spk000", "spk001"}, "val": {"spk002"}, "test": {"spk003"}}
    for clip_id, entry in entries.items():
        assert clip_id.split("/")[0] == entry["speaker"] and entry["n_frames"] == 25
        assert sorted(p.name for p in (root / clip_id).glob("*.jpg")) == sorted(f"{i}.jpg" for i in range(25))


def test_folder_source_reads_the_written_corpus(written: tuple[Path, Path]) -> None:
    from pretrain.data import FolderSource
    source = FolderSource(written[0], "train")
    assert [r.clip_id for r in source.records] == ["spk000/clip000", "spk000/clip001", "spk001/clip000", "spk001/clip001"]
    tensors = source.load(0, ["mel", "hubert", "rgb", "parsing", "landmarks", "3dmm"])
    assert tensors["mel"].shape == (80, 81) and tensors["rgb"].shape == (25, 3, 96, 96)
    assert tensors["landmarks"].shape == (25, 68, 3) and tensors["3dmm"].shape == (25, 64)


def test_representations_have_the_spec_shapes() -> None:
    clip = generate_clip(make_speaker(0, 0, "default"), 1.2, "default", 0, image_size=64)
    n, samples = 30, int(1.2 * 16000)
    expected = {"mel": ((80, 1 + samples // 200), torch.float32), "hubert": ((2 * n, 1024), torch.float32),
                "rgb": ((n, 3, 64, 64), torch.uint8), "parsing": ((n, 64, 64), torch.uint8),
                "landmarks": ((n, 68, 3), torch.float32), "3dmm": ((n, 64), torch.float32)}
    for name, (shape, dtype) in expected.items():
        tensor = clip.representation(name)
        assert tuple(tensor.shape) == shape and tensor.dtype == dtype, name
        assert torch.isfinite(tensor.float()).all(), name
    assert clip.wave.shape == (samples,) and clip.wave.abs().max() <= 1.0
    assert clip.landmarks2d.shape == (n, 68, 2) and clip.mouth.shape == (n, 4) and clip.pose.shape == (n, 7)
    assert clip.clip_id == "spk000/clip000" and clip.n_frames == n
    with pytest.raises(ValueError, match="expected one of"):
        clip.representation("video")


def test_band_energy_follows_jaw_at_zero_lag(clips: list[Clip]) -> None:
    r0, r5 = [], []
    for clip in clips:
        energy, jaw = _band_energy(clip.wave), clip.mouth[:, 0].numpy()
        r0.append(_lagged_r(energy, jaw, 0))
        r5.append(max(abs(_lagged_r(energy, jaw, 5)), abs(_lagged_r(energy, jaw, -5))))
    r0, r5 = np.array(r0), np.array(r5)
    # Calibrated (seed 5): r0 mean 0.77, min 0.64; max |r(+-5)| mean 0.19.
    assert r0.mean() > 0.65 and r0.min() > 0.4, r0
    assert r0.mean() - r5.mean() > 0.4 and np.mean(r0 > r5) > 0.95, (r0, r5)


def test_bilabial_closures_close_the_lips_in_every_representation(clips: list[Clip]) -> None:
    closed_frames = open_frames = dark_when_open = 0
    for clip in clips:
        closed = clip.mouth[:, 3].numpy() >= 0.999
        wide_open = (clip.mouth[:, 0].numpy() > 0.5) & (clip.mouth[:, 3].numpy() == 0.0)
        closed_frames += closed.sum()
        assert np.all(clip.coeffs[closed, 3].numpy() >= 0.999)                        # 3dmm closure component
        for points in (clip.landmarks, clip.landmarks2d):                              # inner lips touch
            gap = torch.linalg.vector_norm(points[:, [61, 62, 63]] - points[:, [67, 66, 65]], dim=-1).amax(dim=1)
            assert gap[closed].max() < 1e-4 if closed.any() else True
        mouth_pixels = (clip.parsing == render.LABELS["mouth"]).sum(dim=(1, 2)).numpy()
        assert np.all(mouth_pixels[closed] == 0)                                        # no mouth interior
        assert np.all(mouth_pixels[wide_open] > 0)
        # RGB: no pixel of the 3x3 patch at the lip centre is much darker than the lips.
        luma = (clip.rgb.permute(0, 2, 3, 1).numpy() / 255.0) @ LUMA
        lips = np.isin(clip.parsing.numpy(), (render.LABELS["u_lip"], render.LABELS["l_lip"]))
        centre = ((clip.landmarks2d[:, 62] + clip.landmarks2d[:, 66]) / 2).numpy().astype(int)
        for i in np.flatnonzero(closed | wide_open):
            x, y = centre[i]
            darkest = luma[i, y - 1:y + 2, x - 1:x + 2].min() / np.median(luma[i][lips[i]])
            if closed[i]:
                assert darkest > 0.9, (clip.clip_id, i, darkest)
            else:
                open_frames += 1
                dark_when_open += darkest < 0.6
    assert closed_frames > 300
    assert dark_when_open > 0.6 * open_frames  # the check sees the dark interior when it is there (else teeth)


def test_nuisance_is_uncorrelated_with_audio_energy_on_default(clips: list[Clip]) -> None:
    energy, nuisance = [], []
    for clip in clips:
        e = _band_energy(clip.wave, 0.0, 8000.0)
        upper_brightness = clip.rgb[:, :, : clip.rgb.shape[2] // 3].float().mean(dim=(1, 2, 3)).numpy()
        columns = np.column_stack([clip.pose[:, [0, 1, 2, 3, 4, 6]].numpy(), clip.coeffs[:, 4:6].numpy(),
                                   upper_brightness, clip.mouth[:, 0].numpy()])
        energy.append(e - e.mean())
        nuisance.append(columns - columns.mean(axis=0))
    energy, nuisance = np.concatenate(energy), np.concatenate(nuisance)
    assert energy.size == 64 * 75
    r = np.array([np.corrcoef(energy, nuisance[:, k])[0, 1] for k in range(nuisance.shape[1])])
    names = ("yaw", "pitch", "roll", "tx", "ty", "scale", "blink_l", "blink_r", "brightness")
    assert np.all(np.abs(r[:-1]) < 0.1), dict(zip(names, r.round(3)))
    assert r[-1] > 0.5  # the same measure does see the jaw (control)


def test_parsing_labels_and_rgb_agree_on_the_mouth_region(clips: list[Clip]) -> None:
    for index, clip in enumerate(clips[:8]):
        face = make_speaker(5, index, "default").face
        colour = clip.rgb.permute(0, 2, 3, 1).numpy() / 255.0
        labels = clip.parsing.numpy()
        inside = _interior(labels)
        mouth = (labels == render.LABELS["mouth"]) & inside
        lips = np.isin(labels, (render.LABELS["u_lip"], render.LABELS["l_lip"])) & inside
        # Lighting multiplies albedo by a smooth factor: estimate it per frame on the lips, divide it out.
        lip = np.asarray(face.lip_rgb)
        shade = np.array([np.median(colour[i][lips[i]] / np.maximum(lip, 0.05)) for i in range(clip.n_frames)])
        albedo = colour / shade[:, None, None, None]
        # mouth model: the segment from the dark interior to the teeth colour (anti-aliased teeth edges).
        dark, teeth = render._MOUTH_DARK, np.asarray(face.teeth_rgb)
        mix = np.clip(((albedo - dark) @ (teeth - dark)) / np.sum((teeth - dark) ** 2), 0.0, 1.0)
        to_mouth = np.abs(albedo - (dark + mix[..., None] * (teeth - dark))).max(axis=-1)
        to_lip = np.abs(albedo - lip).max(axis=-1)
        assert mouth.sum() > 200 and lips.sum() > 1000
        assert to_mouth[mouth].max() < 0.1 and to_lip[lips].max() < 0.15
        assert np.all(to_mouth[mouth] < to_lip[mouth]) and np.all(to_lip[lips] < to_mouth[lips])


def test_presets_order_difficulty() -> None:
    """hard: less audio SNR, and less mouth motion relative to head motion (pixels) than easy."""
    mouth_over_head = {}
    for name in ("easy", "hard"):
        ratios = []
        for clip in generate_corpus(10, 1, 3.0, name, seed=2):
            assert PRESETS[name].snr_db[0] <= clip.snr_db <= PRESETS[name].snr_db[1]
            points = clip.landmarks2d
            gap = torch.linalg.vector_norm(points[:, 62] - points[:, 66], dim=-1).std()
            head = points[:, 30].std(dim=0).norm()
            ratios.append((gap / head).item())
        mouth_over_head[name] = float(np.median(ratios))
    assert mouth_over_head["easy"] > 3.0 * mouth_over_head["hard"], mouth_over_head
    assert PRESETS["hard"].snr_db[1] < PRESETS["default"].snr_db[0] <= PRESETS["default"].snr_db[1] < PRESETS["easy"].snr_db[0]
    with pytest.raises(ValueError, match="preset"):
        get_preset("medium")


def test_speakers_are_deterministic_and_splits_hold_whole_speakers() -> None:
    first, again = make_speaker(3, 7, "default"), make_speaker(3, 7, "default")
    assert (first.speaker_id, first.voice, first.habits) == ("spk007", again.voice, again.habits)
    assert np.array_equal(first.face.id_coeffs, again.face.id_coeffs)
    assert np.array_equal(first.face.skin_rgb, again.face.skin_rgb)
    assert make_speaker(3, 7, "default").voice != make_speaker(3, 8, "default").voice
    for preset in PRESETS.values():
        habits = make_speaker(0, 1, preset).habits
        assert preset.strength[0] <= habits.strength <= preset.strength[1]
        assert abs(habits.av_offset_s) <= preset.av_offset_ms / 1000.0
    counts = {n: [len(v) for v in split_speakers(n).values()] for n in (1, 3, 16, 100)}
    assert counts == {1: [1, 0, 0], 3: [1, 1, 1], 16: [12, 2, 2], 100: [80, 10, 10]}
    with pytest.raises(ValueError, match="fractions"):
        split_speakers(10, (0.5, 0.5, 0.5))
    # a split in memory is the same clips as in the full corpus, and growing the corpus keeps speakers
    val = generate_split("val", 4, 1, 0.4, "easy", seed=1)
    full = {c.clip_id: c for c in generate_corpus(4, 1, 0.4, "easy", seed=1)}
    assert [c.clip_id for c in val] == ["spk002/clip000"]
    assert torch.equal(val[0].rgb, full["spk002/clip000"].rgb) and torch.equal(val[0].wave, full["spk002/clip000"].wave)
    bigger = next(generate_corpus(40, 1, 0.4, "easy", seed=1))
    assert torch.equal(bigger.hubert, full["spk000/clip000"].hubert)


def test_command_writes_corpus_and_contact_sheet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--speakers", "3", "--clips-per-speaker", "1", "--seconds", "0.8",
                 "--workers", "1", "--image-size", "64", "--preset", "hard"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 clips (train 1, val 1, test 1), 60 frames" in printed
    sheet = (tmp_path / "contact_sheet.png").read_bytes()
    assert sheet[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(sheet) < 300_000
    assert (tmp_path / "spectrogram.png").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["image_size"] == 64 and manifest["preset"] == "hard"
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--speakers", "0"])
