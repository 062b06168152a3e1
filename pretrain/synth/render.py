"""Rasterise RGB face crops and CelebAMask-HQ parsing labels from projected 2D landmarks.

Every region is a polygon built *linearly* from the 68 projected landmarks (jaw line plus a
forehead arc for the skin, Catmull-Rom smoothed eyes and lip contours, a brow band, the nose,
teeth bands inside the mouth, hair and neck). Both outputs come from the same per-pixel coverage:
RGB composites each layer with its anti-aliased coverage (analytic along one axis, two sub-samples
along the other), and the parsing label of a pixel is the topmost labelled layer whose coverage is
>= 0.5, so labels and colours agree pixel-wise.

Layers, bottom to top (label in brackets): background [0] (per-clip two-colour gradient), hair [13],
neck [17], skin [1] (jaw line + forehead), hair fringe [13], eyes [4 l_eye = subject's left eye,
iBUG 42-47, image right; 5 r_eye] with iris, upper lash line (decoration), brows [6, 7], nose [2]
with nostrils, upper lip [11], lower lip [12], mouth interior [10] with upper and lower teeth
(still [10]). Eyes close with blinks because their polygons collapse; the mouth interior vanishes
when the inner lips meet.

Lighting multiplies the whole frame by a smooth per-frame brightness times a directional gradient
with a mild radial fall-off around the centre of the eye corners and nose bridge (landmarks that do
not move with the mouth). Lighting and background come from the ``Scene`` (random, never from
speech), so nothing outside the mouth and chin changes with articulation.

All work is vectorised over a batch of frames in torch; small parts are rasterised inside the union
bounding box of the batch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pretrain.synth.face import FaceIdentity, smooth_noise
from unisync_loss.audio import VIDEO_FPS

LABELS = {"background": 0, "skin": 1, "nose": 2, "l_eye": 4, "r_eye": 5, "l_brow": 6, "r_brow": 7,
          "mouth": 10, "u_lip": 11, "l_lip": 12, "hair": 13, "neck": 17}

_N_COORDS = 136  # 68 landmarks x (x, y), flattened point-major
_PERP = np.array([[0.0, 1.0], [-1.0, 0.0]])  # image-right vector -> image-up vector (y points down)
_EYE_WHITE = np.array([0.90, 0.88, 0.86])
_MOUTH_DARK = np.array([0.20, 0.05, 0.06])
_LASH = 0.35  # lash line colour as a fraction of the brow colour


@dataclass(frozen=True)
class Scene:
    """Speech-independent rendering conditions of one clip.

    Attributes:
        background: (2, 3) RGB colours in [0, 1] of the background gradient.
        background_angle: direction of the gradient in radians (image plane).
        light: (n, 2) per-frame brightness gradient (d brightness / d inter-ocular distance along x, y).
        brightness: (n,) per-frame overall brightness factor.
    """

    background: np.ndarray
    background_angle: float
    light: np.ndarray
    brightness: np.ndarray


def sample_scene(rng: np.random.Generator, n: int, light_amp: float = 0.15, light_drift: float = 0.05,
                 flicker: float = 0.03, smoothness: float = 1.5, fps: float = VIDEO_FPS) -> Scene:
    """Random background and smooth lighting for ``n`` frames, drawn from ``rng`` only.

    Args:
        light_amp: strength of the per-clip directional light gradient.
        light_drift: standard deviation of its slow per-frame drift.
        flicker: standard deviation of the slow overall brightness variation.
        smoothness: correlation time of drift and flicker in seconds.
    """
    background = rng.uniform(0.15, 0.85, size=(2, 3))
    direction = rng.uniform(0.0, 2.0 * np.pi)
    base = light_amp * np.array([np.cos(direction), np.sin(direction)])
    light = base + light_drift * smooth_noise(rng, n, 2, smoothness * fps)
    brightness = 1.0 + rng.uniform(-0.1, 0.1) + flicker * smooth_noise(rng, n, 1, smoothness * fps)[:, 0]
    return Scene(background=background, background_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
                 light=light, brightness=brightness)


# --- polygons as linear maps of the flattened landmarks ------------------------------------------

def _point(i: int) -> np.ndarray:
    """Landmark ``i`` as a (2, 136) map from flattened landmarks to (x, y)."""
    m = np.zeros((2, _N_COORDS))
    m[0, 2 * i] = 1.0
    m[1, 2 * i + 1] = 1.0
    return m


def _spline(controls: list[np.ndarray], samples: int, closed: bool) -> list[np.ndarray]:
    """Uniform Catmull-Rom curve through (2, 136) control maps, ``samples`` points per segment."""
    k = len(controls)
    segments = k if closed else k - 1
    out = []
    for seg in range(segments):
        idx = [seg - 1, seg, seg + 1, seg + 2]
        idx = [i % k for i in idx] if closed else [min(max(i, 0), k - 1) for i in idx]
        for step in range(samples):
            t = step / samples
            w = 0.5 * np.array([-t + 2 * t ** 2 - t ** 3, 2 - 5 * t ** 2 + 3 * t ** 3,
                                t + 4 * t ** 2 - 3 * t ** 3, -t ** 2 + t ** 3])
            out.append(sum(wi * controls[i] for wi, i in zip(w, idx)))
    if not closed:
        out.append(controls[-1])
    return out


def _stack(points: list[np.ndarray]) -> np.ndarray:
    """(V,) list of (2, 136) maps -> (2V, 136) matrix producing a flattened (V, 2) polygon."""
    return np.concatenate(points, axis=0)


def _arc(centre: np.ndarray, half_width: np.ndarray, up: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
    """Points centre + cos(t) half_width + sin(t) up (all (2, 136) maps) for angles ``t``."""
    return [centre + np.cos(a) * half_width + np.sin(a) * up for a in t]


def _polygons(identity: FaceIdentity) -> dict[str, np.ndarray]:
    """All layer polygons as (2V, 136) matrices for one identity."""
    p = [_point(i) for i in range(68)]
    eye_axis = p[45] - p[36]            # inter-ocular vector, ~1.1 model units
    up = _PERP @ eye_axis               # same length, pointing up the face
    centre = 0.5 * (p[0] + p[16])
    half_width = 0.5 * (p[16] - p[0])
    forehead = 0.95 * up
    polys: dict[str, np.ndarray] = {}

    t = np.linspace(0.0, np.pi, 13)
    drop = (0.1 + identity.hair_drop) * up
    polys["hair"] = _stack([centre + 1.12 * half_width - drop]
                           + _arc(centre, 1.12 * half_width, forehead + 0.22 * up, t)
                           + [centre - 1.12 * half_width - drop])
    neck_w = 0.62 * half_width
    polys["neck"] = _stack([centre - neck_w - 0.3 * up, centre + neck_w - 0.3 * up,
                            centre + 1.15 * neck_w - 3.0 * up, centre - 1.15 * neck_w - 3.0 * up])
    jaw = _spline(p[0:17], 2, closed=False)
    polys["skin"] = _stack(jaw + _arc(centre, half_width, forehead, t[1:-1]))
    hairline = 0.32 + identity.hairline  # above the jaw-top centre; the brows sit ~0.32 up
    if hairline < 0.93:
        t0 = np.arcsin(hairline / 0.95)
        polys["fringe"] = _stack(_arc(centre, half_width, forehead, np.linspace(t0, np.pi - t0, 9)))

    for name, idx in (("r_eye", range(36, 42)), ("l_eye", range(42, 48))):
        polys[name] = _stack(_spline([p[i] for i in idx], 3, closed=True))
    lash = 0.035 * up
    for name, idx in (("r_lash", (36, 37, 38, 39)), ("l_lash", (42, 43, 44, 45))):
        lid = _spline([p[i] for i in idx], 2, closed=False)
        polys[name] = _stack(lid + [q + lash for q in reversed(lid)])
    for name, idx in (("r_brow", range(17, 22)), ("l_brow", range(22, 27))):
        line = _spline([p[i] for i in idx], 2, closed=False)
        outer_first = name == "r_brow"
        taper = np.linspace(0.55, 1.0, len(line)) if outer_first else np.linspace(1.0, 0.55, len(line))
        half = 0.5 * identity.brow_thickness * up
        polys[name] = _stack([q + s * half for q, s in zip(line, taper)]
                             + [q - s * half for q, s in reversed(list(zip(line, taper)))])
    polys["nose"] = _stack(_spline([p[27] - 0.045 * eye_axis, p[29] - 0.06 * eye_axis, p[31], p[32], p[33],
                                    p[34], p[35], p[29] + 0.06 * eye_axis, p[27] + 0.045 * eye_axis],
                                   2, closed=True))

    upper_outer = _spline(p[48:55], 3, closed=False)
    lower_outer = _spline([p[i] for i in (54, 55, 56, 57, 58, 59, 48)], 3, closed=False)
    upper_inner = _spline([p[i] for i in (60, 61, 62, 63, 64)], 3, closed=False)
    lower_inner = _spline([p[i] for i in (64, 65, 66, 67, 60)], 3, closed=False)
    polys["u_lip"] = _stack(upper_outer + upper_inner[::-1])
    polys["l_lip"] = _stack(lower_outer + lower_inner[::-1])
    polys["mouth"] = _stack(upper_inner[:-1] + lower_inner[:-1])
    # teeth: rectangles along the inner-lip chords, clipped to the mouth interior when painted.
    upper_half = 0.62 * (p[63] - p[61])
    polys["u_teeth"] = _stack([p[62] - upper_half + 0.05 * up, p[62] + upper_half + 0.05 * up,
                               p[62] + upper_half - 0.085 * up, p[62] - upper_half - 0.085 * up])
    lower_half = 0.5 * (p[65] - p[67])
    polys["l_teeth"] = _stack([p[66] - lower_half + 0.045 * up, p[66] + lower_half + 0.045 * up,
                               p[66] + lower_half - 0.05 * up, p[66] - lower_half - 0.05 * up])
    return polys


# --- rasterisation ------------------------------------------------------------------------------

def _box(poly: torch.Tensor, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Union pixel bounding box (y0, y1, x0, x1) of a batch of polygons (n, V, 2), None if off-image."""
    lo = poly.amin(dim=(0, 1))
    hi = poly.amax(dim=(0, 1))
    x0, y0 = max(int(np.floor(lo[0].item())), 0), max(int(np.floor(lo[1].item())), 0)
    x1, y1 = min(int(np.ceil(hi[0].item())) + 1, width), min(int(np.ceil(hi[1].item())) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


def _span_coverage(poly: torch.Tensor, rows0: int, rows1: int, cols0: int, cols1: int) -> torch.Tensor:
    """Coverage of pixels by a polygon convex along rows, (n, rows, cols) in [0, 1].

    Each pixel row is sampled at two sub-rows; on each, the polygon's span [min, max] of the edge
    crossings is intersected analytically with the pixel's extent along the row.

    Args:
        poly: (n, V, 2) vertices as (along-row, across-row) coordinates.
    """
    sub = torch.arange(rows0, rows1, dtype=poly.dtype).repeat_interleave(2)
    sub = sub + torch.tensor([0.25, 0.75], dtype=poly.dtype).repeat(rows1 - rows0)
    a = poly[:, None, :, :]
    b = torch.roll(poly, -1, dims=1)[:, None, :, :]
    ay, by = a[..., 1], b[..., 1]
    y = sub[None, :, None]
    crosses = (ay <= y) != (by <= y)
    t = (y - ay) / torch.where(by == ay, torch.ones_like(by), by - ay)
    x = a[..., 0] + t * (b[..., 0] - a[..., 0])
    inf = torch.tensor(float("inf"), dtype=poly.dtype)
    left = torch.where(crosses, x, inf).amin(dim=2)[:, :, None]
    right = torch.where(crosses, x, -inf).amax(dim=2)[:, :, None]
    cells = torch.arange(cols0, cols1, dtype=poly.dtype)
    cover = torch.minimum(right, cells + 1.0) - torch.maximum(left, cells)
    cover.clamp_(0.0, 1.0)
    n = poly.shape[0]
    return cover.view(n, rows1 - rows0, 2, cols1 - cols0).sum(dim=2).mul_(0.5)


def _coverage(poly: torch.Tensor, box: tuple[int, int, int, int], axis: str) -> torch.Tensor:
    """Coverage (n, h, w) of ``poly`` (n, V, 2 as x, y) in ``box``; ``axis`` = 'rows' or 'cols' names
    the direction along which the shape is convex (each row / column crosses it in one interval)."""
    y0, y1, x0, x1 = box
    if axis == "rows":
        return _span_coverage(poly, y0, y1, x0, x1)
    return _span_coverage(poly.flip(-1), x0, x1, y0, y1).transpose(1, 2)


def _disc_coverage(centre: torch.Tensor, radius: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Approximate coverage (n, h, w) of discs with centres (n, 2) and radii (n,) in ``box``."""
    y0, y1, x0, x1 = box
    xs = torch.arange(x0, x1, dtype=centre.dtype) + 0.5
    ys = torch.arange(y0, y1, dtype=centre.dtype) + 0.5
    dx2 = (xs[None, None, :] - centre[:, None, None, 0]) ** 2
    dy2 = (ys[None, :, None] - centre[:, None, None, 1]) ** 2
    return (radius[:, None, None] + 0.5 - torch.sqrt(dx2 + dy2)).clamp_(0.0, 1.0)


class _Canvas:
    """RGB (n, 3, H, W) and label (n, H, W) buffers with coverage compositing."""

    def __init__(self, background: torch.Tensor, n: int) -> None:
        self.rgb = background.expand(n, *background.shape).clone()
        self.labels = torch.zeros((n, *background.shape[1:]), dtype=torch.uint8)

    def paint(self, cover: torch.Tensor, box: tuple[int, int, int, int], colour: torch.Tensor,
              label: int | None) -> None:
        """Blend ``colour`` (3,) with coverage ``cover`` (n, h, w) in ``box``; label where cover >= 0.5."""
        y0, y1, x0, x1 = box
        region = self.rgb[:, :, y0:y1, x0:x1]
        region.lerp_(colour[None, :, None, None].expand_as(region), cover[:, None])
        if label is not None:
            self.labels[:, y0:y1, x0:x1].masked_fill_(cover >= 0.5, label)


def _background(scene: Scene, height: int, width: int) -> torch.Tensor:
    """Per-clip background gradient, (3, H, W) float32."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    direction = np.array([np.cos(scene.background_angle), np.sin(scene.background_angle)])
    proj = ((xs - width / 2) * direction[0] + (ys - height / 2) * direction[1]) / (0.5 * max(height, width))
    mix = np.clip(0.5 + 0.5 * proj, 0.0, 1.0)[None]
    image = scene.background[0][:, None, None] * (1 - mix) + scene.background[1][:, None, None] * mix
    return torch.from_numpy(image.astype(np.float32))


def _shading(lm: torch.Tensor, light: torch.Tensor, brightness: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-frame shading factor (n, 1, H, W): brightness x (1 + light . d - 0.08 |d|^2), d measured in
    inter-ocular distances from the centre of eye corners and nose bridge (mouth-independent)."""
    centre = lm[:, [27, 36, 39, 42, 45]].mean(dim=1)
    scale = torch.linalg.vector_norm(lm[:, 45] - lm[:, 36], dim=-1).clamp_min(1e-3)
    dx = (torch.arange(width, dtype=lm.dtype) + 0.5 - centre[:, None, 0]) / scale[:, None]
    dy = (torch.arange(height, dtype=lm.dtype) + 0.5 - centre[:, None, 1]) / scale[:, None]
    col = light[:, None, 0] * dx - 0.08 * dx ** 2
    row = light[:, None, 1] * dy - 0.08 * dy ** 2
    shade = (1.0 + col[:, None, None, :] + row[:, None, :, None]) * brightness[:, None, None, None]
    return shade.clamp_(min=0.3)


_LAYERS = (  # name, convex axis, label, colour key
    ("hair", "rows", LABELS["hair"], "hair"),
    ("neck", "rows", LABELS["neck"], "neck"),
    ("skin", "rows", LABELS["skin"], "skin"),
    ("fringe", "rows", LABELS["hair"], "hair"),
    ("r_eye", "cols", LABELS["r_eye"], "eye_white"),
    ("l_eye", "cols", LABELS["l_eye"], "eye_white"),
    ("r_lash", "cols", None, "lash"),
    ("l_lash", "cols", None, "lash"),
    ("r_brow", "cols", LABELS["r_brow"], "brow"),
    ("l_brow", "cols", LABELS["l_brow"], "brow"),
    ("nose", "rows", LABELS["nose"], "nose"),
    ("u_lip", "cols", LABELS["u_lip"], "lip"),
    ("l_lip", "cols", LABELS["l_lip"], "lip"),
    ("mouth", "cols", LABELS["mouth"], "mouth"),
)


def _colours(identity: FaceIdentity) -> dict[str, torch.Tensor]:
    """Albedo (3,) of every layer and detail of one face."""
    skin = np.asarray(identity.skin_rgb)
    colours = {"hair": identity.hair_rgb, "neck": skin * 0.82, "skin": skin, "eye_white": _EYE_WHITE,
               "lash": np.asarray(identity.brow_rgb) * _LASH, "brow": identity.brow_rgb, "nose": skin * 0.96,
               "lip": identity.lip_rgb, "mouth": _MOUTH_DARK, "teeth": identity.teeth_rgb, "iris": identity.eye_rgb,
               "nostril": skin * 0.35}
    return {k: torch.tensor(np.asarray(v), dtype=torch.float32) for k, v in colours.items()}


def render_frames(landmarks2d: np.ndarray | torch.Tensor, identity: FaceIdentity, scene: Scene,
                  image_size: int | tuple[int, int] = 96, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Render face crops and parsing labels.

    Args:
        landmarks2d: (n, 68, 2) pixel coordinates (x right, y down) from ``face.project`` at the same
            ``image_size``.
        identity: colours and hair / brow style of the face.
        scene: background and per-frame lighting (its arrays must have n frames).
        image_size: H = W, or (H, W).
        batch: frames rasterised at once.
    Returns:
        rgb (n, 3, H, W) uint8 and parsing (n, H, W) uint8 CelebAMask-HQ labels (``LABELS``).
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    lm_all = torch.as_tensor(np.asarray(landmarks2d), dtype=torch.float32)
    if lm_all.ndim != 3 or lm_all.shape[1:] != (68, 2):
        raise ValueError(f"landmarks2d: expected shape (n, 68, 2), got {tuple(lm_all.shape)}")
    n = lm_all.shape[0]
    if scene.light.shape != (n, 2) or scene.brightness.shape != (n,):
        raise ValueError(f"scene: expected light (n, 2) and brightness (n,) with n = {n}, "
                         f"got {scene.light.shape} and {scene.brightness.shape}")
    matrices = {k: torch.tensor(v, dtype=torch.float32) for k, v in _polygons(identity).items()}
    colours = _colours(identity)
    background = _background(scene, height, width)
    light = torch.tensor(scene.light, dtype=torch.float32)
    brightness = torch.tensor(scene.brightness, dtype=torch.float32)
    rgb = torch.empty((n, 3, height, width), dtype=torch.uint8)
    parsing = torch.empty((n, height, width), dtype=torch.uint8)
    for start in range(0, n, batch):
        lm = lm_all[start:start + batch]
        m = lm.shape[0]
        flat = lm.reshape(m, -1)
        # elementwise product + sum rather than a BLAS matmul: bit-identical for any batch size
        polys = {k: (flat[:, None, :] * mat).sum(dim=2).view(m, -1, 2) for k, mat in matrices.items()}
        canvas = _Canvas(background, m)
        for name, axis, label, colour in _LAYERS:
            if name not in polys:
                continue
            box = _box(polys[name], height, width)
            if box is None:
                continue
            cover = _coverage(polys[name], box, axis)
            canvas.paint(cover, box, colours[colour], label)
            if name in ("r_eye", "l_eye"):
                _paint_iris(canvas, lm, name, cover, box, colours)
            elif name == "nose":
                _paint_nostrils(canvas, lm, box, colours)
            elif name == "mouth":
                for teeth in ("u_teeth", "l_teeth"):
                    canvas.paint(_coverage(polys[teeth], box, "rows") * cover, box, colours["teeth"], None)
        shade = _shading(lm, light[start:start + m], brightness[start:start + m], height, width)
        rgb[start:start + m] = canvas.rgb.mul_(shade).mul_(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
        parsing[start:start + m] = canvas.labels
    return rgb, parsing


def _paint_iris(canvas: _Canvas, lm: torch.Tensor, eye: str, eye_cover: torch.Tensor,
                box: tuple[int, int, int, int], colours: dict[str, torch.Tensor]) -> None:
    """Iris and pupil discs clipped to the eye opening."""
    idx = list(range(36, 42)) if eye == "r_eye" else list(range(42, 48))
    corners = lm[:, [idx[0], idx[3]]]
    centre = corners.mean(dim=1)
    width = torch.linalg.vector_norm(corners[:, 1] - corners[:, 0], dim=-1)
    canvas.paint(_disc_coverage(centre, 0.27 * width, box) * eye_cover, box, colours["iris"], None)
    canvas.paint(_disc_coverage(centre, 0.12 * width, box) * eye_cover, box, colours["iris"] * 0.2, None)


def _paint_nostrils(canvas: _Canvas, lm: torch.Tensor, box: tuple[int, int, int, int],
                    colours: dict[str, torch.Tensor]) -> None:
    """Two small dark discs just inside landmarks 32 and 34 (towards the nose tip 30)."""
    radius = 0.04 * torch.linalg.vector_norm(lm[:, 45] - lm[:, 36], dim=-1)
    for i in (32, 34):
        centre = lm[:, i] + 0.2 * (lm[:, 30] - lm[:, i])
        canvas.paint(_disc_coverage(centre, radius, box), box, colours["nostril"], None)
