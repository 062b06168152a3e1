"""Utterances as timed speech units, and the continuous mouth articulation they produce.

An :class:`Utterance` is a sequence of phone-like units (vowels, consonants, pauses) with start and
end times in seconds. Every unit carries articulation targets (jaw opening, lip spreading, lip
rounding, lip closure) and source properties (voicing, frication, a release burst, nasal murmur)
that the synthesiser in :mod:`pretrain.synth.speech` reads.

Coarticulation: each target is held over its unit (a box in time) and the boxes are smoothed by a
Gaussian in closed form (differences of error functions), so the trajectory is an analytic
function of time. Sampling it at 16 kHz for the audio or at 25 fps for the face therefore gives the
same articulation with identical timing; only the sampling grid differs. Sample ``n`` of a track at
``rate_hz`` describes the interval ``[n / rate_hz, (n + 1) / rate_hz)`` and is taken at its centre.

Closure is special: it is twice the smoothed closure target, clipped to [0, 1]. Bilabial units
(p, b, m) have target 1, so the lips are fully shut (closure = 1) over the whole unit and open on
either side within about two smoothing widths; labiodentals (f, v) and pauses only approach the lips.
Consonants that do not use the lips (t, d, s, z, n, l, k, g) inherit spreading and rounding from the
following vowel (anticipatory lip coarticulation).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

UNIT_CLASSES = ("pause", "open_vowel", "close_vowel", "rounded_vowel", "bilabial", "labiodental", "alveolar", "velar")
"""Unit class names; :attr:`Utterance.classes` and :func:`unit_labels` hold indices into this tuple."""
PAUSE, OPEN_VOWEL, CLOSE_VOWEL, ROUNDED_VOWEL, BILABIAL, LABIODENTAL, ALVEOLAR, VELAR = range(len(UNIT_CLASSES))
VOWEL_CLASSES = (OPEN_VOWEL, CLOSE_VOWEL, ROUNDED_VOWEL)
MOUTH_COLUMNS = ("jaw", "spread", "round", "closure")
"""Column order of :func:`mouth_track`."""

# Smoothing widths (Gaussian standard deviations, seconds) of the coarticulation per quantity.
SIGMA_JAW = 0.025
SIGMA_LIPS = 0.035
SIGMA_CLOSURE = 0.012


@dataclass(frozen=True)
class Phone:
    """One phone of the inventory.

    Attributes:
        name: ASCII symbol.
        unit_class: index into :data:`UNIT_CLASSES`.
        jaw, spread, round, closure: articulation targets in [0, 1]; ``spread`` / ``round`` None means
            "inherit from the following vowel".
        voicing: amplitude of the voiced source during the unit (0 unvoiced, 1 full vowel).
        frication: amplitude of frication noise during the unit.
        burst: a plosive: the unit is an oral closure released by a noise burst at its end.
        murmur: voiced energy leaves through the nose / as a voice bar (low-frequency murmur only).
        aspirated: aspiration noise follows the release (voiceless plosives).
        duration: (min, max) duration in seconds at speaking rate 1.
    """

    name: str
    unit_class: int
    jaw: float
    spread: float | None
    round: float | None
    closure: float
    voicing: float
    frication: float
    burst: bool
    murmur: bool
    aspirated: bool
    duration: tuple[float, float]


def _consonant(name: str, unit_class: int, jaw: float, closure: float, voicing: float, frication: float = 0.0,
               burst: bool = False, murmur: bool = False, aspirated: bool = False,
               duration: tuple[float, float] = (0.06, 0.09), lips: tuple[float, float] | None = None) -> Phone:
    spread, round_ = lips if lips is not None else (None, None)
    return Phone(name, unit_class, jaw, spread, round_, closure, voicing, frication, burst, murmur, aspirated, duration)


VOWELS: tuple[Phone, ...] = tuple(
    Phone(name, cls, jaw, spread, round_, 0.0, 1.0, 0.0, False, False, False, (0.08, 0.19))
    for name, cls, jaw, spread, round_ in (
        ("a", OPEN_VOWEL, 0.95, 0.25, 0.0), ("ae", OPEN_VOWEL, 0.8, 0.6, 0.0), ("uh", OPEN_VOWEL, 0.65, 0.35, 0.05),
        ("i", CLOSE_VOWEL, 0.12, 0.95, 0.0), ("ih", CLOSE_VOWEL, 0.25, 0.75, 0.0), ("e", CLOSE_VOWEL, 0.4, 0.75, 0.0),
        ("u", ROUNDED_VOWEL, 0.15, 0.05, 0.95), ("uu", ROUNDED_VOWEL, 0.25, 0.15, 0.75),
        ("o", ROUNDED_VOWEL, 0.45, 0.1, 0.8),
    ))
"""Vowel inventory: three open, three close (spread) and three rounded vowels."""

CONSONANTS: tuple[Phone, ...] = (
    _consonant("p", BILABIAL, 0.12, 1.0, 0.0, burst=True, aspirated=True, duration=(0.06, 0.1)),
    _consonant("b", BILABIAL, 0.12, 1.0, 0.08, burst=True, murmur=True, duration=(0.055, 0.09)),
    _consonant("m", BILABIAL, 0.1, 1.0, 0.5, murmur=True, duration=(0.06, 0.1)),
    _consonant("f", LABIODENTAL, 0.12, 0.35, 0.0, frication=0.05, duration=(0.07, 0.12), lips=(0.35, 0.0)),
    _consonant("v", LABIODENTAL, 0.12, 0.35, 0.25, frication=0.03, duration=(0.05, 0.09), lips=(0.35, 0.0)),
    _consonant("t", ALVEOLAR, 0.2, 0.0, 0.0, burst=True, aspirated=True, duration=(0.05, 0.09)),
    _consonant("d", ALVEOLAR, 0.2, 0.0, 0.08, burst=True, murmur=True, duration=(0.04, 0.07)),
    _consonant("s", ALVEOLAR, 0.15, 0.0, 0.0, frication=0.12, duration=(0.08, 0.13)),
    _consonant("z", ALVEOLAR, 0.15, 0.0, 0.25, frication=0.07, duration=(0.06, 0.1)),
    _consonant("n", ALVEOLAR, 0.2, 0.0, 0.5, murmur=True, duration=(0.05, 0.08)),
    _consonant("l", ALVEOLAR, 0.3, 0.0, 0.55, duration=(0.04, 0.07)),
    _consonant("k", VELAR, 0.3, 0.0, 0.0, burst=True, aspirated=True, duration=(0.06, 0.09)),
    _consonant("g", VELAR, 0.3, 0.0, 0.08, burst=True, murmur=True, duration=(0.045, 0.075)),
)
"""Consonant inventory: bilabials p b m, labiodentals f v, alveolars t d s z n l, velars k g."""
CONSONANT_WEIGHTS = np.array([1.2, 1.0, 1.3, 0.8, 0.6, 1.4, 1.0, 1.3, 0.5, 1.3, 1.0, 1.1, 0.6])
"""Relative frequency of each consonant (bilabials about a fifth of all consonants)."""
PAUSE_PHONE = Phone("_", PAUSE, 0.05, 0.3, 0.1, 0.3, 0.0, 0.0, False, False, False, (0.12, 0.45))


@dataclass(frozen=True)
class Utterance:
    """A timed sequence of ``U`` speech units covering ``[0, duration]`` seconds.

    Attributes:
        phones: (U,) phone names.
        classes: (U,) int64 indices into :data:`UNIT_CLASSES`.
        start, end: (U,) float64 seconds; ``start[0] == 0``, ``end[-1] == duration``, contiguous.
        targets: (U, 4) float64 articulation targets (jaw, spread, round, closure target) in [0, 1].
        voicing: (U,) float64 voiced-source amplitude (0 = voiceless).
        frication: (U,) float64 frication-noise amplitude.
        burst: (U,) bool, plosive released by a burst at ``end``.
        murmur: (U,) bool, voiced energy is a low-frequency murmur (nasals, voice bars).
        aspirated: (U,) bool, aspiration noise follows the release.
        accent: (U,) float64 pitch accent in semitones (vowels only, 0 elsewhere).
        duration: total length in seconds.
    """

    phones: tuple[str, ...]
    classes: np.ndarray
    start: np.ndarray
    end: np.ndarray
    targets: np.ndarray
    voicing: np.ndarray
    frication: np.ndarray
    burst: np.ndarray
    murmur: np.ndarray
    aspirated: np.ndarray
    accent: np.ndarray
    duration: float


def sample_utterance(rng: np.random.Generator, seconds: float, speaking_rate: float = 1.0,
                     pause_prob: float = 0.15, onset_prob: float = 0.8, coda_prob: float = 0.3) -> Utterance:
    """Random babble: syllables (C)V(C) with pauses between some of them, exactly ``seconds`` long.

    Args:
        rng: the only source of randomness.
        seconds: utterance length in seconds (> 0).
        speaking_rate: tempo factor; unit durations are divided by it (1 = about 4.5 syllables/s).
        pause_prob: probability of a pause after each syllable.
        onset_prob, coda_prob: probability that a syllable starts / ends with a consonant.
    Returns:
        the :class:`Utterance`; the last unit is cut at ``seconds``. A short pause may open it.
    """
    if seconds <= 0 or speaking_rate <= 0:
        raise ValueError(f"sample_utterance: expected seconds > 0 and speaking_rate > 0, "
                         f"got {seconds}, {speaking_rate}")
    consonant_p = CONSONANT_WEIGHTS / CONSONANT_WEIGHTS.sum()
    units: list[tuple[Phone, float, np.ndarray, float]] = []  # phone, duration, targets, accent

    def add(phone: Phone, accent: float = 0.0) -> None:
        duration = rng.uniform(*phone.duration) / (1.0 if phone.unit_class == PAUSE else speaking_rate)
        targets = np.array([phone.jaw, phone.spread if phone.spread is not None else np.nan,
                            phone.round if phone.round is not None else np.nan, phone.closure])
        if phone.unit_class in VOWEL_CLASSES:
            targets[:3] = np.clip(targets[:3] + rng.uniform(-0.05, 0.05, size=3), 0.0, 1.0)
        units.append((phone, duration, targets, accent))

    if rng.random() < 0.5:
        add(PAUSE_PHONE)
    total = 0.0
    while total < seconds:
        if rng.random() < onset_prob:
            add(CONSONANTS[rng.choice(len(CONSONANTS), p=consonant_p)])
        stressed = rng.random() < 0.35
        add(VOWELS[rng.integers(len(VOWELS))], accent=rng.uniform(1.0, 3.0) if stressed else rng.uniform(-0.5, 0.5))
        if rng.random() < coda_prob:
            add(CONSONANTS[rng.choice(len(CONSONANTS), p=consonant_p)])
        if rng.random() < pause_prob:
            add(PAUSE_PHONE)
        total = sum(u[1] for u in units)

    targets = np.stack([u[2] for u in units])
    # Lip-neutral consonants take spreading / rounding of the next vowel (or the previous one at the end).
    vowel_rows = np.flatnonzero([u[0].unit_class in VOWEL_CLASSES for u in units])
    for row in np.flatnonzero(np.isnan(targets[:, 1])):
        later = vowel_rows[vowel_rows > row]
        targets[row, 1:3] = targets[later[0] if later.size else vowel_rows[-1], 1:3]
    end = np.cumsum([u[1] for u in units])
    keep = int(np.searchsorted(end, seconds)) + 1
    end = np.minimum(end[:keep], seconds)
    end[-1] = seconds
    phones = [u[0] for u in units[:keep]]
    return Utterance(
        phones=tuple(p.name for p in phones),
        classes=np.array([p.unit_class for p in phones], dtype=np.int64),
        start=np.concatenate([[0.0], end[:-1]]),
        end=end,
        targets=targets[:keep],
        voicing=np.array([p.voicing for p in phones]),
        frication=np.array([p.frication for p in phones]),
        burst=np.array([p.burst for p in phones]) & (end < seconds),
        murmur=np.array([p.murmur for p in phones]),
        aspirated=np.array([p.aspirated for p in phones]),
        accent=np.array([u[3] for u in units[:keep]]),
        duration=float(seconds),
    )


def sample_times(duration: float, rate_hz: float) -> np.ndarray:
    """Centres of the ``round(duration · rate_hz)`` sampling intervals at ``rate_hz``, seconds, (n,)."""
    return (np.arange(int(round(duration * rate_hz))) + 0.5) / rate_hz


def smoothed_boxes(utterance: Utterance, times: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed unit indicator boxes at ``times`` (seconds), (n, U) float64.

    The first unit extends to −∞ and the last to +∞, so every row sums to 1 and a weighted sum of
    the columns is a smooth interpolation of per-unit values that reaches them inside long units.
    """
    start = utterance.start.copy()
    end = utterance.end.copy()
    start[0], end[-1] = -np.inf, np.inf
    t = torch.from_numpy(np.asarray(times, dtype=np.float64))[:, None]
    scale = 1.0 / (sigma * np.sqrt(2.0))
    rise = torch.erf((t - torch.from_numpy(start)[None]) * scale)
    fall = torch.erf((t - torch.from_numpy(end)[None]) * scale)
    return (0.5 * (rise - fall)).numpy()


def articulation_at(utterance: Utterance, times: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Mouth parameters (jaw, spread, round, closure) in [0, 1] at arbitrary ``times`` (seconds), (n, 4).

    ``strength`` scales jaw, spread and round (hypo- / hyper-articulation); closure is not scaled,
    so bilabials always seal the lips.
    """
    out = np.empty((len(times), 4))
    out[:, 0] = smoothed_boxes(utterance, times, SIGMA_JAW) @ utterance.targets[:, 0]
    out[:, 1:3] = smoothed_boxes(utterance, times, SIGMA_LIPS) @ utterance.targets[:, 1:3]
    out[:, 3] = 2.0 * (smoothed_boxes(utterance, times, SIGMA_CLOSURE) @ utterance.targets[:, 3])
    out[:, :3] *= strength
    return np.clip(out, 0.0, 1.0)


def mouth_track(utterance: Utterance, rate_hz: float, strength: float = 1.0, lead_s: float = 0.0) -> np.ndarray:
    """The articulation sampled at ``rate_hz`` over the utterance, (round(duration · rate_hz), 4) float32.

    Columns (jaw, spread, round, closure) in [0, 1]. Sample ``n`` is taken at time
    ``(n + 0.5) / rate_hz + lead_s``: a positive ``lead_s`` makes the mouth move ahead of the audio
    (the track shows at time t what the voice produces at t + lead_s).
    """
    return articulation_at(utterance, sample_times(utterance.duration, rate_hz) + lead_s, strength).astype(np.float32)


def unit_labels(utterance: Utterance, rate_hz: float, lead_s: float = 0.0) -> np.ndarray:
    """Class index (into :data:`UNIT_CLASSES`) of the unit under each sample of :func:`mouth_track`, (n,) int64."""
    times = sample_times(utterance.duration, rate_hz) + lead_s
    unit = np.clip(np.searchsorted(utterance.end, times, side="right"), 0, len(utterance.end) - 1)
    return utterance.classes[unit]
