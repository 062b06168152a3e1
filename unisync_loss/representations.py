"""The six input representations: shape contracts, validation and differentiable preprocessing.

Batched model-side contract (``T`` is the expert's window in video frames, 25 fps):

==============  ========  ==================================================================
name            modality  tensor
==============  ========  ==================================================================
``mel``         audio     ``(B, 1, 80, mel_steps(T))`` float log-mel (16 steps for T=5)
``hubert``      audio     ``(B, 2T, D)`` float SSL speech features at 50 Hz
``rgb``         visual    ``(B, 3, T, H, W)`` float full face crops (RGB, [0, 1] by default)
``parsing``     visual    ``(B, K, T, H, W)`` float class probabilities or ``(B, T, H, W)`` integer labels
``landmarks``   visual    ``(B, T, N, 2 or 3)`` float points (pixels or model units), in the expert's convention
``3dmm``        visual    ``(B, T, D)`` float expression coefficients
==============  ========  ==================================================================

Each representation is described by a :class:`Representation` spec: its options (stored in the
expert config, e.g. ``{"dim": 1024}`` for HuBERT), ``validate`` (raises ``ValueError`` naming the
representation, the expected shape and the received shape) and ``preprocessor`` (an ``nn.Module``
that turns the validated input into the ``(B, channels, time)`` or ``(B, channels, T, h, w)``
tensor its encoder takes).

Landmark coordinate conventions: ``"y_down"`` is the image convention every detector gives (x
right, y down, z away from the camera, as MediaPipe), ``"y_up"`` the model convention of the
procedural corpus (x right, y up, z towards the camera). The two differ by a 180° turn about the x
axis (y and z negated). An expert records the convention of the landmarks it was trained on in its
``landmarks`` options (``convention``; headers written before the option existed are ``"y_up"``, the
corpus's); :func:`fit_landmarks` converts what a user gives (default ``"y_down"``, the detectors')
to it, and brings 2D points to a 3D expert (z = 0, on request) or 3D points to a 2D one (z dropped).

Frames as decoders give them, ``(n, H, W, 3)`` uint8, become the canonical ``(n, 3, H, W)`` clip
with :func:`rgb_clip`.

Value checks read tensor values and therefore synchronise with the device: NaN/Inf everywhere;
mel within Wav2Lip's [-4, 4] scaling (with a 2x margin); rgb in [0, 1] (+-0.25); parsing
probabilities in [0, 1] summing to 1 over K, labels in [0, K); landmark windows not degenerate
(all points at one place); hubert / 3dmm within ``MAX_STANDARD_SCORE`` standard deviations of the
expert's stored statistics. ``check_finite`` selects them: ``None`` (default) checks only tensors on
the CPU, where no device sync is involved; ``True`` always checks; ``False`` never does. Shape and
dtype checks read host metadata only and always run (among them: rgb / parsing frames must be full
face crops, not already the lower half the expert crops itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import kornia
import torch
from einops import rearrange
from torch import Tensor, nn

from unisync_loss.audio import MAX_ABS_VALUE, N_MELS, mel_steps

AUDIO_REPRESENTATIONS = ("mel", "hubert")
VISUAL_REPRESENTATIONS = ("rgb", "parsing", "landmarks", "3dmm")
REPRESENTATIONS = AUDIO_REPRESENTATIONS + VISUAL_REPRESENTATIONS

IBUG_MOUTH = tuple(range(48, 68))
"""The 20 mouth points of the iBUG-68 layout (what GeneFace's expert sees)."""
IBUG_EYE_CORNERS = (36, 45)
"""Outer eye corners of the iBUG-68 layout, used for in-plane rotation alignment."""
LANDMARK_CONVENTIONS = ("y_down", "y_up")
"""Landmark coordinate conventions: image (detectors) and model (the procedural corpus); see the module docstring."""
USER_LANDMARK_CONVENTION = "y_down"
"""What users' landmarks are taken to be unless they say otherwise: the convention of face detectors."""
EXPERT_LANDMARK_CONVENTION = "y_up"
"""The convention of an expert whose header does not name one: the procedural corpus's."""
CELEBAMASK_CLASSES = 19
DEFAULT_FACE_SIZE = 96
MAX_FACE_SIZE = 1024
"""Largest ``size`` option of rgb / parsing: no tensor pins it, and the crop is resized to it at every call."""
MAX_STANDARD_SCORE = 1000.0
"""hubert / 3dmm values further than this many standard deviations from the expert's statistics are refused."""
MEL_MARGIN = 2.0
"""A mel is refused when a value lies beyond ``MEL_MARGIN`` x Wav2Lip's +-4 (e.g. a mel in dB, -100..0)."""
RGB_MARGIN = 0.25
"""rgb values below ``-RGB_MARGIN`` or above ``1 + RGB_MARGIN`` (after the value_range conversion) are refused."""
PROBABILITY_TOLERANCE = 0.1
"""Parsing probabilities: each in [-tol, 1 + tol], and their sum over K within 1 +- tol."""
MIN_LANDMARK_SPREAD = 1e-4
"""A landmark window whose RMS spread around the centroid is below this x max(1, |coordinate|) is degenerate."""

Modality = Literal["audio", "visual"]


def modality(name: str) -> Modality:
    """``"audio"`` or ``"visual"`` for a representation name; ``ValueError`` for an unknown name."""
    if name in AUDIO_REPRESENTATIONS:
        return "audio"
    if name in VISUAL_REPRESENTATIONS:
        return "visual"
    raise ValueError(f"unknown representation {name!r}; known: {', '.join(REPRESENTATIONS)}")


@dataclass(frozen=True)
class EncoderInput:
    """What a representation's preprocessor hands to its encoder.

    ``layout`` is ``"sequence"`` for ``(B, channels, length)``, ``"frames"`` for
    ``(B, channels, T, height, width)`` and ``"spectrogram"`` for ``(B, 1, height, length)``.
    ``channels_last`` (frames only): the encoder folds the frames channels-last, faster for many
    input channels on CPU (parsing's 19; not for rgb's 3: ``benchmarks/bench_frame_layout.py``).
    """

    layout: Literal["sequence", "frames", "spectrogram"]
    channels: int
    length: int
    height: int = 1
    width: int = 1
    channels_last: bool = False


class Representation:
    """Spec of one representation: options, shape contract, validation and preprocessing.

    Subclasses set ``name``, ``defaults`` (every option with its default) and implement
    ``expected``, ``_check`` (shape/dtype rules beyond the common ones), ``encoder_input`` and
    ``preprocessor``.
    """

    name: str
    defaults: Mapping[str, Any] = {}
    float_only = True

    def options(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """All options with defaults filled in and checked; ``ValueError`` for unknown keys or bad values."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            valid = ", ".join(self.defaults) or "none"
            raise ValueError(f"{self.name}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
        merged = {**self.defaults, **given}
        return self._check_options(merged)

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return options

    def expected(self, options: Mapping[str, Any], window: int) -> str:
        """The expected shape as text, e.g. ``"(B, 2T=10, D=1024)"``."""
        raise NotImplementedError

    def validate(
        self,
        x: Any,
        options: Mapping[str, Any],
        window: int,
        check_finite: bool | None = None,
        statistics: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """Raise ``ValueError`` (``TypeError`` for a non-tensor) unless ``x`` fits the contract.

        ``statistics``: the expert's ``(mean, std)`` ``(D,)`` of a standardised feature sequence;
        when given, value checks also refuse values beyond ``MAX_STANDARD_SCORE`` standard deviations.
        """
        expected = self.expected(options, window)
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.name}: expected a tensor {expected}, got {type(x).__name__}")
        problem = self._check(x, options, window)
        if problem is None and x.shape[0] == 0:
            problem = "the batch is empty"
        if problem is None and self.float_only and not x.is_floating_point():
            problem = f"dtype must be floating point, got {x.dtype}"
        check_values = x.device.type == "cpu" if check_finite is None else check_finite
        if problem is None and check_values:
            problem = self._check_values(x, options)
        if problem is None and check_values and statistics is not None:
            problem = _standard_score_problem(x, *statistics)
        if problem is not None:
            raise ValueError(
                f"{self.name}: {problem}; expected {expected}, got {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
            )

    def _check(self, x: Tensor, options: Mapping[str, Any], window: int) -> str | None:
        """Shape (and dtype) problem of ``x`` as text, or ``None``."""
        raise NotImplementedError

    def _check_values(self, x: Tensor, options: Mapping[str, Any]) -> str | None:
        if x.is_floating_point():
            if torch.isnan(x).any():
                return "the input contains NaN"
            if torch.isinf(x).any():
                return "the input contains Inf"
        return None

    def encoder_input(self, options: Mapping[str, Any], window: int) -> EncoderInput:
        """Layout and size of the preprocessed tensor the encoder receives."""
        raise NotImplementedError

    def preprocessor(self, options: Mapping[str, Any], window: int) -> nn.Module:
        """Differentiable preprocessing module built from the options."""
        raise NotImplementedError


def _dims_problem(x: Tensor, names: Sequence[str], wanted: Sequence[int | None]) -> str | None:
    """Check rank and the fixed sizes in ``wanted`` (``None``: any size); describe the first mismatch."""
    if x.dim() != len(wanted):
        return f"rank must be {len(wanted)}, got {x.dim()}"
    for axis, (label, size) in enumerate(zip(names, wanted)):
        if size is not None and x.shape[axis] != size:
            return f"{label} (dim {axis}) must be {size}, got {x.shape[axis]}"
    return None


def _range_problem(x: Tensor, what: str, low: float, high: float, expected: str, hint: str) -> str | None:
    """``"{what} must lie in {expected}, got values in [min, max]: {hint}"`` when ``x`` leaves [low, high]."""
    smallest, largest = x.amin().item(), x.amax().item()
    if smallest < low or largest > high:
        return f"{what} must lie in {expected}, got values in [{smallest:.4g}, {largest:.4g}]: {hint}"
    return None


def _standard_score_problem(x: Tensor, mean: Tensor, std: Tensor) -> str | None:
    """Values of ``(B, L, D)`` further than ``MAX_STANDARD_SCORE`` stds from the expert's ``(D,)`` statistics."""
    scores = ((x.float() - mean) / std).abs().amax(dim=(0, 1))
    feature = int(scores.argmax())
    if scores[feature] <= MAX_STANDARD_SCORE:
        return None
    return (f"values must lie within {MAX_STANDARD_SCORE:g} standard deviations of the expert's training statistics, "
            f"got {scores[feature].item():.3g} standard deviations at feature {feature} (mean {mean[feature].item():.3g}, "
            f"std {std[feature].item():.3g}; values in [{x.amin().item():.3g}, {x.amax().item():.3g}]): wrong units or a diverged generator?")


def _positive_int(name: str, option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: option {option!r} must be a positive integer, got {value!r}")
    return value


class Standardize(nn.Module):
    """Per-feature ``(x - mean) / std`` along the last axis; statistics are buffers saved with the expert.

    Shapes: ``(..., D)`` -> ``(..., D)``; ``mean`` and ``std`` are ``(D,)`` (default 0 and 1).
    """

    def __init__(self, dim: int, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((dim,), mean))
        self.register_buffer("std", torch.full((dim,), std))

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Replace the statistics; both ``(D,)``, ``std`` strictly positive."""
        for label, value in (("mean", mean), ("std", std)):
            if tuple(value.shape) != tuple(self.mean.shape):
                raise ValueError(f"{label} must have shape {tuple(self.mean.shape)}, got {tuple(value.shape)}")
        if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError("std must be > 0 and mean finite")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class SequencePreprocess(nn.Module):
    """Standardise per feature and put time last: ``(B, L, D)`` -> ``(B, D, L)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.standardize = Standardize(dim)

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.standardize.set_statistics(mean, std)

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.standardize(x), "b l d -> b d l")


class MouthCrop(nn.Module):
    """Lower half of full-face frames, resized to ``(size // 2, size)`` (antialiased when shrinking).

    Shapes: ``(B, C, T, H, W)`` -> ``(B, C, T, size // 2, size)``.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.out_size = (size // 2, size)

    def forward(self, x: Tensor) -> Tensor:
        return self.resize(lower_half(x))

    def resize(self, mouth: Tensor) -> Tensor:
        """``(B, C, T, h, W)`` -> ``(B, C, T, size // 2, size)``; the input itself when it has that size already."""
        if tuple(mouth.shape[-2:]) == self.out_size:
            return mouth
        return kornia.geometry.transform.resize(mouth, self.out_size, interpolation="bilinear", antialias=True)


def lower_half(x: Tensor) -> Tensor:
    """The rows ``H // 2 ...`` of frames ``(..., H, W)`` (a view): the mouth half of a face crop."""
    return x[..., x.shape[-2] // 2:, :]


class RGBPreprocess(nn.Module):
    """Lower-half crop, resize, per-channel normalisation: ``(B, 3, T, H, W)`` in [0, 1], RGB -> ``(B, 3, T, h, w)``.

    ``mean`` / ``std`` are ``(3,)`` buffers (default 0.5 / 0.5, i.e. [0, 1] -> [-1, 1]).
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.crop = MouthCrop(size)
        self.standardize = Standardize(3, mean=0.5, std=0.5)

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.standardize.set_statistics(mean, std)

    def forward(self, x: Tensor) -> Tensor:
        x = self.crop(x)
        return rearrange(self.standardize(rearrange(x, "b c t h w -> b t h w c")), "b t h w c -> b c t h w")


class ParsingPreprocess(nn.Module):
    """Lower-half crop; integer labels -> one-hot, probabilities kept as they are; then resize.

    Shapes: ``(B, T, H, W)`` integer or ``(B, K, T, H, W)`` float -> ``(B, K, T, size // 2, size)`` float.
    Labels outside ``[0, K)`` give an all-zero class vector (``validate`` rejects them when values are checked).
    Labels are cropped before the one-hot (same result, half the ``K``-fold expansion), which is built
    with the classes last in memory, the layout ``FrameEncoder`` folds without a copy.
    """

    def __init__(self, classes: int, size: int) -> None:
        super().__init__()
        self.register_buffer("class_ids", torch.arange(classes), persistent=False)
        self.crop = MouthCrop(size)

    def forward(self, x: Tensor) -> Tensor:
        mouth = lower_half(x)
        if not mouth.is_floating_point():
            one_hot = (mouth.unsqueeze(-1) == self.class_ids).to(torch.get_default_dtype())
            mouth = rearrange(one_hot, "b t h w k -> b k t h w")
        return self.crop.resize(mouth)


def centred_landmarks(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Points minus each frame's centroid, and each window's RMS spread around it and smallest acceptable spread.

    ``(B, T, N, C)`` -> centred ``(B, T, N, C)``, spread ``(B,)``, floor ``(B,)`` =
    ``MIN_LANDMARK_SPREAD * max(1, max |coordinate|)``. Computed in float32 whatever the input dtype
    (float16 pixel coordinates overflow when squared). Device-side only: no host sync.
    """
    points = x.float()
    centred = points - points.mean(dim=2, keepdim=True)
    mean_square = centred.square().sum(dim=-1).mean(dim=(1, 2))
    floor = MIN_LANDMARK_SPREAD * points.abs().amax(dim=(1, 2, 3)).clamp_min(1.0)
    return centred, mean_square.clamp_min(floor.square()).sqrt(), floor


class LandmarkPreprocess(nn.Module):
    """Normalise landmarks for translation, scale and (optionally) in-plane rotation, then pick points.

    Shapes: ``(B, T, N, C)`` -> ``(B, M * C, T)`` float32 with ``M`` the selected points (all ``N`` by default).
    Translation: each frame's centroid is removed. Scale: divided by the RMS distance to the
    centroid over the whole window (so mouth opening keeps its size across frames), never less than
    ``MIN_LANDMARK_SPREAD * max(1, max |coordinate|)``: a degenerate window (all points at one place,
    refused by value checks) then gives points near 0 and gradients at most ``1 / floor`` times the
    upstream gradient, instead of dividing by ~0. Rotation: each
    frame is rotated in the x-y plane so that the line between ``eye_corners`` is horizontal.
    """

    def __init__(self, mouth: Sequence[int] | None, rotation: bool, eye_corners: Sequence[int], eps: float = 1e-12) -> None:
        super().__init__()
        self.rotation = rotation
        self.eye_corners = tuple(eye_corners)
        self.eps = eps
        selected = torch.tensor(list(mouth), dtype=torch.long) if mouth is not None else None
        self.register_buffer("selected", selected, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        centred, spread, _ = centred_landmarks(x)
        x = centred / spread.view(-1, 1, 1, 1)
        if self.rotation:
            x = self._align_eyes(x)
        if self.selected is not None:
            x = x.index_select(2, self.selected)
        return rearrange(x, "b t n c -> b (n c) t")

    def _align_eyes(self, x: Tensor) -> Tensor:
        left, right = self.eye_corners
        direction = x[:, :, right, :2] - x[:, :, left, :2]
        length = (direction.square().sum(dim=-1, keepdim=True) + self.eps).sqrt()
        cos, sin = (direction / length).unsqueeze(2).unbind(dim=-1)
        px, py = x[..., 0], x[..., 1]
        rotated = torch.stack((cos * px + sin * py, cos * py - sin * px), dim=-1)
        return torch.cat((rotated, x[..., 2:]), dim=-1)


class Mel(Representation):
    """Wav2Lip log-mel window ``(B, 1, 80, mel_steps(T))``; no options, no preprocessing."""

    name = "mel"

    def expected(self, options: Mapping[str, Any], window: int) -> str:
        return f"(B, 1, {N_MELS}, S={mel_steps(window)})"

    def _check(self, x: Tensor, options: Mapping[str, Any], window: int) -> str | None:
        return _dims_problem(x, ("B", "channels", "mel bins", "S = mel_steps(T)"), (None, 1, N_MELS, mel_steps(window)))

    def _check_values(self, x: Tensor, options: Mapping[str, Any]) -> str | None:
        limit = MEL_MARGIN * MAX_ABS_VALUE
        return super()._check_values(x, options) or _range_problem(
            x, "values", -limit, limit, f"Wav2Lip's symmetric log-mel scale [-{MAX_ABS_VALUE:g}, {MAX_ABS_VALUE:g}]",
            "a mel in dB or in power units? compute it with unisync_loss.audio.log_mel",
        )

    def encoder_input(self, options: Mapping[str, Any], window: int) -> EncoderInput:
        return EncoderInput("spectrogram", channels=1, length=mel_steps(window), height=N_MELS)

    def preprocessor(self, options: Mapping[str, Any], window: int) -> nn.Module:
        return nn.Identity()


class FeatureSequence(Representation):
    """A ``(B, L, D)`` feature sequence standardised with per-feature statistics stored in the expert."""

    frames_per_video_frame: int

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        _positive_int(self.name, "dim", options["dim"])
        return options

    def _length(self, window: int) -> int:
        return self.frames_per_video_frame * window

    def _check(self, x: Tensor, options: Mapping[str, Any], window: int) -> str | None:
        return _dims_problem(x, ("B", self._length_label(), "D"), (None, self._length(window), options["dim"]))

    def _length_label(self) -> str:
        return "T" if self.frames_per_video_frame == 1 else f"{self.frames_per_video_frame}T"

    def expected(self, options: Mapping[str, Any], window: int) -> str:
        return f"(B, {self._length_label()}={self._length(window)}, D={options['dim']})"

    def encoder_input(self, options: Mapping[str, Any], window: int) -> EncoderInput:
        return EncoderInput("sequence", channels=options["dim"], length=self._length(window))

    def preprocessor(self, options: Mapping[str, Any], window: int) -> nn.Module:
        return SequencePreprocess(options["dim"])


class Hubert(FeatureSequence):
    """HuBERT-style features at 50 Hz: ``(B, 2T, D)``; option ``dim`` (1024 large, 768 base)."""

    name = "hubert"
    defaults = {"dim": 1024}
    frames_per_video_frame = 2


class Coefficients3DMM(FeatureSequence):
    """3DMM expression coefficients per video frame: ``(B, T, D)``; option ``dim`` (64 for BFM)."""

    name = "3dmm"
    defaults = {"dim": 64}
    frames_per_video_frame = 1


class RGB(Representation):
    """Full face crops ``(B, 3, T, H, W)``, H >= 2 and H > 3/4 W; option ``size``: face size the expert works at (<= 1024).

    The expert sees the lower half resized to ``(size // 2, size)`` (48x96 for the default 96).
    """

    name = "rgb"
    defaults = {"size": DEFAULT_FACE_SIZE}

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if not 2 <= _positive_int(self.name, "size", options["size"]) <= MAX_FACE_SIZE:
            raise ValueError(f"{self.name}: option 'size' must lie in [2, {MAX_FACE_SIZE}], got {options['size']}")
        return options

    def expected(self, options: Mapping[str, Any], window: int) -> str:
        return f"(B, 3, T={window}, H, W)"

    def _check(self, x: Tensor, options: Mapping[str, Any], window: int) -> str | None:
        return _dims_problem(x, ("B", "channels", "T", "H", "W"), (None, 3, window, None, None)) or _frame_size_problem(x)

    def _check_values(self, x: Tensor, options: Mapping[str, Any]) -> str | None:
        return super()._check_values(x, options) or _range_problem(
            x, "values (after UniSyncLoss's value_range conversion)", -RGB_MARGIN, 1.0 + RGB_MARGIN, "[0, 1]",
            "set UniSyncLoss(value_range=(0, 255)) for 8-bit frames or value_range=(-1, 1) for tanh output",
        )

    def encoder_input(self, options: Mapping[str, Any], window: int) -> EncoderInput:
        return EncoderInput("frames", channels=3, length=window, height=options["size"] // 2, width=options["size"])

    def preprocessor(self, options: Mapping[str, Any], window: int) -> nn.Module:
        return RGBPreprocess(options["size"])


def _frame_size_problem(x: Tensor) -> str | None:
    height, width = x.shape[-2], x.shape[-1]
    if height < 2 or width < 1:
        return f"frames must be at least 2 x 1 pixels (H x W), got {height} x {width}"
    if 4 * height <= 3 * width:
        return (f"frames must be full face crops (H about W; the expert crops the lower half itself), got H x W = "
                f"{height} x {width}, which looks like a lower-half (mouth) crop: pass the whole face crop")
    return None


class Parsing(Representation):
    """Face parsing: ``(B, K, T, H, W)`` float probabilities or ``(B, T, H, W)`` integer labels.

    Options: ``classes`` (K, CelebAMask-HQ's 19 by default), ``size`` (face size, as for rgb).
    """

    name = "parsing"
    defaults = {"classes": CELEBAMASK_CLASSES, "size": DEFAULT_FACE_SIZE}
    float_only = False

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        _positive_int(self.name, "classes", options["classes"])
        if not 2 <= _positive_int(self.name, "size", options["size"]) <= MAX_FACE_SIZE:
            raise ValueError(f"{self.name}: option 'size' must lie in [2, {MAX_FACE_SIZE}], got {options['size']}")
        return options

    def expected(self, options: Mapping[str, Any], window: int) -> str:
        k = options["classes"]
        return f"(B, K={k}, T={window}, H, W) float probabilities or (B, T={window}, H, W) integer labels"

    def _check(self, x: Tensor, options: Mapping[str, Any], window: int) -> str | None:
        if x.dim() == 4:
            if x.is_floating_point() or x.dtype == torch.bool or x.is_complex():
                return f"a rank-4 input holds integer labels, got dtype {x.dtype}"
            return _dims_problem(x, ("B", "T", "H", "W"), (None, window, None, None)) or _frame_size_problem(x)
        if x.dim() == 5:
            if not x.is_floating_point():
                return f"a rank-5 input holds float class probabilities, got dtype {x.dtype}"
            wanted = (None, options["classes"], window, None, None)
            return _dims_problem(x, ("B", "K (classes)", "T", "H", "W"), wanted) or _frame_size_problem(x)
        return f"rank must be 5 (probabilities) or 4 (labels), got {x.dim()}"

    def _check_values(self, x: Tensor, options: Mapping[str, Any]) -> str | None:
        if x.is_floating_point():
            tolerance = PROBABILITY_TOLERANCE
            hint = "logits? apply softmax(dim=1) first"
            return (super()._check_values(x, options)
                    or _range_problem(x, "class probabilities", -tolerance, 1.0 + tolerance, "[0, 1]", hint)
                    or _range_problem(x.sum(dim=1), "class probabilities summed over K", 1.0 - tolerance, 1.0 + tolerance,
                                      f"[{1.0 - tolerance:g}, {1.0 + tolerance:g}]", hint))
        if bool(((x < 0) | (x >= options["classes"])).any()):
            return f"labels must lie in [0, {options['classes']})"
        return None

    def encoder_input(self, options: Mapping[str, Any], window: int) -> EncoderInput:
        size = options["size"]
        return EncoderInput("frames", channels=options["classes"], length=window, height=size // 2, width=size, channels_last=True)

    def preprocessor(self, options: Mapping[str, Any], window: int) -> nn.Module:
        return ParsingPreprocess(options["classes"], options["size"])


class Landmarks(Representation):
    """Facial landmarks ``(B, T, N, C)``, C = 2 or 3, in any units (normalised inside).

    Options: ``points`` (N, 68 for iBUG), ``coords`` (2 or 3), ``mouth`` (indices of the points
    the expert sees, e.g. ``list(IBUG_MOUTH)``; ``None``: all), ``rotation`` (align the eye line,
    default off), ``eye_corners`` (the two point indices defining the eye line, iBUG 36 / 45),
    ``convention`` (``"y_up"`` or ``"y_down"``: the coordinate convention of the landmarks the
    expert is trained on and fed; :func:`fit_landmarks` converts other inputs to it).
    """

    name = "landmarks"
    defaults = {"points": 68, "coords": 3, "mouth": None, "rotation": False, "eye_corners": list(IBUG_EYE_CORNERS),
                "convention": EXPERT_LANDMARK_CONVENTION}

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        points = _positive_int(self.name, "points", options["points"])
        if options["coords"] not in (2, 3):
            raise ValueError(f"{self.name}: option 'coords' must be 2 or 3, got {options['coords']!r}")
        if not isinstance(options["rotation"], bool):
            raise ValueError(f"{self.name}: option 'rotation' must be true or false, got {options['rotation']!r}")
        if options["convention"] not in LANDMARK_CONVENTIONS:
            raise ValueError(f"{self.name}: option 'convention' must be one of {LANDMARK_CONVENTIONS}, got {options['convention']!r}")
        for key, needed in (("mouth", options["mouth"] is not None), ("eye_corners", options["rotation"])):
            if not needed:
                continue
            indices = options[key]
            if (not isinstance(indices, (list, tuple)) or not indices
                    or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < points for i in indices)):
                raise ValueError(f"{self.name}: option {key!r} must be a non-empty list of point indices in [0, {points}), got {indices!r}")
            options[key] = list(indices)
        if options["rotation"] and len(options["eye_corners"]) != 2:
            raise ValueError(f"{self.name}: option 'eye_corners' needs exactly 2 indices, got {options['eye_corners']!r}")
        options["eye_corners"] = list(options["eye_corners"])
        return options

    def expected(self, options: Mapping[str, Any], window: int) -> str:
        return f"(B, T={window}, N={options['points']}, {options['coords']})"

    def _check(self, x: Tensor, options: Mapping[str, Any], window: int) -> str | None:
        wanted = (None, window, options["points"], options["coords"])
        problem = _dims_problem(x, ("B", "T", "N (points)", "coords"), wanted)
        if problem is not None and x.dim() == 4 and x.shape[-1] in (2, 3) and x.shape[-1] != options["coords"]:
            problem += f" ({_DEPTH_ADVICE[options['coords']]})"
        return problem

    def _check_values(self, x: Tensor, options: Mapping[str, Any]) -> str | None:
        problem = super()._check_values(x, options)
        if problem is not None:
            return problem
        centred, spread, floor = centred_landmarks(x)
        degenerate = (spread <= floor).nonzero()
        if len(degenerate) == 0:
            return None
        index = int(degenerate[0, 0])
        unfloored = centred[index].square().sum(dim=-1).mean().sqrt().item()
        extent = x[index].float().abs().max().item()
        return (f"window {index} of the batch is degenerate (all points at one place, e.g. a failed detector): RMS spread "
                f"{unfloored:.3g} around the centroid with coordinates up to {extent:.3g}; expected a "
                f"spread above {MIN_LANDMARK_SPREAD:g} x max(1, |coordinate|) ({len(degenerate)} such window(s)): drop them from the batch")

    def encoder_input(self, options: Mapping[str, Any], window: int) -> EncoderInput:
        selected = len(options["mouth"]) if options["mouth"] is not None else options["points"]
        return EncoderInput("sequence", channels=selected * options["coords"], length=window)

    def preprocessor(self, options: Mapping[str, Any], window: int) -> nn.Module:
        return LandmarkPreprocess(options["mouth"], options["rotation"], options["eye_corners"])


SPECS: dict[str, Representation] = {
    spec.name: spec for spec in (Mel(), Hubert(), RGB(), Parsing(), Landmarks(), Coefficients3DMM())
}


def spec(name: str) -> Representation:
    """The :class:`Representation` spec of ``name``; ``ValueError`` for an unknown name."""
    modality(name)
    return SPECS[name]


def canonical_rgb(frames: Tensor, channel_order: str, value_range: tuple[float, float]) -> Tensor:
    """Bring ``(B, 3, T, H, W)`` frames to RGB in [0, 1] (the contract), differentiably.

    ``channel_order`` is ``"rgb"`` or ``"bgr"`` (Wav2Lip frames are BGR); ``value_range`` is the
    ``(low, high)`` range of the given values, e.g. ``(0, 255)`` or ``(-1, 1)``.
    """
    if channel_order == "bgr":
        frames = frames.flip(1)
    low, high = value_range
    if (low, high) != (0.0, 1.0):
        frames = (frames - low) / (high - low)
    return frames


def check_batch_sizes(audio: Tensor, visual: Tensor, audio_name: str, visual_name: str) -> None:
    """``ValueError`` unless the audio and visual batches have the same size ``B``."""
    if audio.shape[0] != visual.shape[0]:
        raise ValueError(
            f"batch size mismatch: audio {audio_name} has B={audio.shape[0]} {tuple(audio.shape)}, "
            f"visual {visual_name} has B={visual.shape[0]} {tuple(visual.shape)}; expected the same B for both"
        )


_DEPTH_ADVICE = {
    3: "2D landmarks for an expert trained on 3D ones: fit_landmarks(points, options, pad_depth=True) scores them "
       "with z = 0, a flat face; or use a 2D expert",
    2: "3D landmarks for an expert trained on 2D ones: fit_landmarks(points, options) drops z (the projection a 2D expert sees)",
}


def flip_landmark_convention(points: Tensor) -> Tensor:
    """Turn ``(..., 2 or 3)`` points between the y-down and y-up conventions: y (and z) negated, differentiably."""
    return torch.cat((points[..., :1], -points[..., 1:]), dim=-1)


def fit_landmarks(points: Tensor, options: Mapping[str, Any], convention: str = USER_LANDMARK_CONVENTION,
                  pad_depth: bool = False) -> Tensor:
    """Bring landmarks ``(..., N, C)`` (a clip ``(n, N, C)`` or windows ``(B, T, N, C)``) to an expert's contract.

    ``options``: the expert's ``landmarks`` options (``model.config.visual["landmarks"]``; a header
    without ``convention`` means ``"y_up"``). ``convention``: the convention of ``points``
    (``"y_down"``, what detectors give, by default). Points in the other convention are turned
    (y and z negated); 3D points for a 2D expert lose z (the orthographic projection a 2D expert
    was trained on); 2D points for a 3D expert get z = 0 only with ``pad_depth=True`` (a flat face:
    on the procedural corpus the bundled mel × landmarks expert then keeps every clip offset but
    its window accuracy drops from 72 % to 41 %), otherwise ``ValueError`` with the given shape.
    Differentiable; no host sync.
    """
    if convention not in LANDMARK_CONVENTIONS:
        raise ValueError(f"landmarks: convention must be one of {LANDMARK_CONVENTIONS}, got {convention!r}")
    expected_points, expected_coords = options["points"], options["coords"]
    if not isinstance(points, Tensor):
        raise ValueError(f"landmarks: expected a float tensor (..., N={expected_points}, 2 or 3), got {type(points).__name__}")
    shape = f"{tuple(points.shape)} {str(points.dtype).removeprefix('torch.')}"
    if points.dim() < 2 or points.shape[-1] not in (2, 3) or not points.is_floating_point():
        raise ValueError(f"landmarks: expected float points (..., N={expected_points}, 2 or 3), got {shape}")
    if points.shape[-2] != expected_points:
        raise ValueError(f"landmarks: the expert takes N={expected_points} points per frame, got {points.shape[-2]} in {shape}")
    if points.shape[-1] == 2 and expected_coords == 3:
        if not pad_depth:
            raise ValueError(f"landmarks: the expert was trained on 3D points (..., {expected_points}, 3), "
                             f"got 2D points {shape}; pass pad_depth=True to score them with z = 0 (a flat face), "
                             "or use an expert trained on 2D landmarks")
        points = torch.cat((points, torch.zeros_like(points[..., :1])), dim=-1)
    elif points.shape[-1] == 3 and expected_coords == 2:
        points = points[..., :2]
    if convention != options.get("convention", EXPERT_LANDMARK_CONVENTION):
        points = flip_landmark_convention(points)
    return points


def rgb_clip(frames: Tensor) -> Tensor:
    """A clip's frames in the canonical ``(n, 3, H, W)`` layout (same dtype).

    Accepts the decoder layout ``(n, H, W, 3)`` (PyAV, imageio; OpenCV after BGR -> RGB) and the
    canonical one; a tensor that fits both (``(n, 3, H, 3)``) is taken as canonical. uint8 values
    are 0-255, float values [0, 1] (see ``windows.cut_windows``).
    """
    if not isinstance(frames, Tensor) or frames.dim() != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
        got = f"{tuple(frames.shape)} {frames.dtype}" if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"rgb: expected frames (n, 3, H, W) or (n, H, W, 3), got {got}")
    return frames if frames.shape[1] == 3 else frames.permute(0, 3, 1, 2)
