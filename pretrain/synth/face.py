"""A small linear 3D morphable face model (68 iBUG landmarks), head pose and projection.

Geometry of one frame::

    points = mean + id_basis @ id_coeffs + exp_basis @ exp_coeffs      (68, 3), then lip / eyelid contact

Model space: x to the image right (the subject's left), y up, z towards the camera; one model
unit is about half a face width (the jaw spans x in [-0.88, 0.88], chin at y = -1.08, brows at
y ~ 0.6, mouth centre at y = -0.55). Landmarks follow the iBUG-68 order: jaw 0-16, brows 17-26,
nose 27-35, eyes 36-47 (36-41 the subject's right eye, on the image left), outer lips 48-59,
inner lips 60-67.

Expression coefficients (``D_EXP = 64``):

* 0 jaw opening, 1 lip spreading, 2 lip rounding, 3 lip closure - driven by the articulation
  (mouth parameters in [0, 1]);
* 4 left-eye blink (points 42-47), 5 right-eye blink (36-41), 6 brow raise, 7 brow frown, 8 smile;
* 9-63 small random smooth non-speech deformations (low-frequency displacement fields).

The bases are linear; the only non-linearity is a contact constraint: lips and eyelids cannot
pass through each other. Where the linear model puts a lower inner lip (lower eyelid) above its
upper partner, the pair is pushed back to contact along the direction the closing component moved
it. Closure and blink components overshoot on purpose, so ``closure = 1`` shuts the lips for any
jaw opening in [0, 1] and ``blink = 1`` shuts the eye for every identity. The coefficients
therefore fully determine the non-pose geometry.

Non-speech motion (blinks, brows, smile, drift) and head pose are drawn from the random generator
only, never from the mouth parameters, so on the default preset no non-mouth cue can correlate with
speech.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from unisync_loss.audio import VIDEO_FPS
from unisync_loss.framing import CENTRE_ALONG, EYE_MOUTH_SHARE

N_LANDMARKS = 68
D_EXP = 64
N_ID = 12

JAW, SPREAD, ROUND, CLOSURE, BLINK_LEFT, BLINK_RIGHT, BROW_RAISE, BROW_FROWN, SMILE = range(9)
FIRST_DRIFT = 9
MOUTH_COMPONENTS = (JAW, SPREAD, ROUND, CLOSURE)

_EYES = tuple(range(36, 48))
_MOUTH = tuple(range(48, 68))
# Head pose pivot (rotation and scale centre), behind the face surface.
POSE_PIVOT = (0.0, -0.25, -0.35)

_UPPER_INNER = (61, 62, 63)
_LOWER_INNER = (67, 66, 65)
_UPPER_OUTER = (49, 50, 51, 52, 53)
_LOWER_OUTER = (59, 58, 57, 56, 55)
_UPPER_LIP = _UPPER_OUTER + _UPPER_INNER
_LOWER_LIP = _LOWER_OUTER + _LOWER_INNER
_UPPER_LIDS = (37, 38, 43, 44)
_LOWER_LIDS = (41, 40, 47, 46)
# Share of a closing motion carried by the upper partner (the lower partner carries the rest).
_LIP_UPPER_SHARE = 0.35
_LID_UPPER_SHARE = 0.85
# Inner-lip gap closed by closure = 1: 1.25 x the widest opening jaw + spread + round can make.
_CLOSURE_GAP = 1.25 * (0.26 + 0.02 + 0.01 + 0.025 + 0.01 + 0.015)


def _mean_shape() -> np.ndarray:
    """Neutral face with closed lips and open eyes, (68, 3) float64 in model units."""
    half_jaw = [(-0.88, 0.25, -0.60), (-0.86, 0.02, -0.55), (-0.83, -0.21, -0.48), (-0.78, -0.43, -0.38),
                (-0.69, -0.64, -0.27), (-0.56, -0.82, -0.15), (-0.40, -0.96, -0.04), (-0.21, -1.05, 0.04)]
    jaw = half_jaw + [(0.0, -1.08, 0.07)] + [(-x, y, z) for x, y, z in reversed(half_jaw)]
    right_brow = [(-0.70, 0.52, -0.20), (-0.57, 0.61, -0.07), (-0.42, 0.64, 0.02), (-0.27, 0.62, 0.07),
                  (-0.13, 0.57, 0.10)]
    left_brow = [(-x, y, z) for x, y, z in reversed(right_brow)]
    nose = [(0.0, 0.40, 0.12), (0.0, 0.26, 0.20), (0.0, 0.11, 0.28), (0.0, -0.07, 0.38),
            (-0.17, -0.17, 0.18), (-0.09, -0.21, 0.24), (0.0, -0.23, 0.27), (0.09, -0.21, 0.24), (0.17, -0.17, 0.18)]
    right_eye = [(-0.55, 0.33, -0.12), (-0.46, 0.385, -0.03), (-0.33, 0.385, -0.01), (-0.23, 0.32, -0.03),
                 (-0.33, 0.275, -0.01), (-0.46, 0.275, -0.03)]
    left_eye = [(-right_eye[i][0], *right_eye[i][1:]) for i in (3, 2, 1, 0, 5, 4)]
    outer_lips = [(-0.36, -0.55, 0.12), (-0.23, -0.47, 0.24), (-0.09, -0.43, 0.29), (0.0, -0.45, 0.30),
                  (0.09, -0.43, 0.29), (0.23, -0.47, 0.24), (0.36, -0.55, 0.12), (0.23, -0.64, 0.23),
                  (0.10, -0.68, 0.26), (0.0, -0.69, 0.27), (-0.10, -0.68, 0.26), (-0.23, -0.64, 0.23)]
    inner_lips = [(-0.31, -0.55, 0.16), (-0.13, -0.548, 0.25), (0.0, -0.548, 0.27), (0.13, -0.548, 0.25),
                  (0.31, -0.55, 0.16), (0.13, -0.548, 0.25), (0.0, -0.548, 0.27), (-0.13, -0.548, 0.25)]
    points = jaw + right_brow + left_brow + nose + right_eye + left_eye + outer_lips + inner_lips
    return np.asarray(points, dtype=np.float64)


def _chin_weight(mean: np.ndarray) -> np.ndarray:
    """How much each jaw point (0-16) follows the chin: 0 above nostril level (points 0-2), 1 at the
    chin, (17,)."""
    y_hinge, y_chin = -0.25, mean[8, 1]
    return np.clip((y_hinge - mean[:17, 1]) / (y_hinge - y_chin), 0.0, 1.0) ** 1.5


def _mirror_x(mean: np.ndarray, indices: tuple[int, ...], amount: float) -> np.ndarray:
    """Displacement moving ``indices`` outwards (away from x = 0) by ``amount`` x their |x|, (68, 3)."""
    d = np.zeros_like(mean)
    idx = list(indices)
    d[idx, 0] = amount * mean[idx, 0]
    return d


def _identity_basis(mean: np.ndarray) -> np.ndarray:
    """Identity components (one standard deviation each), (68, 3, N_ID) float64.

    0 face width, 1 face length (chin), 2 jaw squareness, 3 mouth width, 4 upper-lip thickness,
    5 lower-lip thickness, 6 nose length, 7 nose width, 8 eye spacing, 9 eye size, 10 brow height,
    11 mouth height.
    """
    b = np.zeros((N_LANDMARKS, 3, N_ID))
    all_points = tuple(range(N_LANDMARKS))
    b[..., 0] = _mirror_x(mean, tuple(range(17)), 0.06) + _mirror_x(mean, all_points[17:], 0.02)
    w = _chin_weight(mean)
    b[:17, 1, 1] = -0.08 * w
    b[48:68, 1, 1] = -0.02
    b[[2, 3, 4, 5, 11, 12, 13, 14], 0, 2] = np.sign(mean[[2, 3, 4, 5, 11, 12, 13, 14], 0]) * 0.04
    b[[6, 7, 9, 10], 0, 2] = np.sign(mean[[6, 7, 9, 10], 0]) * 0.02
    b[..., 3] = _mirror_x(mean, tuple(range(48, 68)), 0.08)
    b[list(_UPPER_OUTER), 1, 4] = 0.02
    b[list(_LOWER_OUTER), 1, 5] = -0.025
    b[[29, 30], 1, 6] = (-0.02, -0.04)
    b[31:36, 1, 6] = -0.04
    b[[31, 35], 0, 7] = (-0.03, 0.03)
    b[[32, 34], 0, 7] = (-0.015, 0.015)
    b[36:48, 0, 8] = np.where(mean[36:48, 0] > 0, 0.03, -0.03)
    for eye in (range(36, 42), range(42, 48)):
        idx = list(eye)
        centre_x = mean[idx, 0].mean()
        b[idx, 0, 9] = 0.07 * (mean[idx, 0] - centre_x)
    b[list(_UPPER_LIDS), 1, 9] = 0.012
    b[list(_LOWER_LIDS), 1, 9] = -0.008
    b[17:27, 1, 10] = 0.04
    b[48:68, 1, 11] = -0.03
    return b


def _smooth_field(rng: np.random.Generator, mean: np.ndarray, rms: float) -> np.ndarray:
    """A random low-frequency displacement field evaluated at the mean shape, (68, 3), RMS ``rms``.

    Points with equal mean position (the closed inner lips) move identically, so drift never opens
    the mouth.
    """
    xy = mean[:, :2]
    d = np.zeros_like(mean)
    for axis in range(3):
        for _ in range(3):
            freq = rng.normal(0.0, 0.6, size=2)
            phase = rng.uniform(0.0, 2.0 * np.pi)
            d[:, axis] += rng.normal() * np.sin(xy @ freq + phase)
    d[:, 2] *= 0.5
    return d * rms / np.sqrt(np.mean(d ** 2))


def _expression_basis(mean: np.ndarray) -> np.ndarray:
    """Expression components per unit coefficient, (68, 3, D_EXP) float64 (see module docstring)."""
    b = np.zeros((N_LANDMARKS, 3, D_EXP))
    w = _chin_weight(mean)
    upper_inner, lower_inner = list(_UPPER_INNER), list(_LOWER_INNER)
    upper_outer, lower_outer = list(_UPPER_OUTER), list(_LOWER_OUTER)
    # jaw opening: chin and lower lip drop, corners follow half way, upper lip lifts slightly.
    jaw = b[..., JAW]
    jaw[:17, 1] = -0.30 * w
    jaw[:17, 2] = -0.05 * w
    jaw[lower_outer, 1] = (-0.20, -0.26, -0.27, -0.26, -0.20)
    jaw[lower_inner, 1] = (-0.22, -0.26, -0.22)
    jaw[[48, 54, 60, 64], 1] = (-0.10, -0.10, -0.11, -0.11)
    jaw[[48, 54, 60, 64], 0] = (0.03, -0.03, 0.03, -0.03)
    jaw[upper_inner + upper_outer, 1] = 0.02
    # spreading: corners out and slightly up, lips thinner, a small gap.
    spread = b[..., SPREAD]
    spread[[48, 54], 0] = (-0.07, 0.07)
    spread[[60, 64], 0] = (-0.06, 0.06)
    spread[[48, 54, 60, 64], 1] = 0.015
    spread[[48, 54], 2] = -0.03
    spread[upper_outer, 1] = -0.015
    spread[lower_outer, 1] = 0.02
    spread[upper_inner, 1] = 0.01
    spread[lower_inner, 1] = -0.01
    # rounding: corners in, lips protrude, small round opening.
    rnd = b[..., ROUND]
    rnd[48:68, 2] = 0.10
    rnd[[48, 54], 0] = (0.10, -0.10)
    rnd[[60, 64], 0] = (0.11, -0.11)
    rnd[[49, 53, 59, 55], 0] = (0.05, -0.05, 0.05, -0.05)
    rnd[upper_outer, 1] = (0.01, 0.02, 0.02, 0.02, 0.01)
    rnd[lower_outer, 1] = (-0.01, -0.02, -0.02, -0.02, -0.01)
    rnd[upper_inner, 1] = (0.01, 0.015, 0.01)
    rnd[lower_inner, 1] = (-0.015, -0.025, -0.015)
    # closure: the lips close a gap larger than any other component opens (contact stops them),
    # moving every lip point exactly against the contact push-back (so contact restores the lip
    # shape), plus a little lip compression.
    _, _, push = _contact_matrix(mean)
    close = b[..., CLOSURE]
    close[:, 1] = -_CLOSURE_GAP * push[:, :len(_UPPER_INNER)].sum(axis=1)
    close[upper_outer, 1] -= 0.008
    close[lower_outer, 1] += 0.01
    # blinks: upper lid down, lower lid up, overshooting the widest eye.
    lid_gap = 1.6 * (mean[37, 1] - mean[41, 1])
    for comp, upper, lower in ((BLINK_LEFT, [43, 44], [47, 46]), (BLINK_RIGHT, [37, 38], [41, 40])):
        b[upper, 1, comp] = -_LID_UPPER_SHARE * lid_gap
        b[lower, 1, comp] = (1.0 - _LID_UPPER_SHARE) * lid_gap
    # brows.
    b[17:27, 1, BROW_RAISE] = 0.06
    b[list(_UPPER_LIDS), 1, BROW_RAISE] = 0.008
    b[[20, 21, 22, 23], 1, BROW_FROWN] = (-0.025, -0.045, -0.045, -0.025)
    b[[20, 21, 22, 23], 0, BROW_FROWN] = (0.01, 0.025, -0.025, -0.01)
    # smile: corners up and out, lower lids squint a little.
    smile = b[..., SMILE]
    smile[[48, 54], 0] = (-0.05, 0.05)
    smile[[60, 64], 0] = (-0.045, 0.045)
    smile[[48, 54, 60, 64], 1] = 0.06
    smile[[49, 53, 59, 55], 1] = 0.025
    smile[[61, 63, 67, 65], 1] = 0.02
    smile[list(_LOWER_LIDS), 1] = 0.01
    rng = np.random.default_rng(20250321)
    for comp in range(FIRST_DRIFT, D_EXP):
        b[..., comp] = _smooth_field(rng, mean, 0.008)
    return b


def _contact_matrix(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contact pairs and how a unit penetration moves the points back apart.

    Returns ``upper`` (P,), ``lower`` (P,) landmark indices of the pairs and ``push`` (68, P):
    the y displacement of every point per unit penetration of each pair. Lip penetrations move
    whole lip columns (outer points follow the nearest inner column, interpolated along x) so lip
    thickness is kept; eyelids move alone.
    """
    upper = np.array(_UPPER_INNER + _UPPER_LIDS)
    lower = np.array(_LOWER_INNER + _LOWER_LIDS)
    push = np.zeros((N_LANDMARKS, len(upper)))
    column_x = np.concatenate([[mean[48, 0]], mean[list(_UPPER_INNER), 0], [mean[54, 0]]])
    for lip, sign, share in ((_UPPER_LIP, 1.0, _LIP_UPPER_SHARE), (_LOWER_LIP, -1.0, 1.0 - _LIP_UPPER_SHARE)):
        for point in lip:
            for col in range(len(_UPPER_INNER)):
                profile = np.zeros(len(column_x))
                profile[col + 1] = 1.0
                push[point, col] = sign * share * np.interp(mean[point, 0], column_x, profile)
    for pair in range(len(_UPPER_INNER), len(upper)):
        push[upper[pair], pair] = _LID_UPPER_SHARE
        push[lower[pair], pair] = -(1.0 - _LID_UPPER_SHARE)
    return upper, lower, push


@dataclass(frozen=True)
class FaceModel:
    """Linear 3DMM over the 68 iBUG landmarks.

    Attributes:
        mean: (68, 3) neutral shape in model units.
        id_basis: (68, 3, N_ID) identity components (coefficients ~ N(0, 1)).
        exp_basis: (68, 3, D_EXP) expression components (see the module docstring).
        contact_upper, contact_lower: (P,) landmark indices of lip / eyelid contact pairs.
        contact_push: (68, P) y displacement per unit penetration of each pair.
    """

    mean: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    contact_upper: np.ndarray
    contact_lower: np.ndarray
    contact_push: np.ndarray

    @classmethod
    def default(cls) -> FaceModel:
        """The project's deterministic model (built once, cached)."""
        return _default_model()

    def landmarks(self, id_coeffs: np.ndarray, exp: np.ndarray) -> np.ndarray:
        """Unposed 3D landmarks in model space.

        Args:
            id_coeffs: (N_ID,) identity coefficients.
            exp: (n, D_EXP) expression coefficients.
        Returns:
            (n, 68, 3) float32.
        """
        id_coeffs = np.asarray(id_coeffs, dtype=np.float64)
        exp = np.asarray(exp, dtype=np.float64)
        if id_coeffs.shape != (self.id_basis.shape[2],):
            raise ValueError(f"id_coeffs: expected shape ({self.id_basis.shape[2]},), got {id_coeffs.shape}")
        if exp.ndim != 2 or exp.shape[1] != self.exp_basis.shape[2]:
            raise ValueError(f"exp: expected shape (n, {self.exp_basis.shape[2]}), got {exp.shape}")
        base = self.mean + self.id_basis @ id_coeffs
        points = base[None] + np.einsum("pcd,nd->npc", self.exp_basis, exp)
        penetration = np.maximum(points[:, self.contact_lower, 1] - points[:, self.contact_upper, 1], 0.0)
        points[:, :, 1] += penetration @ self.contact_push.T
        return points.astype(np.float32)


@lru_cache(maxsize=1)
def _default_model() -> FaceModel:
    mean = _mean_shape()
    upper, lower, push = _contact_matrix(mean)
    return FaceModel(mean=mean, id_basis=_identity_basis(mean), exp_basis=_expression_basis(mean),
                     contact_upper=upper, contact_lower=lower, contact_push=push)


_SKIN_TONES = np.array([[0.96, 0.82, 0.72], [0.88, 0.68, 0.56], [0.76, 0.54, 0.40], [0.55, 0.37, 0.26],
                        [0.38, 0.25, 0.18]])
_HAIR_COLOURS = np.array([[0.08, 0.06, 0.05], [0.22, 0.14, 0.09], [0.40, 0.27, 0.16], [0.75, 0.62, 0.38],
                          [0.55, 0.52, 0.50], [0.50, 0.22, 0.10]])
_EYE_COLOURS = np.array([[0.30, 0.18, 0.10], [0.15, 0.09, 0.05], [0.30, 0.45, 0.65], [0.30, 0.45, 0.30],
                         [0.45, 0.48, 0.50]])


@dataclass(frozen=True)
class FaceIdentity:
    """A speaker's face: shape coefficients and appearance (colours are RGB floats in [0, 1]).

    Attributes:
        id_coeffs: (N_ID,) identity coefficients of ``FaceModel``.
        skin_rgb, lip_rgb, brow_rgb, hair_rgb, eye_rgb (iris), teeth_rgb: (3,) colours.
        brow_thickness: brow band thickness, in inter-ocular distances (outer eye corners).
        hairline: hairline height above the brows, in inter-ocular distances.
        hair_drop: how far the hair comes down beside the face, in inter-ocular distances.
    """

    id_coeffs: np.ndarray
    skin_rgb: np.ndarray
    lip_rgb: np.ndarray
    brow_rgb: np.ndarray
    hair_rgb: np.ndarray
    eye_rgb: np.ndarray
    teeth_rgb: np.ndarray
    brow_thickness: float
    hairline: float
    hair_drop: float


def sample_identity(rng: np.random.Generator, shape_std: float = 1.0) -> FaceIdentity:
    """Draw a random face: identity coefficients ~ N(0, shape_std^2) clipped to +-2.5 sd, and colours."""
    id_coeffs = np.clip(rng.normal(0.0, shape_std, N_ID), -2.5, 2.5)
    tone = rng.uniform(0.0, len(_SKIN_TONES) - 1)
    low = int(np.floor(tone))
    high = min(low + 1, len(_SKIN_TONES) - 1)
    skin = _SKIN_TONES[low] + (tone - low) * (_SKIN_TONES[high] - _SKIN_TONES[low])
    skin = np.clip(skin + rng.normal(0.0, 0.02, 3), 0.0, 1.0)
    redness = rng.uniform(0.15, 0.35)
    lip = np.clip(skin * (0.82, 0.55, 0.55) + redness * np.array([0.35, 0.0, 0.02]), 0.0, 1.0)
    hair = np.clip(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] + rng.normal(0.0, 0.02, 3), 0.0, 1.0)
    brow = np.clip(hair * 0.8 + skin * 0.1, 0.0, 1.0)
    eye = np.clip(_EYE_COLOURS[rng.integers(len(_EYE_COLOURS))] + rng.normal(0.0, 0.02, 3), 0.0, 1.0)
    teeth = np.clip(np.array([0.93, 0.91, 0.84]) + rng.normal(0.0, 0.02, 3), 0.0, 1.0)
    return FaceIdentity(id_coeffs=id_coeffs.astype(np.float32), skin_rgb=skin, lip_rgb=lip, brow_rgb=brow,
                        hair_rgb=hair, eye_rgb=eye, teeth_rgb=teeth,
                        brow_thickness=float(rng.uniform(0.05, 0.09)), hairline=float(rng.uniform(0.35, 0.6)),
                        hair_drop=float(rng.uniform(0.0, 0.5)))


def smooth_noise(rng: np.random.Generator, n: int, channels: int, smoothness: float) -> np.ndarray:
    """Smooth Gaussian noise with unit standard deviation per sample, (n, channels) float64.

    White noise filtered by a Gaussian of standard deviation ``smoothness`` samples (0: white).
    """
    if smoothness <= 0.0:
        return rng.normal(size=(n, channels))
    half = int(np.ceil(3.0 * smoothness))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / smoothness) ** 2)
    kernel /= np.sqrt(np.sum(kernel ** 2))
    white = rng.normal(size=(n + 2 * half, channels))
    return np.stack([np.convolve(white[:, c], kernel, mode="valid") for c in range(channels)], axis=1)


def _blink_track(rng: np.random.Generator, n: int, rate_hz: float, fps: float) -> np.ndarray:
    """Eyelid closure in [0, 1] from Poisson blink events, each closing over ~4 frames, (n,)."""
    profile = np.array([0.35, 0.9, 1.0, 0.6, 0.25])
    track = np.zeros(n + len(profile))
    count = rng.poisson(rate_hz * n / fps) if rate_hz > 0 else 0
    for start in rng.integers(-2, n, size=count):
        lo = max(start, 0)
        track[lo:start + len(profile)] = np.maximum(track[lo:start + len(profile)], profile[lo - start:])
    return track[:n]


def expression_track(mouth_params: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
                     blink_rate_hz: float = 0.3, brow_amp: float = 0.3, smile_amp: float = 0.2,
                     drift_amp: float = 0.5, fps: float = VIDEO_FPS) -> np.ndarray:
    """Per-frame expression coefficients from mouth parameters plus speech-independent motion.

    Args:
        mouth_params: (n, 4) columns (jaw, spread, round, closure) in [0, 1] at ``fps``.
        rng: source of all non-speech motion; the draws depend on ``n`` only, never on the mouth.
        strength: articulation strength, scales jaw / spread / round (closure stays a full seal).
        blink_rate_hz: mean blink rate (Poisson); both eyes blink together with small asymmetry.
        brow_amp, smile_amp: standard deviation of the slow brow raise / frown and smile coefficients.
        drift_amp: standard deviation of components 9..63 (random smooth deformations).
        fps: frame rate of ``mouth_params``.
    Returns:
        (n, D_EXP) float32.
    """
    mouth_params = np.asarray(mouth_params, dtype=np.float64)
    if mouth_params.ndim != 2 or mouth_params.shape[1] != 4:
        raise ValueError(f"mouth_params: expected shape (n, 4) (jaw, spread, round, closure), got {mouth_params.shape}")
    n = mouth_params.shape[0]
    exp = np.zeros((n, D_EXP))
    exp[:, list(MOUTH_COMPONENTS)] = mouth_params * np.array([strength, strength, strength, 1.0])
    blink = _blink_track(rng, n, blink_rate_hz, fps)
    asymmetry = 1.0 + 0.05 * rng.normal(size=2)
    exp[:, BLINK_LEFT] = np.clip(blink * asymmetry[0], 0.0, 1.0)
    exp[:, BLINK_RIGHT] = np.clip(blink * asymmetry[1], 0.0, 1.0)
    slow = 1.0 * fps
    exp[:, [BROW_RAISE, BROW_FROWN]] = brow_amp * smooth_noise(rng, n, 2, slow)
    exp[:, SMILE] = smile_amp * (smooth_noise(rng, n, 1, 2.0 * slow)[:, 0] + rng.normal())
    exp[:, FIRST_DRIFT:] = drift_amp * smooth_noise(rng, n, D_EXP - FIRST_DRIFT, slow)
    return exp.astype(np.float32)


@dataclass(frozen=True)
class Pose:
    """Per-frame rigid head pose with scale.

    Attributes:
        angles_deg: (n, 3) yaw (about y), pitch (about x), roll (about z) in degrees.
        rotation: (n, 3, 3) R = Rz(roll) @ Rx(pitch) @ Ry(yaw), applied about ``POSE_PIVOT``.
        translation: (n, 3) model units.
        scale: (n,) multiplicative scale about the pivot.
    """

    angles_deg: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray


def rotation_matrices(angles_deg: np.ndarray) -> np.ndarray:
    """(n, 3) yaw, pitch, roll in degrees -> (n, 3, 3) rotations Rz(roll) @ Rx(pitch) @ Ry(yaw)."""
    yaw, pitch, roll = np.deg2rad(np.asarray(angles_deg, dtype=np.float64)).T
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    ry = np.stack([np.stack([np.cos(yaw), zero, np.sin(yaw)], -1), np.stack([zero, one, zero], -1),
                   np.stack([-np.sin(yaw), zero, np.cos(yaw)], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, np.cos(pitch), -np.sin(pitch)], -1),
                   np.stack([zero, np.sin(pitch), np.cos(pitch)], -1)], -2)
    rz = np.stack([np.stack([np.cos(roll), -np.sin(roll), zero], -1), np.stack([np.sin(roll), np.cos(roll), zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    return rz @ rx @ ry


def pose_track(rng: np.random.Generator, n: int, rot_deg: tuple[float, float, float] = (8.0, 5.0, 3.0),
               trans: float = 0.03, scale_jitter: float = 0.02, smoothness: float = 0.8,
               fps: float = VIDEO_FPS) -> Pose:
    """Smooth random head motion, independent of speech (it never sees the audio or mouth).

    Args:
        rng: random generator.
        n: number of frames.
        rot_deg: standard deviation of yaw, pitch, roll in degrees (each around a random per-clip offset
            of half that size).
        trans: standard deviation of the x / y translation in model units (face half width ~ 0.9).
        scale_jitter: standard deviation of the relative scale.
        smoothness: correlation time of the motion in seconds (Gaussian filter standard deviation).
        fps: frame rate.
    Returns:
        Pose with (n, ...) arrays.
    """
    sigma = smoothness * fps
    rot = np.asarray(rot_deg, dtype=np.float64)
    angles = rot * (0.5 * rng.normal(size=3) + smooth_noise(rng, n, 3, sigma))
    translation = np.zeros((n, 3))
    translation[:, :2] = trans * smooth_noise(rng, n, 2, sigma)
    scale = 1.0 + scale_jitter * smooth_noise(rng, n, 1, sigma)[:, 0]
    return Pose(angles_deg=angles.astype(np.float32), rotation=rotation_matrices(angles).astype(np.float32),
                translation=translation.astype(np.float32), scale=scale.astype(np.float32))


def apply_pose(points: np.ndarray, pose: Pose) -> np.ndarray:
    """Pose model-space landmarks: (n, 68, 3) -> (n, 68, 3) float32 (rotation and scale about the pivot)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[2] != 3 or points.shape[0] != pose.rotation.shape[0]:
        raise ValueError(f"points: expected shape ({pose.rotation.shape[0]}, P, 3), got {points.shape}")
    pivot = np.asarray(POSE_PIVOT)
    rotated = np.einsum("nij,npj->npi", pose.rotation.astype(np.float64), points - pivot)
    posed = rotated * pose.scale[:, None, None] + pivot + pose.translation[:, None, :]
    return posed.astype(np.float32)


@lru_cache(maxsize=1)
def crop_window() -> tuple[tuple[float, float], float]:
    """The corpus's fixed camera box in model units: ``((centre x, centre y), half side)``.

    The face crop of :mod:`unisync_loss.framing` (the one real crops are cut with) applied to the
    mean face's eye and mouth centres: centre (0, -0.1), half side 1.05 (cheek to cheek, mid
    forehead to just below the chin). Heads move and differ around the mean face, so each frame's
    own framing varies around it (as real crops vary with landmark noise). Rounded to 1e-9 model
    units, so that the last bits of the arithmetic never move a rendered pixel.
    """
    mean = _mean_shape()
    eyes, mouth = mean[list(_EYES), :2].mean(axis=0), mean[list(_MOUTH), :2].mean(axis=0)
    centre = eyes + CENTRE_ALONG * (mouth - eyes)
    half = float(np.linalg.norm(mouth - eyes)) / EYE_MOUTH_SHARE / 2.0
    return (round(float(centre[0]), 9) + 0.0, round(float(centre[1]), 9)), round(half, 9)


def project(points: np.ndarray, image_size: int | tuple[int, int] = 96) -> np.ndarray:
    """Orthographic projection of posed model-space points to face-crop pixel coordinates.

    The fixed camera box (:func:`crop_window`) is mapped onto the image; pixel (0, 0) is the
    top-left corner of the top-left pixel, x to the right, y down.

    Args:
        points: (n, P, 3) posed points.
        image_size: H = W, or (H, W).
    Returns:
        (n, P, 2) float32 (x, y) pixel coordinates.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"points: expected shape (n, P, 3), got {points.shape}")
    (centre_x, centre_y), half = crop_window()
    u = (points[..., 0] - centre_x + half) * (width / (2.0 * half))
    v = (centre_y + half - points[..., 1]) * (height / (2.0 * half))
    return np.stack([u, v], axis=-1).astype(np.float32)
