"""Face model (pretrain.synth.face) and renderer (pretrain.synth.render) of the procedural corpus."""

import numpy as np
import pytest
import torch

from pretrain.synth import face, render

MODEL = face.FaceModel.default()
SIZE = 96


def _exp(n: int, **components: float) -> np.ndarray:
    """(n, 64) zero expression with the named components set on every frame."""
    exp = np.zeros((n, face.D_EXP), dtype=np.float32)
    names = {"jaw": face.JAW, "spread": face.SPREAD, "round": face.ROUND, "closure": face.CLOSURE,
             "blink_left": face.BLINK_LEFT, "blink_right": face.BLINK_RIGHT}
    for name, value in components.items():
        exp[:, names[name]] = value
    return exp


def _inner_gap(points: np.ndarray) -> np.ndarray:
    """Vertical inner-lip opening at the centre (62 above 66), (n,)."""
    return points[:, 62, 1] - points[:, 66, 1]


def _identities(count: int) -> list[face.FaceIdentity]:
    rng = np.random.default_rng(7)
    return [face.sample_identity(rng) for _ in range(count)]


def _flat_scene(n: int) -> render.Scene:
    return render.Scene(background=np.array([[0.2, 0.5, 0.3], [0.3, 0.4, 0.6]]), background_angle=0.3,
                        light=np.zeros((n, 2)), brightness=np.ones(n))


def _render(exp: np.ndarray, identity: face.FaceIdentity, angles: np.ndarray | None = None,
            scene: render.Scene | None = None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    n = exp.shape[0]
    angles = np.zeros((n, 3)) if angles is None else angles
    pose = face.Pose(angles_deg=angles, rotation=face.rotation_matrices(angles), translation=np.zeros((n, 3)),
                     scale=np.ones(n))
    lm = face.project(face.apply_pose(MODEL.landmarks(identity.id_coeffs, exp), pose), SIZE)
    rgb, parsing = render.render_frames(lm, identity, scene or _flat_scene(n), SIZE)
    return rgb, parsing, lm


def test_landmark_layout_follows_ibug_order():
    for identity in _identities(20):
        p = MODEL.landmarks(identity.id_coeffs, _exp(1))[0]
        assert p.shape == (68, 3)
        assert p[8, 1] == p[:17, 1].min()                       # chin is the lowest jaw point
        assert p[0, 0] < p[8, 0] < p[16, 0]
        assert p[17:27, 1].min() > p[36:48, 1].max()            # brows above eyes
        assert p[36:42, 0].max() < p[27, 0] < p[42:48, 0].min()  # right eye | nose bridge | left eye
        assert p[36, 0] < p[39, 0] and p[42, 0] < p[45, 0]      # outer / inner corners
        assert p[48, 0] < p[51, 0] < p[54, 0]                   # mouth corners either side of the centre
        assert p[33, 1] > p[51, 1] > p[57, 1] > p[8, 1]         # nose above lips above chin
        inner = p[60:68]
        assert np.all(inner[:, 0] > p[48, 0]) and np.all(inner[:, 0] < p[54, 0])
        assert np.all(inner[:, 1] < p[51, 1]) and np.all(inner[:, 1] > p[57, 1])
        assert abs(_inner_gap(p[None])[0]) < 1e-6               # neutral mouth is closed


def test_jaw_component_opens_the_mouth():
    jaw = np.linspace(0.0, 1.0, 6)[:, None]
    exp = _exp(6)
    exp[:, face.JAW] = jaw[:, 0]
    p = MODEL.landmarks(np.zeros(face.N_ID), exp)
    gap = _inner_gap(p)
    assert np.all(np.diff(gap) > 0.04)
    assert gap[-1] > 0.25
    assert np.all(np.diff(p[:, 8, 1]) < 0)                      # the chin drops


@pytest.mark.parametrize("jaw", [0.0, 0.3, 0.7, 1.0])
def test_closure_seals_the_lips_for_any_jaw_opening(jaw):
    for identity in _identities(10):
        exp = _exp(3, jaw=jaw, closure=1.0)
        exp[1, face.SPREAD] = 1.0
        exp[2, face.ROUND] = 1.0
        p = MODEL.landmarks(identity.id_coeffs, exp)
        inner_upper, inner_lower = p[:, [61, 62, 63], 1], p[:, [67, 66, 65], 1]
        np.testing.assert_allclose(inner_upper, inner_lower, atol=1e-5)
        assert np.all(p[:, 51, 1] > p[:, 62, 1] + 0.02) and np.all(p[:, 57, 1] < p[:, 66, 1] - 0.04)  # lips keep thickness


def test_closure_through_expression_track_and_partial_closure():
    mouth = np.array([[0.5, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.2], [0.5, 0.0, 0.0, 1.0]])
    exp = face.expression_track(mouth, np.random.default_rng(0), blink_rate_hz=0.0, brow_amp=0.0, smile_amp=0.0,
                                drift_amp=0.0)
    gap = _inner_gap(MODEL.landmarks(np.zeros(face.N_ID), exp))
    assert gap[0] > gap[1] > gap[2] and gap[1] > 0.02
    assert abs(gap[2]) < 1e-6


def test_blinks_close_the_eyes():
    p = MODEL.landmarks(np.zeros(face.N_ID), np.concatenate([_exp(1), _exp(1, blink_left=1.0, blink_right=1.0)]))
    open_gap = p[0, [37, 38, 43, 44], 1] - p[0, [41, 40, 47, 46], 1]
    assert np.all(open_gap > 0.08)
    for identity in _identities(10):
        q = MODEL.landmarks(identity.id_coeffs, _exp(1, blink_left=1.0, blink_right=1.0, jaw=0.8))[0]
        np.testing.assert_allclose(q[[37, 38, 43, 44], 1], q[[41, 40, 47, 46], 1], atol=1e-5)


def test_non_speech_motion_is_independent_of_the_mouth():
    n = 500
    mouths = [np.zeros((n, 4)), np.random.default_rng(1).uniform(0.0, 1.0, (n, 4))]
    tracks, poses = [], []
    for mouth in mouths:
        rng = np.random.default_rng(3)
        tracks.append(face.expression_track(mouth, rng, blink_rate_hz=0.5))
        poses.append(face.pose_track(rng, n))
    np.testing.assert_array_equal(tracks[0][:, 4:], tracks[1][:, 4:])
    np.testing.assert_array_equal(tracks[1][:, :4], mouths[1].astype(np.float32))
    np.testing.assert_array_equal(poses[0].rotation, poses[1].rotation)
    blink = tracks[0][:, face.BLINK_LEFT]
    assert blink.max() > 0.95 and np.mean(blink > 0.5) < 0.2     # a few short blinks at 0.5 Hz over 20 s
    p = MODEL.landmarks(np.zeros(face.N_ID), tracks[0])
    closed = blink > 0.99
    np.testing.assert_allclose(p[closed, 37, 1], p[closed, 41, 1], atol=1e-5)


def test_pose_track_is_smooth():
    pose = face.pose_track(np.random.default_rng(0), 1000, rot_deg=(10.0, 6.0, 4.0), smoothness=0.8)
    angles = pose.angles_deg
    assert angles.shape == (1000, 3) and pose.rotation.shape == (1000, 3, 3)
    assert np.all(angles.std(axis=0) > (3.0, 2.0, 1.0))
    assert np.all(np.abs(np.diff(angles, axis=0)).max(axis=0) < 0.1 * angles.std(axis=0) * 3)
    np.testing.assert_allclose(pose.rotation @ pose.rotation.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (1000, 3, 3)),
                               atol=1e-5)
    assert np.all(np.abs(pose.scale - 1.0) < 0.1)


def test_projection_frames_the_face_like_a_face_crop():
    p = face.project(MODEL.landmarks(np.zeros(face.N_ID), _exp(1)), SIZE)[0]
    assert np.all(p >= 0) and np.all(p < SIZE)
    assert p[:, 0].min() < 0.12 * SIZE and p[:, 0].max() > 0.88 * SIZE   # cheek to cheek
    assert 0.9 * SIZE < p[8, 1] < SIZE                                   # chin at the bottom
    assert 0.6 * SIZE < p[62, 1] < 0.8 * SIZE                            # mouth in the lower half
    assert 0.1 * SIZE < p[17:27, 1].min() and p[36:48, 1].max() < 0.4 * SIZE
    wide = face.project(MODEL.landmarks(np.zeros(face.N_ID), _exp(1)), (48, 80))[0]
    np.testing.assert_allclose(wide[:, 0] / 80, p[:, 0] / SIZE, atol=1e-5)
    np.testing.assert_allclose(wide[:, 1] / 48, p[:, 1] / SIZE, atol=1e-5)


def test_renderer_is_deterministic_and_shaped():
    rng = np.random.default_rng(5)
    identity = face.sample_identity(rng)
    exp = face.expression_track(rng.uniform(0, 1, (20, 4)), rng)
    lm = face.project(face.apply_pose(MODEL.landmarks(identity.id_coeffs, exp), face.pose_track(rng, 20)), SIZE)
    scene = render.sample_scene(rng, 20)
    rgb, parsing = render.render_frames(lm, identity, scene, SIZE, batch=7)
    rgb2, parsing2 = render.render_frames(lm, identity, scene, SIZE, batch=20)
    assert rgb.shape == (20, 3, SIZE, SIZE) and rgb.dtype == torch.uint8
    assert parsing.shape == (20, SIZE, SIZE) and parsing.dtype == torch.uint8
    assert torch.equal(rgb, rgb2) and torch.equal(parsing, parsing2)
    assert set(torch.unique(parsing).tolist()) <= set(render.LABELS.values())
    for label in ("background", "skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip"):
        assert (parsing == render.LABELS[label]).any(), label
    other = render.render_frames(face.project(face.apply_pose(MODEL.landmarks(identity.id_coeffs, exp),
                                                              face.pose_track(rng, 20)), (64, 80)), identity, scene, (64, 80))
    assert other[0].shape == (20, 3, 64, 80) and other[1].shape == (20, 64, 80)


def test_mouth_interior_grows_with_jaw_and_vanishes_at_closure():
    identity = _identities(1)[0]
    exp = _exp(6)
    exp[:5, face.JAW] = (0.0, 0.25, 0.5, 0.75, 1.0)
    exp[5, [face.JAW, face.CLOSURE]] = (0.6, 1.0)
    _, parsing, _ = _render(exp, identity)
    counts = (parsing == render.LABELS["mouth"]).sum(dim=(1, 2)).numpy()
    assert counts[0] == 0 and counts[5] == 0
    assert np.all(np.diff(counts[:5]) > 10) and counts[4] > 150


def test_parsing_and_rgb_agree_on_the_mouth_region():
    mouth_label, lip_labels = render.LABELS["mouth"], (render.LABELS["u_lip"], render.LABELS["l_lip"])
    for identity in _identities(4):
        exp = _exp(4, jaw=0.8)
        exp[1, face.ROUND] = 1.0
        exp[2, face.SPREAD] = 1.0
        exp[3] = _exp(1, jaw=0.3, closure=1.0)[0]
        rgb, parsing, _ = _render(exp, identity)
        colour = rgb.permute(0, 2, 3, 1).float().numpy() / 255.0
        labels = parsing.numpy()
        inside = _interior(labels)
        # mouth pixels: dark interior, teeth, or an anti-aliased mix of the two
        dark, bright = render._MOUTH_DARK, np.asarray(identity.teeth_rgb)
        mix = np.clip(((colour - dark) @ (bright - dark)) / np.sum((bright - dark) ** 2), 0.0, 1.0)
        mouth_like = np.abs(colour - (dark + mix[..., None] * (bright - dark))).max(axis=-1) < 0.1
        mouth = labels == mouth_label
        assert mouth.sum() > 100
        assert np.all(mouth_like[mouth & inside])
        assert np.mean(mouth_like[mouth]) > 0.75                  # edges may mix with the lips
        lips = np.isin(labels, lip_labels)
        ratio = colour / np.maximum(identity.lip_rgb, 0.05)
        lip_like = np.all((ratio > 0.85) & (ratio < 1.05), axis=-1)
        assert np.all(lip_like[lips & inside])
        assert np.mean(lip_like[lips]) > 0.75
        skin_ratio = colour / np.maximum(identity.skin_rgb, 0.05)
        assert not np.any(np.all(np.abs(skin_ratio - 1.0) < 0.03, axis=-1)[mouth])


def _interior(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 4 neighbours carry the same label, (n, H, W) bool."""
    inside = np.zeros(labels.shape, dtype=bool)
    centre = labels[:, 1:-1, 1:-1]
    inside[:, 1:-1, 1:-1] = ((labels[:, :-2, 1:-1] == centre) & (labels[:, 2:, 1:-1] == centre)
                             & (labels[:, 1:-1, :-2] == centre) & (labels[:, 1:-1, 2:] == centre))
    return inside


def test_eyes_close_in_parsing_and_rgb_with_blinks():
    identity = _identities(1)[0]
    exp = np.concatenate([_exp(1), _exp(1, blink_left=1.0, blink_right=1.0)])
    _, parsing, _ = _render(exp, identity)
    eyes = torch.stack([(parsing == render.LABELS[k]).sum(dim=(1, 2)) for k in ("l_eye", "r_eye")], dim=1)
    assert torch.all(eyes[0] > 15) and torch.all(eyes[1] == 0)


def test_head_and_lighting_do_not_depend_on_the_mouth():
    """Everything above the upper cheeks renders identically whatever the mouth does."""
    identity = _identities(1)[0]
    n = 4
    rng = np.random.default_rng(2)
    angles = face.pose_track(rng, n, rot_deg=(15.0, 8.0, 5.0)).angles_deg
    scene = render.sample_scene(rng, n)
    quiet = _exp(n)
    talking = _exp(n, jaw=1.0, spread=0.5, round=0.5)
    rgb_a, par_a, lm = _render(quiet, identity, angles, scene)
    rgb_b, par_b, _ = _render(talking, identity, angles, scene)
    top = int(np.floor(lm[:, 1, 1].min()))  # jaw point 1: the jaw line starts to follow the chin below it
    assert top > SIZE // 3
    assert torch.equal(rgb_a[:, :, :top], rgb_b[:, :, :top]) and torch.equal(par_a[:, :top], par_b[:, :top])
    assert not torch.equal(rgb_a, rgb_b)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"exp: expected shape \(n, 64\)"):
        MODEL.landmarks(np.zeros(face.N_ID), np.zeros((3, 10)))
    with pytest.raises(ValueError, match="mouth_params"):
        face.expression_track(np.zeros((5, 3)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="landmarks2d"):
        render.render_frames(np.zeros((2, 60, 2)), _identities(1)[0], _flat_scene(2))
    with pytest.raises(ValueError, match="scene"):
        render.render_frames(np.zeros((2, 68, 2)), _identities(1)[0], _flat_scene(3))
