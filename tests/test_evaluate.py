"""pretrain.evaluate: the CLI's outputs, and end-to-end sign conventions with an oracle expert."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from torch import Tensor, nn
from torchvision.io import encode_jpeg, write_file

from pretrain.data import ClipRecord, ClipSource, FolderSource
from pretrain.evaluate import (
    SAMPLES_PER_FRAME,
    default_out,
    evaluate_expert,
    known_offsets,
    main,
    parse_args,
    parse_seeds,
    shift_clip,
    speaker_statistics,
)
from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS, log_mel, mel_start, write_wav
from unisync_loss.experts import default_expert_path, load_expert, save_expert
from unisync_loss.metrics import score_clip

WINDOW = 5
N_FRAMES = 40
CODE_DIM = 12
RESULT_KEYS = {
    "audio", "visual", "measure", "window", "max_offset", "tolerance", "context", "shifts", "sync_accuracy", "chance", "offset_mae",
    "clip_offset_mae", "clip_offset_accuracy", "lse_d", "lse_c", "clips", "windows", "skipped", "known_offsets",
    "speakers", "speaker_accuracy_mean", "speaker_accuracy_se", "per_speaker", "per_shift",
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


# The oracle's mel has no waveform, so it is shifted only by dropping video (negative mel shifts: test_exact_shifts).
@pytest.mark.parametrize(("audio", "shifts"), [("hubert", (-11, -3, 0, 4, 15)), ("mel", (0, 3, 5, 10))])
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


def rule_windows(n_frames: int, shift: int) -> int:
    """README's rule: of the n - T + 1 visual windows of an in-sync clip, a shift by s leaves out the |s|
    whose true audio window falls outside the cropped clip."""
    return n_frames - WINDOW + 1 - abs(shift)


def test_oracle_windows_without_true_audio_are_left_out() -> None:
    """-7 crops 7 audio frames (visual windows 0..6 lose their truth), +7 crops 7 video frames: 29 windows each."""
    result = evaluate_expert(OracleExpert(), OracleSource(1), "hubert", "3dmm", shifts=(-7, 7))
    windows = {record["shift"]: record["windows"] for record in result["per_clip"]}
    assert windows == {-7: rule_windows(N_FRAMES, -7), 7: rule_windows(N_FRAMES, 7)} == {-7: 29, 7: 29}
    assert result["sync_accuracy"] == 1.0


def test_mel_shifts_of_both_signs_score_the_rule_s_windows(tmp_path: Path, make_model: Callable) -> None:
    source = FolderSource(_write_folder(tmp_path / "data"), "test")  # 30 frames of video and of audio per clip
    result = evaluate_expert(make_model(["mel"], ["rgb"]), source, "mel", "rgb", shifts=(-7, 7), indices=[0])
    windows = {record["shift"]: record["windows"] for record in result["per_clip"]}
    assert windows == {-7: rule_windows(30, -7), 7: rule_windows(30, 7)} == {-7: 19, 7: 19}


def test_shift_clip_crops_without_padding() -> None:
    clip = {**oracle_clip(0, n_frames=20), "rgb": torch.zeros(20, 3, 8, 8, dtype=torch.uint8)}
    later = shift_clip(clip, 3)
    assert later["3dmm"].shape[0] == later["rgb"].shape[0] == 17
    assert torch.equal(later["3dmm"], clip["3dmm"][3:]) and torch.equal(later["hubert"], clip["hubert"])
    assert torch.equal(later["mel"], clip["mel"])
    wave = torch.randn(20 * SAMPLES_PER_FRAME, generator=torch.Generator().manual_seed(0))
    earlier = shift_clip(clip, -3, wave)
    assert torch.equal(earlier["hubert"], clip["hubert"][6:]) and torch.equal(earlier["3dmm"], clip["3dmm"])
    assert torch.equal(earlier["mel"], log_mel(wave[3 * 640:]))  # recomputed from the cropped waveform
    with pytest.raises(ValueError, match="needs the clip's waveform"):
        shift_clip(clip, -3)
    assert shift_clip(clip, 0) is clip


@pytest.mark.parametrize(("audio", "visual", "shifts"), [("mel", "rgb", (-10, -5, 3, 7)), ("hubert", "3dmm", (-7, -3, 3, 7))])
def test_exact_shifts_keep_the_p_sync_of_every_window_pair(make_model: Callable, audio: str, visual: str, shifts) -> None:
    """A shifted clip pairs the same frames with the same audio samples as the unshifted one, so p_sync agrees.

    Shifted visual window j is unshifted window j + max(s, 0), shifted audio window k is unshifted
    k + max(-s, 0): the shifted pair at offset o is the unshifted pair at offset o - s. The mel of
    a cropped waveform equals the original's columns exactly for crops of 5 frames (16 mel steps)
    except its first two columns, whose STFT frames reach before the crop: audio window 0 is
    excluded there. Other negative mel shifts put the audio on another hop grid (no same pairs).
    """
    g = torch.Generator().manual_seed(4)
    n_frames = 40
    wave = 0.1 * torch.randn(n_frames * SAMPLES_PER_FRAME, generator=g)
    clip = {"mel": log_mel(wave), "hubert": torch.randn(2 * n_frames, 24, generator=g),
            "rgb": torch.randint(0, 256, (n_frames, 3, 40, 40), generator=g, dtype=torch.uint8),
            "3dmm": torch.randn(n_frames, 16, generator=g)}
    model = make_model([audio], [visual])
    base = score_clip(model, clip[audio], clip[visual], audio, visual)["probabilities"]
    for shift in shifts:
        cropped = shift_clip(clip, shift, wave)
        shifted = score_clip(model, cropped[audio], cropped[visual], audio, visual, true_offset=shift)["probabilities"]
        rows, columns = torch.meshgrid(torch.arange(shifted.shape[0]), torch.arange(31), indexing="ij")
        base_rows, base_columns = rows + max(shift, 0), columns - shift
        inside = (base_rows < base.shape[0]) & (base_columns >= 0) & (base_columns < 31) & ~shifted.isnan()
        if audio == "mel" and shift < 0:
            inside &= rows + columns - 15 >= 1  # shifted audio window k = j + o >= 1
        expected = base[base_rows[inside], base_columns[inside]]
        assert inside.sum() > 300 and not expected.isnan().any()
        torch.testing.assert_close(shifted[inside], expected, atol=1e-5, rtol=0)


def test_known_offsets_are_the_truth(tmp_path: Path) -> None:
    source = OracleSource(3)
    # clip 1's audio already lags its video by 4 frames: crop 4 frames of video out of a clip built in sync
    source.clips[1] = {"hubert": source.clips[1]["hubert"], "mel": source.clips[1]["mel"], "3dmm": source.clips[1]["3dmm"][4:]}
    (tmp_path / "offsets.csv").write_text("clip,offset\nspk1/clip0,4\n")
    offsets = known_offsets(source, tmp_path / "offsets.csv")
    assert offsets == {"spk1/clip0": 4}
    result = evaluate_expert(OracleExpert(), source, "hubert", "3dmm", shifts=(-2, 0), true_offsets=offsets)
    truths = {(r["clip"], r["shift"]): r["true_offset"] for r in result["per_clip"]}
    assert truths[("spk1/clip0", 0)] == 4 and truths[("spk1/clip0", -2)] == 2 and truths[("spk0/clip0", -2)] == -2
    assert result["sync_accuracy"] == 1.0 and result["known_offsets"] == 1
    assert sorted(result["per_shift"]) == ["-2", "0", "2", "4"]  # grouped by true offset
    unaware = evaluate_expert(OracleExpert(), source, "hubert", "3dmm", indices=[1])
    assert unaware["sync_accuracy"] == 0.0  # taken as in sync, the lagging clip looks wrong
    (tmp_path / "bad.csv").write_text("clip,offset\nspk9/clip0,1\n")
    with pytest.raises(ValueError, match="1 clip id\\(s\\) not in the data"):
        known_offsets(source, tmp_path / "bad.csv")
    (tmp_path / "half.csv").write_text("clip,offset\nspk1/clip0,1.5\n")
    with pytest.raises(ValueError, match="whole number of video frames"):
        known_offsets(source, tmp_path / "half.csv")


def test_manifest_true_offset_field(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "data")
    (root / "manifest.json").write_text(json.dumps({"clips": [{"id": "spk1/c0", "speaker": "spk1", "true_offset": -3}]}))
    assert known_offsets(FolderSource(root, "test")) == {"spk1/c0": -3}


def test_speaker_statistics() -> None:
    records = [{"speaker": "a", "accuracy": 0.5, "chance": 0.1}, {"speaker": "a", "accuracy": 0.7, "chance": 0.1},
               {"speaker": "b", "accuracy": 0.9, "chance": 0.2}, {"speaker": "c", "accuracy": 0.6, "chance": 0.1}]
    stats = speaker_statistics(records)
    assert stats["per_speaker"]["a"] == {"sync_accuracy": pytest.approx(0.6), "chance": pytest.approx(0.1), "clips": 2}
    assert stats["speakers"] == 3 and stats["speaker_accuracy_mean"] == pytest.approx(0.7)
    assert stats["speaker_accuracy_se"] == pytest.approx(math.sqrt(((0.1**2 + 0.2**2 + 0.1**2) / 2) / 3))
    assert speaker_statistics(records[:2])["speaker_accuracy_se"] is None


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
    assert RESULT_KEYS | {"expert", "data", "split", "corpus_seeds", "offsets_csv"} == set(result)
    assert (result["audio"], result["visual"], result["split"]) == ("mel", "rgb", "test")
    assert result["clips"] == 6 and result["shifts"] == [-5, 0, 5]
    assert len(result["confusion"]["counts"]) == 3 and all(len(row) == 31 for row in result["confusion"]["counts"])
    assert set(result["per_shift"]) == {"-5", "0", "5"}
    assert 0.0 <= result["sync_accuracy"] <= 1.0
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sync accuracy" in capsys.readouterr().out
    assert load_expert("mel_rgb").config.window == WINDOW


def test_cli_asks_for_the_pair_of_a_multi_head_expert(tmp_path: Path, make_model: Callable, capsys: pytest.CaptureFixture) -> None:
    path = save_expert(make_model(["mel", "hubert"], ["rgb"]), tmp_path / "multi.safetensors")
    with pytest.raises(SystemExit) as caught:
        main(["--expert", str(path), "--data", str(_write_folder(tmp_path / "data")), "--out", str(tmp_path / "o")])
    assert caught.value.code == 2 and "choose one with --audio" in capsys.readouterr().err


def test_default_output_folder_is_named_after_expert_and_data(tmp_path: Path) -> None:
    assert default_out("procedural_mel_rgb", "procedural") == Path("runs/eval/procedural_mel_rgb_procedural")
    assert default_out("/x/my.safetensors", "procedural:hard", corpus_seeds=range(1, 9)) == Path(
        "runs/eval/my_procedural-hard-seeds1-8")
    assert default_out("mel_rgb", str(tmp_path / "lrs2"), split="val", corpus_seeds=[3, 5]) == Path(
        "runs/eval/mel_rgb_lrs2-seeds3_5-val")
    assert parse_seeds("1-3,7") == [1, 2, 3, 7]


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
