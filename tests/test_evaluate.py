"""pretrain.evaluate: the CLI's outputs, and end-to-end sign conventions with an oracle expert."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from torch import Tensor, nn
from torchvision.io import encode_jpeg, write_file

from pretrain.data import ClipRecord, ClipSource
from pretrain.evaluate import evaluate_expert, main, parse_args, shift_clip
from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS, mel_start, write_wav
from unisync_loss.experts import default_expert_path, load_expert, save_expert

WINDOW = 5
N_FRAMES = 40
CODE_DIM = 12
RESULT_KEYS = {
    "audio", "visual", "window", "max_offset", "tolerance", "context", "shifts", "sync_accuracy", "offset_mae",
    "clip_offset_mae", "clip_offset_accuracy", "lse_d", "lse_c", "clips", "windows", "skipped", "per_shift",
    "offsets", "confusion", "mean_p_sync", "per_clip",
}


class OracleExpert(nn.Module):
    """Embeds windows of per-frame codes so that p_sync is 1 exactly at the true alignment.

    hubert (W, 2T, D): rows 0, 2, .. hold the codes of frames i .. i+T-1; 3dmm (W, T, D) holds them
    directly; mel (W, 1, 80, 16): frame i + k's code sits in column mel_start(k) + 1 (rows 0..D-1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(window=WINDOW)
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device
        self.columns = [mel_start(k) + 1 for k in range(WINDOW)]

    def has_heads(self, audio: str, visual: str) -> bool:
        return True

    def embed_audio(self, x: Tensor, representation: str) -> Tensor:
        if representation == "hubert":
            return x[:, ::2].flatten(1)
        return x[:, 0, :CODE_DIM, self.columns].transpose(1, 2).flatten(1)

    def embed_visual(self, x: Tensor, representation: str) -> Tensor:
        return x.flatten(1)


def oracle_clip(seed: int, n_frames: int = N_FRAMES) -> dict[str, Tensor]:
    """Canonical hubert / mel / 3dmm of one clip built from random positive per-frame codes (n, D)."""
    codes = torch.rand(n_frames, CODE_DIM, generator=torch.Generator().manual_seed(seed)) + 0.1
    mel = torch.zeros(80, 1 + mel_start(n_frames))
    for frame in range(n_frames):
        mel[:CODE_DIM, mel_start(frame) : mel_start(frame + 1)] = codes[frame, :, None]
    return {"hubert": codes.repeat_interleave(2, dim=0), "mel": mel, "3dmm": codes}


class OracleSource(ClipSource):
    """In-memory clips of ``oracle_clip``."""

    def __init__(self, clips: int) -> None:
        self.records = [ClipRecord(f"spk{i}/clip0", f"spk{i}", "test", N_FRAMES) for i in range(clips)]
        self.clips = [oracle_clip(seed=i) for i in range(clips)]

    def _load_one(self, index: int, name: str) -> Tensor:
        return self.clips[index][name]


@pytest.mark.parametrize(("audio", "shifts"), [("hubert", (-11, -3, 0, 4, 15)), ("mel", (-10, -5, 0, 5, 10))])
def test_oracle_finds_every_true_offset(audio: str, shifts: tuple[int, ...]) -> None:
    result = evaluate_expert(OracleExpert(), OracleSource(2), audio, "3dmm", shifts=shifts)
    assert result["sync_accuracy"] == 1.0 and result["offset_mae"] == 0.0 and result["clip_offset_mae"] == 0.0
    assert result["lse_d"] == pytest.approx(0.0, abs=1e-6) and result["lse_c"] > 0.01
    assert result["clips"] == 2 * len(shifts) and result["skipped"] == 0
    for row, shift in zip(result["confusion"]["counts"], shifts):
        predicted = [offset for offset, count in zip(result["offsets"], row) if count]
        assert predicted == [shift]
    assert all(record["offset"] == record["shift"] for record in result["per_clip"])
    for shift in shifts:
        assert result["per_shift"][str(shift)]["sync_accuracy"] == 1.0
        curve = result["mean_p_sync"][str(shift)]
        assert curve[shift + 15] == pytest.approx(1.0)
        assert max(v for i, v in enumerate(curve) if v is not None and i != shift + 15) < 0.999


def test_oracle_windows_without_true_audio_are_left_out() -> None:
    """Shift -3 crops 3 audio frames: visual windows 0..2 have their true audio before the clip."""
    result = evaluate_expert(OracleExpert(), OracleSource(1), "hubert", "3dmm", shifts=(-3, 3))
    windows = {record["shift"]: record["windows"] for record in result["per_clip"]}
    # -3: audio 37 frames -> 33 windows, of which the first 3 lack their truth; +3: video 37 frames -> 33 windows.
    assert windows == {-3: 30, 3: 33}


def test_shift_clip_crops_without_padding() -> None:
    clip = {**oracle_clip(0, n_frames=20), "rgb": torch.zeros(20, 3, 8, 8, dtype=torch.uint8)}
    later = shift_clip(clip, 3)
    assert later["3dmm"].shape[0] == later["rgb"].shape[0] == 17
    assert torch.equal(later["3dmm"], clip["3dmm"][3:]) and torch.equal(later["hubert"], clip["hubert"])
    earlier = shift_clip(clip, -5)
    assert torch.equal(earlier["hubert"], clip["hubert"][10:]) and torch.equal(earlier["mel"], clip["mel"][:, 16:])
    assert torch.equal(earlier["3dmm"], clip["3dmm"])
    assert shift_clip(clip, 0) is clip


def test_random_expert_counts_are_consistent(make_model: Callable) -> None:
    model = make_model(["hubert"], ["3dmm"], hubert={"dim": CODE_DIM}, **{"3dmm": {"dim": CODE_DIM}}).train()
    result = evaluate_expert(model, OracleSource(2), "hubert", "3dmm", shifts=(0, 2), tolerance=2)
    assert set(result) == RESULT_KEYS and model.training
    assert 0.0 <= result["sync_accuracy"] <= 1.0 and result["lse_d"] >= 0.0
    assert sum(map(sum, result["confusion"]["counts"])) == result["windows"] == sum(r["windows"] for r in result["per_clip"])
    expected = sum(r["accuracy"] for r in result["per_clip"]) / len(result["per_clip"])
    assert result["sync_accuracy"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="max_offset"):
        evaluate_expert(model, OracleSource(1), "hubert", "3dmm", shifts=(16,))
    with pytest.raises(ValueError, match="cannot score mel x 3dmm"):
        evaluate_expert(model, OracleSource(1), "mel", "3dmm")


def _write_folder(root: Path) -> Path:
    """A Wav2Lip-layout test split: two speakers, one 1.2 s clip each (noise frames and tones)."""
    generator = torch.Generator().manual_seed(0)
    lines = []
    for speaker in range(2):
        clip = root / f"spk{speaker}" / "c0"
        clip.mkdir(parents=True)
        for i in range(30):
            write_file(str(clip / f"{i}.jpg"), encode_jpeg(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=generator)))
        t = torch.arange(30 * SAMPLE_RATE // VIDEO_FPS) / SAMPLE_RATE
        write_wav(clip / "audio.wav", 0.3 * torch.sin(2 * torch.pi * (200 + 100 * speaker) * t))
        lines.append(f"spk{speaker}/c0")
    (root / "filelists").mkdir()
    (root / "filelists" / "test.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cli_writes_json_and_png(tmp_path: Path, make_model: Callable, unisync_home: Path, capsys: pytest.CaptureFixture) -> None:
    save_expert(make_model(["mel"], ["rgb"]), default_expert_path("mel", "rgb"), training={"kind": "random init"})
    root = _write_folder(tmp_path / "data")
    out = tmp_path / "eval"
    main(["--expert", "mel_rgb", "--data", str(root), "--out", str(out), "--shifts", "-5", "0", "5", "--max-clips", "2"])

    result = json.loads((out / "eval.json").read_text())
    assert RESULT_KEYS | {"expert", "data", "split"} == set(result)
    assert (result["audio"], result["visual"], result["split"]) == ("mel", "rgb", "test")
    assert result["clips"] == 6 and result["shifts"] == [-5, 0, 5]
    assert len(result["confusion"]["counts"]) == 3 and all(len(row) == 31 for row in result["confusion"]["counts"])
    assert set(result["per_shift"]) == {"-5", "0", "5"}
    assert 0.0 <= result["sync_accuracy"] <= 1.0
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sync accuracy" in capsys.readouterr().out
    assert load_expert("mel_rgb").config.window == WINDOW


def test_cli_asks_for_the_pair_of_a_multi_head_expert(tmp_path: Path, make_model: Callable) -> None:
    path = save_expert(make_model(["mel", "hubert"], ["rgb"]), tmp_path / "multi.safetensors")
    with pytest.raises(SystemExit, match="--audio"):
        main(["--expert", str(path), "--data", str(_write_folder(tmp_path / "data")), "--out", str(tmp_path / "o")])


def test_shift_arguments() -> None:
    base = ["--expert", "e", "--data", "d"]
    assert parse_args([*base, "--shifts=-5,0,5"]).shifts == [[-5, 0, 5]]
    assert parse_args([*base, "--shifts", "-5", "0", "5"]).shifts == [[-5], [0], [5]]
    assert parse_args(base).shifts == [[0]]


def test_procedural_data_means_the_experts_own_corpus_when_recorded():
    from pretrain.evaluate import resolve_data

    source = {"kind": "procedural", "speakers": 10, "clips_per_speaker": 1, "seconds": 1.0, "preset": "easy", "corpus_seed": 3}
    header = {"training": {"data": {"source": source}}}
    held_out = resolve_data("procedural", "test", header)
    assert {record.speaker for record in held_out.records} == {"spk009"}
    assert held_out.load(0, ("3dmm",))["3dmm"].shape == (25, 64)
    harder = resolve_data("procedural:hard", "test", header)
    assert [r.speaker for r in harder.records] == [r.speaker for r in held_out.records]
    assert not torch.equal(harder.load(0, ("3dmm",))["3dmm"], held_out.load(0, ("3dmm",))["3dmm"])
    default = resolve_data("procedural", "test", {"training": {}})
    assert {record.speaker for record in default.records} == {"spk014", "spk015"}
