"""The Wav2Lip-compatible log-mel against a librosa reference, batching, devices, gradients and WAV I/O."""
from __future__ import annotations

import inspect
import wave as wave_io
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

import unisync_loss.audio as audio
from unisync_loss.audio import SAMPLE_RATE, LogMel, log_mel, mel_filterbank, mel_start, mel_steps, read_wav, write_wav

LENGTHS = (16_000, 12_345, 7_999, 3_201, 200, 150)


def speech_like(num_samples: int, seed: int) -> np.ndarray:
    """Float32 'speech': glottal pulses with gliding f0 through formant resonances, noise bursts, silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SAMPLE_RATE
    f0 = 110.0 + 60.0 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6)) + 20.0 * rng.standard_normal()
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
    source = scipy.signal.lfilter([1.0], [1.0, -0.95], pulses)  # glottal roll-off
    voiced = np.zeros(num_samples)
    for formant, bandwidth in ((rng.uniform(500, 800), 80.0), (rng.uniform(1000, 1800), 120.0), (rng.uniform(2300, 3000), 200.0)):
        radius = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        poles = [1.0, -2 * radius * np.cos(2 * np.pi * formant / SAMPLE_RATE), radius**2]
        voiced += scipy.signal.lfilter([1.0 - radius], poles, source)
    voiced *= 0.5 / max(np.abs(voiced).max(), 1e-9)
    envelope = (np.sin(2 * np.pi * 2.0 * t + rng.uniform(0, 6)) > -0.3).astype(float)  # syllables and pauses
    noise = 0.05 * rng.standard_normal(num_samples) * (np.sin(2 * np.pi * 3.1 * t) > 0.8)  # fricative bursts
    signal = voiced * envelope + noise
    signal[: num_samples // 8] = 0.0  # leading silence
    return np.clip(signal, -1, 1).astype(np.float32)


def wav2lip_reference(wave: np.ndarray) -> np.ndarray:
    """Wav2Lip's melspectrogram with its hparams, written with librosa / scipy: (80, 1 + S // 200)."""
    emphasised = scipy.signal.lfilter([1, -0.97], [1], wave)
    magnitude = np.abs(librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    decibels = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20
    return np.clip(8 * (decibels + 100) / 100 - 4, -4, 4)


def test_librosa_stft_pads_with_zeros() -> None:
    """Wav2Lip calls librosa.stft with default padding: zeros (``constant``) since librosa 0.10, which LogMel uses."""
    assert inspect.signature(librosa.stft).parameters["pad_mode"].default == "constant"


def test_filterbank_equals_librosa() -> None:
    ours = mel_filterbank().numpy()
    theirs = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, dtype=np.float64)
    assert ours.shape == (80, 401)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:n_fft=800 is too large")
@pytest.mark.parametrize("num_samples", LENGTHS)
def test_log_mel_matches_wav2lip_reference(num_samples: int) -> None:
    wave = speech_like(num_samples + 4_000, seed=num_samples)[4_000:]  # skip the leading silence
    reference = wav2lip_reference(wave)
    ours = log_mel(torch.from_numpy(wave))
    assert ours.dtype == torch.float32 and ours.shape == (80, 1 + num_samples // 200) == reference.shape
    assert np.abs(ours.numpy() - reference).max() <= 1e-4
    assert reference.max() > -1.0  # not silence


def test_log_mel_float64_is_tighter() -> None:
    wave = speech_like(8_000, seed=3)
    ours = log_mel(torch.from_numpy(wave).double())
    assert ours.dtype == torch.float64
    assert np.abs(ours.numpy() - wav2lip_reference(wave)).max() <= 1e-6


def test_silence_and_full_scale_hit_the_clipping_limits() -> None:
    assert torch.equal(log_mel(torch.zeros(1_000)), torch.full((80, 6), -4.0))
    loud = torch.from_numpy(8 * np.sign(np.sin(np.arange(4_000) * 0.3)).astype(np.float32))
    assert log_mel(loud).max() == 4.0


def test_batch_equals_per_item() -> None:
    waves = torch.from_numpy(np.stack([speech_like(6_401, seed) for seed in range(3)]))
    batched = log_mel(waves)
    assert batched.shape == (3, 80, 33)
    for item, wave in zip(batched, waves):
        torch.testing.assert_close(item, log_mel(wave), rtol=0, atol=1e-5)


def test_module_matches_functional_and_functional_reuses_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    wave = torch.from_numpy(speech_like(4_000, seed=1))
    first = log_mel(wave)
    module = LogMel()
    assert {name for name, _ in module.named_buffers()} == {"window", "filterbank"}
    assert module.filterbank.shape == (80, 401) and module.window.shape == (800,)
    torch.testing.assert_close(module(wave), first, rtol=0, atol=0)

    def no_rebuild() -> torch.Tensor:
        raise AssertionError("log_mel rebuilt its filterbank")

    monkeypatch.setattr(audio, "mel_filterbank", no_rebuild)
    torch.testing.assert_close(log_mel(wave), first, rtol=0, atol=0)


def test_gradients_flow_to_the_wave() -> None:
    generator = torch.Generator().manual_seed(0)
    wave = (0.1 * torch.randn(600, generator=generator, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(LogMel(torch.float64), (wave,), eps=1e-6, atol=1e-5)
    wave32 = torch.from_numpy(speech_like(3_000, seed=2)).requires_grad_()
    log_mel(wave32).sum().backward()
    assert torch.isfinite(wave32.grad).all() and wave32.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 100), torch.zeros(100, dtype=torch.int16), np.zeros(100, np.float32)])
def test_bad_waves_raise(bad: object) -> None:
    with pytest.raises(ValueError, match="waveform"):
        log_mel(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compute_dtype"):
        LogMel(torch.int32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_cuda_matches_cpu() -> None:
    waves = torch.from_numpy(np.stack([speech_like(12_345, seed) for seed in range(2)]))
    on_gpu = log_mel(waves.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), log_mel(waves), rtol=0, atol=1e-4)
    assert np.abs(on_gpu[0].cpu().numpy() - wav2lip_reference(waves[0].numpy())).max() <= 1e-4


def test_time_base() -> None:
    assert [mel_steps(t) for t in (5, 16)] == [16, 52]
    assert [mel_start(i) for i in (0, 1, 2, 5, 25)] == [0, 3, 6, 16, 80]
    assert all(mel_start(i) == int(80 * i / 25) for i in range(1000))


def test_wav_round_trip(tmp_path: Path) -> None:
    wave = torch.from_numpy(speech_like(5_000, seed=4))
    path = write_wav(tmp_path / "a.wav", wave)
    loaded, rate = read_wav(path, sample_rate=SAMPLE_RATE)
    assert rate == SAMPLE_RATE and loaded.dtype == torch.float32 and loaded.shape == wave.shape
    assert (loaded - wave).abs().max() <= 1.5 / 32768
    with wave_io.open(str(path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, SAMPLE_RATE)
    write_wav(tmp_path / "b.wav", torch.tensor([2.0, -2.0]))
    assert read_wav(tmp_path / "b.wav")[0].tolist() == [32767 / 32768, -1.0]


def _write_raw(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    with wave_io.open(str(path), "wb") as f:
        f.setnchannels(samples.shape[1])
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())
    return path


def test_read_wav_stereo_rates_and_widths(tmp_path: Path) -> None:
    stereo = np.array([[1000, 3000], [-2000, 0], [32767, -32768]], dtype="<i2")
    loaded, rate = read_wav(_write_raw(tmp_path / "s.wav", stereo, 16_000))
    torch.testing.assert_close(loaded, torch.tensor([2000.0, -1000.0, -0.5]) / 32768)
    other = _write_raw(tmp_path / "r.wav", stereo, 44_100)
    assert read_wav(other)[1] == 44_100
    resampled, rate = read_wav(other, sample_rate=16_000)  # resampled in the library, never a wrong-rate wave
    assert rate == 16_000 and resampled.shape == (2,)
    with pytest.raises(ValueError, match="8-bit samples; expected 16-bit PCM"):
        read_wav(_write_raw(tmp_path / "u8.wav", np.full((4, 1), 128, np.uint8), 16_000, width=1))
    with pytest.raises(ValueError, match=r"mono wave \(S,\)"):
        write_wav(tmp_path / "x.wav", torch.zeros(2, 10))


@pytest.mark.parametrize(("content", "problem"), [(b"", "empty or truncated header"), (b"RIFF\x00\x00\x00\x00WAVE", "unreadable WAV")])
def test_read_wav_names_a_file_that_is_not_a_wav(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "audio.wav"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="expected a 16-bit PCM WAV file") as error:
        read_wav(path)
    assert str(path) in str(error.value) and problem in str(error.value)
