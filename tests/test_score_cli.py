"""``unisync score`` / ``batch`` on videos: known audio shifts recovered, bad media as one-line errors (exit 2)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from media_files import write_video  # noqa: E402
from unisync_loss.audio import write_wav  # noqa: E402
from unisync_loss.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = (-10, -3, 0, 5, 10)


def run_cli(*args: str) -> tuple[int, str, str]:
    """``unisync ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as stop:
            status = stop.code
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def corpus_clips():
    """Two 3 s procedural clips of speakers the bundled experts never trained on: (frames (n, H, W, 3) uint8, wave)."""
    from pretrain.synth.clip import generate_clip
    from pretrain.synth.speakers import make_speaker

    clips = [generate_clip(make_speaker(0, index, "default"), seconds=3.0, preset="default", seed=0, clip_index=1)
             for index in (30, 31)]
    return [(clip.rgb.permute(0, 2, 3, 1).numpy(), clip.wave.numpy()) for clip in clips]


def shifted_video(path: Path, frames: np.ndarray, wave: np.ndarray, shift: int) -> Path:
    """An mp4 whose audio lags its video by ``shift`` frames (cropping: k > 0 drops frames, k < 0 audio)."""
    if shift >= 0:
        return write_video(path, frames[shift:], wave)
    return write_video(path, frames, wave[-shift * 640:])


def test_score_recovers_known_audio_shifts_of_corpus_mp4s(tmp_path: Path, corpus_clips) -> None:
    """Acceptance: the bundled mel x rgb expert finds k within +-1 frame for >= 90 % of (clip, k) cases."""
    found = []
    for number, (frames, wave) in enumerate(corpus_clips):
        for shift in SHIFTS:
            video = shifted_video(tmp_path / f"c{number}_{shift}.mp4", frames, wave, shift)
            status, out, err = run_cli("score", str(video), "--expert", "procedural_mel_rgb", "--face-crops", "--json")
            assert status == 0, err
            result = json.loads(out)
            found.append((shift, result["offset_frames"]))
            assert result["offset_ms"] == 40 * result["offset_frames"]
            assert len(result["p_sync_over_time"]) == result["windows"] and len(result["p_sync_per_offset"]) == 31
    correct = sum(abs(offset - shift) <= 1 for shift, offset in found)
    assert correct >= 0.9 * len(found), found


def test_score_plot_and_summary_line(tmp_path: Path, corpus_clips) -> None:
    frames, wave = corpus_clips[0]
    video = shifted_video(tmp_path / "c.mp4", frames, wave, 5)
    status, out, err = run_cli("score", str(video), "--expert", "procedural_mel_rgb", "--face-crops", "--plot", str(tmp_path / "p.png"))
    assert status == 0, err
    assert "offset +5 frames (+200 ms, audio lags video)" in out and "confidence" in out
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_batch_scores_every_clip_and_records_failures(tmp_path: Path, corpus_clips) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    frames, wave = corpus_clips[0]
    shifted_video(folder / "a.mp4", frames, wave, 0)
    shifted_video(folder / "b.mp4", frames, wave, -5)
    write_video(folder / "c.mp4", frames[:20], None)  # no audio: a failed row, the batch goes on
    status, out, err = run_cli("batch", str(folder), "--out", str(tmp_path / "r.csv"), "--expert", "procedural_mel_rgb", "--face-crops")
    assert status == 0, err
    rows = list(csv.DictReader(open(tmp_path / "r.csv", encoding="utf-8")))
    assert [(Path(r["video"]).name, r["status"]) for r in rows] == [("a.mp4", "ok"), ("b.mp4", "ok"), ("c.mp4", "failed")]
    assert [int(r["offset_frames"]) for r in rows[:2]] == [0, -5] and "no audio stream" in rows[2]["error"]
    summary = json.loads(out)
    assert (summary["ok"], summary["failed"]) == (2, 1) and "scoring: 3/3" in err


def _bad_media(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(case, unisync arguments, expected message) for the bad-media table."""
    gray = np.full((12, 64, 64, 3), 128, np.uint8)
    tone = (0.3 * np.sin(np.arange(16_000) / 5)).astype(np.float32)
    (tmp / "text.mp4").write_text("not a video")
    (tmp / "empty.mp4").write_bytes(b"")
    silent = write_video(tmp / "silent.mp4", gray, None)
    sound_only = write_video(tmp / "sound.m4a", None, tone)
    gray_av = write_video(tmp / "gray.mp4", gray, tone)
    no_frames = write_video(tmp / "noframes.mp4", np.zeros((0, 64, 64, 3), np.uint8), tone)
    good = write_video(tmp / "good.mp4", np.full((40, 64, 64, 3), 128, np.uint8), np.tile(tone, 2))
    truncated = tmp / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:600])
    short_wav = write_wav(tmp / "short.wav", torch.zeros(1_000))
    empty_wav = write_wav(tmp / "empty.wav", torch.zeros(0))
    (tmp / "broken.safetensors").write_bytes(b"\x00" * 20)
    rgb = ["--expert", "procedural_mel_rgb", "--face-crops"]
    return [
        ("missing file", ["score", str(tmp / "nope.mp4"), *rgb], "nope.mp4: file not found"),
        ("not a media file", ["score", str(tmp / "text.mp4"), *rgb], "not a readable media file"),
        ("empty file", ["score", str(tmp / "empty.mp4"), *rgb], "not a readable media file"),
        ("truncated file", ["score", str(truncated), *rgb], "not a readable media file"),
        ("no audio stream", ["score", str(silent), *rgb], "no audio stream"),
        ("no video stream", ["score", str(sound_only), *rgb], "no video stream"),
        ("zero-length video (the muxer keeps no empty stream)", ["score", str(no_frames), *rgb], "no video stream"),
        ("zero-length audio", ["score", str(silent), "--audio", str(empty_wav), *rgb], "holds no sample (zero-length audio)"),
        ("missing audio file", ["score", str(silent), "--audio", str(tmp / "nope.wav"), *rgb], "nope.wav: file not found"),
        ("audio shorter than one window", ["score", str(silent), "--audio", str(short_wav), *rgb], "audio 0.06 s, one window = 0.20 s"),
        ("no face found", ["score", str(gray_av), "--expert", "procedural_mel_landmarks"], "no face found in any of the 12 frames"),
        ("expert without a video head", ["score", str(good), "--expert", "procedural_mel_3dmm"], "scoring video needs a visual head"),
        ("expert without a mel head", ["score", str(good), "--expert", "procedural_hubert_rgb"], "needs a mel head"),
        ("face crops for a landmark expert", ["score", str(good), "--expert", "procedural_mel_landmarks", "--face-crops"], "only an rgb expert reads"),
        ("expert not found", ["score", str(good), "--expert", "no_such_expert"], "expert not found: no_such_expert"),
        ("corrupt expert file", ["score", str(good), "--expert", str(tmp / "broken.safetensors")], "not a readable safetensors file"),
        ("batch input missing", ["batch", str(tmp / "nothing"), "--out", str(tmp / "r.csv"), *rgb], "neither a folder of videos nor a list file"),
        ("prepare without faces", ["prepare", str(gray_av), "--out", str(tmp / "data")], "no face segment of >= 25 frames"),
    ]


def test_bad_media_table_one_line_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    cases = _bad_media(tmp_path)
    assert len(cases) >= 12
    for case, args, message in cases:
        status, _, err = run_cli(*args)
        assert status == 2, (case, status, err)
        lines = err.strip().splitlines()
        assert lines and message in lines[-1], (case, err)
        assert "Traceback" not in err and len([l for l in lines if l.startswith("unisync")]) == 1, (case, err)


def test_command_line_exit_status_in_a_subprocess(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "unisync_loss.cli", "score", str(tmp_path / "missing.mp4")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == f"unisync score: {tmp_path / 'missing.mp4'}: file not found"


def test_vad_leaves_windows_without_speech_out(tmp_path: Path, corpus_clips) -> None:
    pytest.importorskip("silero_vad")
    frames, wave = corpus_clips[0]
    quiet = wave.copy()
    quiet[len(wave) // 2:] = 0.0  # the second half silent
    video = write_video(tmp_path / "q.mp4", frames, quiet)
    args = ["score", str(video), "--expert", "procedural_mel_rgb", "--face-crops", "--json"]
    (status_all, out_all, _), (status_vad, out_vad, err) = run_cli(*args), run_cli(*args, "--vad")
    assert status_all == status_vad == 0, err
    everything, speech = json.loads(out_all), json.loads(out_vad)
    assert speech["speech_frames"] < 0.6 * speech["frames"]
    assert speech["windows"] < 0.7 * everything["windows"] and speech["offset_frames"] == 0


def test_score_with_wav2lips_checkpoint_and_its_converted_file(tmp_path: Path, corpus_clips) -> None:
    """`--expert wav2lip:PATH` scores a clip with Wav2Lip's expert (random weights, Wav2Lip's checkpoint layout);
    the converted .safetensors gives the same result."""
    from unisync_loss.thirdparty import Wav2LipSyncNet, convert_checkpoint

    torch.manual_seed(0)
    state = {f"module.{name}": value for name, value in Wav2LipSyncNet().state_dict().items()}
    checkpoint = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": state, "global_step": 1, "global_epoch": 0}, checkpoint)
    converted = convert_checkpoint(f"wav2lip:{checkpoint}", tmp_path / "wav2lip_expert.safetensors")
    frames, wave = corpus_clips[0]
    video = shifted_video(tmp_path / "c.mp4", frames, wave, 0)
    results = []
    for expert in (f"wav2lip:{checkpoint}", str(converted)):
        status, out, err = run_cli("score", str(video), "--expert", expert, "--face-crops", "--json")
        assert status == 0, err
        results.append(json.loads(out))
    assert results[0]["windows"] == len(frames) - 4 and -15 <= results[0]["offset_frames"] <= 15
    assert all(0.0 <= p <= 1.0 for p in results[0]["p_sync_per_offset"])
    assert results[0]["p_sync_per_offset"] == pytest.approx(results[1]["p_sync_per_offset"], abs=1e-6)
    assert results[0]["measure"] == "cosine"


def test_score_and_batch_with_syncnet_v2s_checkpoint_and_its_converted_file(tmp_path: Path, corpus_clips) -> None:
    """`--expert syncnet_v2:PATH`: syncnet_python's LSE-D / LSE-C (Euclidean, its offset sign, ±15), same from the converted file."""
    from unisync_loss.thirdparty import SyncNetV2, convert_checkpoint

    torch.manual_seed(1)
    checkpoint = tmp_path / "syncnet_v2.model"
    state = {k: v for k, v in SyncNetV2().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, checkpoint, _use_new_zipfile_serialization=False)  # syncnet_python's layout
    converted = convert_checkpoint(f"syncnet_v2:{checkpoint}", tmp_path / "syncnet_v2.safetensors")
    frames, wave = corpus_clips[0]
    video = write_video(tmp_path / "short.mp4", frames[:30], wave[:30 * 640])  # 1.2 s: SyncNet v2 is slow on a CPU
    status, out, err = run_cli("score", str(video), "--expert", f"syncnet_v2:{checkpoint}", "--face-crops", "--json",
                               "--plot", str(tmp_path / "syncnet.png"))
    assert status == 0, err
    result = json.loads(out)
    assert result["measure"] == "euclidean" and result["pair"] == "mfcc x rgb" and result["p_sync"] is None
    assert result["windows"] == 30 - 5  # syncnet_python scores min(frames, samples / 640) - 5 windows
    profile = result["distance_per_offset"]
    assert len(profile) == 31 and result["lse_d"] == pytest.approx(min(profile), abs=1e-5) == result["distance"]
    assert result["lse_c"] == pytest.approx(float(np.median(profile)) - min(profile), abs=1e-4)
    assert result["offset_frames"] == int(np.argmin(profile)) - 15 == -result["syncnet_offset"]
    assert (tmp_path / "syncnet.png").stat().st_size > 0
    batch_out = tmp_path / "syncnet.csv"
    status, out, err = run_cli("batch", str(video.parent), "--expert", str(converted), "--face-crops", "--out", str(batch_out))
    assert status == 0, err
    rows = list(csv.DictReader(batch_out.open()))
    assert [row["status"] for row in rows] == ["ok"] and rows[0]["measure"] == "euclidean"
    assert float(rows[0]["distance"]) == pytest.approx(result["lse_d"], rel=1e-5) and rows[0]["p_sync"] == ""
