"""Cutting model-ready windows from canonical per-clip tensors: values, layouts, validity, errors."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import Tensor

from unisync_loss.audio import log_mel, mel_start, mel_steps
from unisync_loss.windows import cut_windows, num_valid_windows, num_windows, time_length, valid_starts, window_count

N_FRAMES = 20


def canonical_clip(n_frames: int = N_FRAMES, seed: int = 0) -> dict[str, Tensor]:
    """Random canonical tensors of one clip (mel from 640 samples per frame, as a 25 fps clip)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "mel": log_mel(0.1 * torch.randn(640 * n_frames, generator=g)),
        "hubert": torch.randn(2 * n_frames, 24, generator=g),
        "rgb": torch.randint(0, 256, (n_frames, 3, 12, 10), generator=g, dtype=torch.uint8),
        "parsing": torch.randint(0, 19, (n_frames, 12, 10), generator=g, dtype=torch.uint8),
        "landmarks": torch.randn(n_frames, 68, 3, generator=g),
        "3dmm": torch.randn(n_frames, 16, generator=g),
    }


def reference_window(clip: Tensor, name: str, i: int, window: int) -> Tensor:
    """One window by plain slicing, in the model-side layout (unbatched)."""
    if name == "mel":
        return clip[None, :, mel_start(i) : mel_start(i) + mel_steps(window)]
    if name == "hubert":
        return clip[2 * i : 2 * i + 2 * window]
    frames = clip[i : i + window]
    if name == "rgb":
        return frames.transpose(0, 1).float() / 255
    if name == "parsing":
        return frames.long() if clip.ndim == 3 else frames.transpose(0, 1)
    return frames


def test_counts() -> None:
    assert [num_windows(n, 5) for n in (0, 4, 5, 20)] == [0, 0, 1, 16]
    for window in (1, 5, 16):
        for length in range(120):
            brute = sum(mel_start(i) + mel_steps(window) <= length for i in range(200))
            assert window_count("mel", length, window) == brute
    assert window_count("hubert", 40, 5) == 16 and window_count("hubert", 41, 5) == 16 and window_count("hubert", 39, 5) == 15
    assert window_count("3dmm", 20, 16) == 5
    with pytest.raises(ValueError, match="unknown representation 'wav'"):
        window_count("wav", 10, 5)
    with pytest.raises(ValueError, match="window T must be a positive integer"):
        num_windows(10, 0)


@pytest.mark.parametrize("name", ["mel", "hubert", "rgb", "parsing", "landmarks", "3dmm"])
@pytest.mark.parametrize("window", [5, 16])
def test_cut_windows_equal_slices(name: str, window: int) -> None:
    clip = canonical_clip()[name]
    starts = torch.tensor([0, 3, 1, N_FRAMES - window])
    windows = cut_windows(clip, name, starts, window)
    expected = torch.stack([reference_window(clip, name, int(i), window) for i in starts])
    assert windows.dtype == expected.dtype
    torch.testing.assert_close(windows, expected, rtol=0, atol=0)


def test_layouts_and_dtypes() -> None:
    clip = canonical_clip()
    starts = [2, 5, 9]
    shapes = {name: tuple(cut_windows(tensor, name, starts, 5).shape) for name, tensor in clip.items()}
    assert shapes == {
        "mel": (3, 1, 80, 16),
        "hubert": (3, 10, 24),
        "rgb": (3, 3, 5, 12, 10),
        "parsing": (3, 5, 12, 10),
        "landmarks": (3, 5, 68, 3),
        "3dmm": (3, 5, 16),
    }
    rgb = cut_windows(clip["rgb"], "rgb", starts, 5)
    assert rgb.dtype == torch.float32 and 0 <= rgb.min() and rgb.max() <= 1
    as_float = clip["rgb"].float() / 255
    torch.testing.assert_close(cut_windows(as_float, "rgb", starts, 5), rgb)
    assert cut_windows(clip["parsing"], "parsing", starts, 5).dtype == torch.long
    probs = torch.rand(N_FRAMES, 19, 12, 10).softmax(dim=1)
    cut = cut_windows(probs, "parsing", starts, 5)
    assert cut.shape == (3, 19, 5, 12, 10)
    torch.testing.assert_close(cut[1, :, 4], probs[9])
    assert cut_windows(clip["3dmm"], "3dmm", torch.empty(0, dtype=torch.long), 5).shape == (0, 5, 16)


def test_windows_satisfy_the_model_contract(make_model: Callable) -> None:
    model = make_model(["mel", "hubert"], ["rgb", "parsing", "landmarks", "3dmm"])
    clip = canonical_clip()
    clip["rgb"] = torch.randint(0, 256, (N_FRAMES, 3, 40, 40), dtype=torch.uint8)
    for name, tensor in clip.items():
        model.validate(cut_windows(tensor, name, valid_starts(clip, 5), 5), name)


def test_valid_starts_follow_the_shorter_stream() -> None:
    clip = canonical_clip()
    assert time_length(clip["mel"], "mel") == 1 + 640 * N_FRAMES // 200 == 65
    assert num_valid_windows(clip, 5) == N_FRAMES - 4
    assert torch.equal(valid_starts(clip, 5), torch.arange(N_FRAMES - 4))
    # The last window ends exactly at column 3.2 * 20 = 64: one mel column shorter loses it.
    short = {"mel": clip["mel"][:, :-2], "rgb": clip["rgb"]}
    assert num_valid_windows(short, 5) == N_FRAMES - 5
    assert num_valid_windows({"mel": clip["mel"], "3dmm": clip["3dmm"][:-3]}, 5) == N_FRAMES - 7
    assert num_valid_windows({"hubert": clip["hubert"][:-1], "rgb": clip["rgb"]}, 5) == N_FRAMES - 5
    with pytest.raises(ValueError, match=r"mel: window starts must lie in \[0, 14\]"):
        cut_windows(short["mel"], "mel", [15], 5)
    with pytest.raises(ValueError, match=r"got starts in \[-1, 3\]"):
        cut_windows(clip["3dmm"], "3dmm", [3, -1], 5)


@pytest.mark.parametrize(
    "name, tensor, expected",
    [
        ("mel", torch.zeros(40, 30), r"mel: expected a canonical clip tensor \(80, F\), got \(40, 30\)"),
        ("mel", torch.zeros(1, 80, 30), r"\(80, F\), got \(1, 80, 30\)"),
        ("hubert", torch.zeros(10, 24, dtype=torch.int64), r"hubert: .*\(2n, D\), got \(10, 24\) torch.int64"),
        ("rgb", torch.zeros(10, 4, 8, 8, dtype=torch.uint8), r"rgb: .*\(n, 3, H, W\), got \(10, 4, 8, 8\)"),
        ("rgb", torch.zeros(10, 3, 8, 8, dtype=torch.int32), r"rgb: .*got \(10, 3, 8, 8\) torch.int32"),
        ("parsing", torch.zeros(10, 8, 8), r"parsing: .*integer labels.*got \(10, 8, 8\) torch.float32"),
        ("landmarks", torch.zeros(10, 68, 4), r"landmarks: .*\(n, N, 2 or 3\), got \(10, 68, 4\)"),
        ("3dmm", torch.zeros(10, 4, 16), r"3dmm: .*\(n, D\), got \(10, 4, 16\)"),
        ("3dmm", [[0.0]], r"3dmm: expected a canonical clip tensor \(n, D\), got list"),
        ("video", torch.zeros(10, 3), r"unknown representation 'video'"),
    ],
)
def test_bad_clips_raise(name: str, tensor: Tensor, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        cut_windows(tensor, name, [0], 5)


def test_bad_starts_raise() -> None:
    clip = canonical_clip()["3dmm"]
    for starts in (torch.tensor([[0, 1]]), torch.tensor([0.0, 1.0]), torch.tensor([True])):
        with pytest.raises(ValueError, match="3dmm: starts must be a 1-D integer sequence"):
            cut_windows(clip, "3dmm", starts, 5)
