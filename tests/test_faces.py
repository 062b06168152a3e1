"""The face crop (matched to the corpus's framing), gaps, smoothing; real clips end to end when ../shared/real exists."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unisync_loss.faces import crop_boxes, crop_faces, detector_boxes, fill_gaps, smooth_over_time
from unisync_loss.framing import EYES_AT, MOUTH_AT, crop_box, syncnet_v2_boxes

REAL = Path(__file__).resolve().parents[2] / "shared" / "real"


def test_crop_from_landmarks_reproduces_the_corpus_framing() -> None:
    """On the corpus's own 96 px crops, the crop from landmarks is the whole image up to head motion.

    (The corpus renders through a fixed box, so its heads wander a few pixels around the centre.)
    """
    from pretrain.synth.clip import generate_clip
    from pretrain.synth.speakers import make_speaker

    clip = generate_clip(make_speaker(0, 3, "default"), seconds=1.0, preset="default", seed=0)
    boxes = crop_boxes(clip.landmarks2d)
    centre, side = boxes[:, :2].mean(dim=0), boxes[:, 2].mean()
    assert abs(float(side) - 96) < 0.1 * 96 and (centre - 48).abs().max() < 0.1 * 96, boxes.mean(dim=0)


def test_the_corpus_camera_is_the_framing_of_its_mean_face() -> None:
    """One definition (unisync_loss.framing): the corpus's box is the crop of its mean face, exactly its old box."""
    from pretrain.synth.face import FaceModel, crop_window, project

    assert crop_window() == ((0.0, -0.1), 1.05)  # the numbers the corpus always rendered with: same frames
    mean = torch.from_numpy(project(FaceModel.default().mean[None], 96)[0]).double()  # (68, 2) pixels, y down
    eyes, mouth = mean[36:48].mean(dim=0), mean[48:68].mean(dim=0)
    torch.testing.assert_close(crop_box(eyes, mouth), torch.tensor([48.0, 48.0, 96.0], dtype=torch.float64))
    assert float(eyes[1]) / 96 == pytest.approx(EYES_AT) and float(mouth[1]) / 96 == pytest.approx(MOUTH_AT)
    assert 0.29 < EYES_AT < 0.30 and 0.71 < MOUTH_AT < 0.72


def test_syncnet_v2_crop_is_syncnet_pythons() -> None:
    """Detector box (x, y, 2s) -> rows y - s .. y + s(1 + 2c), columns x - s(1 + c) .. x + s(1 + c), c = 0.4."""
    x, y, s = 300.0, 200.0, 50.0
    cx, cy, side = syncnet_v2_boxes(torch.tensor([x, y, 2 * s])).tolist()
    assert (cy - side / 2, cy + side / 2) == pytest.approx((y - s, y + s * 1.8))
    assert (cx - side / 2, cx + side / 2) == pytest.approx((x - s * 1.4, x + s * 1.4))
    points = torch.rand(3, 68, 2) * 100 + 50  # landmarks spanning 100 px: the HOG-like box is 108 px
    boxes = detector_boxes(points, box_smoothing=1)
    extent = (points.amax(dim=1) - points.amin(dim=1)).amax(dim=-1)
    torch.testing.assert_close(boxes[:, 2], 1.08 * extent)


def test_crop_faces_cuts_the_box_and_pads_black() -> None:
    frames = torch.zeros(2, 100, 200, 3, dtype=torch.uint8)
    frames[:, 40:60, 90:110] = 200  # a 20 px square centred at (100, 50)
    boxes = torch.tensor([[100.0, 50.0, 20.0], [float("nan")] * 3])
    crops = crop_faces(frames, boxes, size=10)
    assert crops.shape == (2, 3, 10, 10) and crops.dtype == torch.uint8
    assert (crops[0] == 200).all() and (crops[1] == 0).all()
    edge = crop_faces(frames[:1], torch.tensor([[0.0, 0.0, 20.0]]), size=10)
    assert (edge[0, :, :5, :5] == 0).all()  # outside the frame is black
    grey = crop_faces(frames[:1], torch.tensor([[0.0, 0.0, 20.0]]), size=10, fill=110)
    assert (grey[0, :, :4, :4] == 110).all() and (grey[0, :, 6:, 6:] == 0).all()  # syncnet_python's padding


def test_short_gaps_are_filled_long_gaps_stay_open() -> None:
    points = torch.arange(10, dtype=torch.float32)[:, None, None].expand(10, 68, 2).clone()
    points[3] = float("nan")  # a 1-frame gap: filled
    points[6:9] = float("nan")  # a 3-frame gap: left open with max_gap 2
    filled, mask = fill_gaps(points, max_gap=2)
    assert mask.tolist() == [False] * 3 + [True] + [False] * 6
    assert float(filled[3, 0, 0]) == 3.0 and torch.isnan(filled[6:9]).all()
    smoothed = smooth_over_time(filled, 3)
    torch.testing.assert_close(smoothed[:6], filled[:6])  # linear ramps are unchanged
    assert torch.isnan(smoothed[6:9]).all() and float(smoothed[9, 0, 0]) == 9.0


@pytest.fixture(scope="module")
def real_short(tmp_path_factory):
    """The first 2 s of latentsync_demo3.mp4 (re-encoded to a temporary file), or a skip."""
    pytest.importorskip("dlib")
    pytest.importorskip("av")
    source = REAL / "latentsync_demo3.mp4"
    if not source.is_file():
        pytest.skip("../shared/real is absent")
    from media_files import write_video
    from unisync_loss.media import read_media

    media = read_media(source)
    path = tmp_path_factory.mktemp("real") / "short.mp4"
    return write_video(path, media.frames[:50].numpy(), media.wave[:2 * 16_000].numpy())


def test_real_clip_prepare_then_score_end_to_end(tmp_path: Path, real_short: Path) -> None:
    from test_score_cli import run_cli

    from pretrain.data import FolderSource

    status, out, err = run_cli("prepare", str(real_short), "--out", str(tmp_path / "data"), "--split", "test")
    assert status == 0, err
    clips = json.loads(out)["clips"]
    assert clips == ["short/short_000"]
    source = FolderSource(tmp_path / "data", "test")
    loaded = source.load(0, ["mel", "rgb", "landmarks"])
    assert loaded["rgb"].shape == (50, 3, 96, 96) and loaded["landmarks"].shape == (50, 68, 2)
    assert abs(loaded["mel"].shape[1] - 161) <= 1
    mouth = loaded["landmarks"][:, 48:68].mean(dim=1)
    eyes = loaded["landmarks"][:, 36:48].mean(dim=1)
    assert (eyes[:, 1] > mouth[:, 1]).all()  # y up: the eyes above the mouth, as in the corpus
    status, out, err = run_cli("score", str(real_short), "--expert", "procedural_mel_landmarks", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["faces"]["none"] == 0 and result["windows"] == 46 and abs(result["offset_frames"]) <= 15
