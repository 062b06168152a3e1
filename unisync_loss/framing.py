r"""THE face crop: where a face sits in the square crops that rgb and parsing experts see.

One definition for every producer of face crops: ``unisync score`` and ``unisync prepare`` cut real
frames with it (:func:`unisync_loss.faces.crop_boxes` from dlib landmarks) and the procedural corpus
renders through it (``pretrain.synth.face`` derives its fixed camera box from these constants and
its mean face), so an expert trained on the corpus reads the mouth where real crops put it.

The crop is a square, axis-aligned box fixed by two points of the face, the centre of the eyes
(iBUG points 36-47) and the centre of the mouth (48-67)::

    side   = |mouth - eyes| / EYE_MOUTH_SHARE
    centre = eyes + CENTRE_ALONG * (mouth - eyes)

so in the crop the eye centre lies at :data:`EYES_AT` (0.296) and the mouth centre at
:data:`MOUTH_AT` (0.716) of the height, horizontally in the middle: forehead to just below the
chin, cheek to cheek, the mouth in the lower half (what rgb experts crop and look at)::

    +------------------+  0
    |    (forehead)    |
    |   o          o   |  0.296  eyes
    |        /\        |
    |                  |  0.5    the expert's lower-half crop starts here
    |      ~~~~~~      |  0.716  mouth
    |     \______/     |         chin
    +------------------+  1

The two constants are the corpus's framing of its neutral mean face, to double precision (the
corpus's frames are the same as before this module existed). A face detector's box frames faces
differently (dlib's HOG box puts the mouth at about 0.64 and shows less below the chin); experts
can be made robust to such differences with ``pretrain``'s framing augmentation.

SyncNet v2 (syncnet_python) frames its 224 x 224 crops from a face-detector box instead:
:func:`syncnet_v2_boxes` turns a detector box into its crop (crop scale 0.4), and
:func:`unisync_loss.faces.detector_boxes` gives such a box from landmarks.
"""
from __future__ import annotations

import torch
from torch import Tensor

EYE_MOUTH_SHARE = 0.4198730158730159
"""Eye-centre to mouth-centre distance as a share of the crop side."""
CENTRE_ALONG = 0.4857855738696506
"""Where the crop centre lies on the eye -> mouth line (0 = eyes, 1 = mouth)."""
EYES_AT = 0.5 - CENTRE_ALONG * EYE_MOUTH_SHARE
"""Height of the eye centre in the crop, as a share of the side from the top (0.296)."""
MOUTH_AT = EYES_AT + EYE_MOUTH_SHARE
"""Height of the mouth centre in the crop, as a share of the side from the top (0.716)."""

SYNCNET_V2_CROP_SCALE = 0.4
"""syncnet_python's ``crop_scale``: padding of its crop around the detector box."""
SYNCNET_V2_SIZE = 224
"""Side of SyncNet v2's face crops in pixels."""
SYNCNET_V2_PAD = 110
"""Grey value syncnet_python pads frames with where its crop leaves the frame."""


def crop_box(eyes: Tensor, mouth: Tensor) -> Tensor:
    """The face crop ``(..., 3)`` = (centre x, centre y, side) from eye and mouth centres ``(..., 2)``.

    Points in any frame with a common scale on both axes (pixels, y down, as detectors give;
    or y up: the centre follows the points either way).
    """
    if eyes.shape != mouth.shape or eyes.shape[-1:] != (2,):
        raise ValueError(f"crop_box: expected eye and mouth centres of one shape (..., 2), got {tuple(eyes.shape)} and {tuple(mouth.shape)}")
    centre = eyes + CENTRE_ALONG * (mouth - eyes)
    side = (mouth - eyes).norm(dim=-1, keepdim=True) / EYE_MOUTH_SHARE
    return torch.cat([centre, side], dim=-1)


def syncnet_v2_boxes(detector: Tensor, crop_scale: float = SYNCNET_V2_CROP_SCALE) -> Tensor:
    """syncnet_python's face crop ``(..., 3)`` (centre x, centre y, side; pixels, y down) from detector boxes ``(..., 3)``.

    ``detector`` holds (centre x, centre y, side) of a square face-detector box. syncnet_python
    (``run_pipeline.crop_video``) takes ``s`` = half the box's larger side and cuts rows
    ``y - s .. y + s (1 + 2 c)`` and columns ``x - s (1 + c) .. x + s (1 + c)`` with ``c = crop_scale``:
    a square of side ``2 s (1 + c)`` whose centre lies ``c s`` below the box's.
    """
    if detector.shape[-1:] != (3,):
        raise ValueError(f"syncnet_v2_boxes: expected detector boxes (..., 3) (centre x, centre y, side), got {tuple(detector.shape)}")
    half = detector[..., 2:] / 2
    centre = detector[..., :2] + torch.cat([torch.zeros_like(half), crop_scale * half], dim=-1)
    return torch.cat([centre, 2 * half * (1 + crop_scale)], dim=-1)
