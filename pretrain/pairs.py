"""Pair sampling for pretraining (the paper's Figure 3) and batch assembly.

Four kinds of (visual window, audio window) pairs, windows of T video frames:

* ``positive``      audio and video of the same clip at the same start (label 1);
* ``overlap``       same clip, audio shifted by s with ``overlap_min_shift <= |s| < T``: the two
                    windows overlap in time (label 0);
* ``no_overlap``    same speaker, no overlap: same clip with ``|s| >= T`` or, with probability
                    ``other_clip``, a window of another clip of the same speaker (label 0);
* ``cross_speaker`` the audio window comes from a clip of another speaker (label 0).

Every window lies inside its clip for both modalities: a clip offers ``window_counts[c]``
valid starts (``unisync_loss.windows``), and only starts below that count are drawn.

Sampling is stateless: the global batch of micro-step ``step`` is a pure function of
``(seed, step)``; rank r of W takes the contiguous slice ``[r*B/W, (r+1)*B/W)``. Resuming at a
step therefore reproduces the data order exactly, and ranks never share a sample.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from pretrain.config import SamplingConfig
from unisync_loss.windows import cut_windows

PAIR_KINDS = ("positive", "overlap", "no_overlap", "cross_speaker")


@dataclass(frozen=True)
class Pair:
    """One sampled pair: visual window of clip ``visual_clip`` at ``visual_start``, audio of ``audio_clip``."""

    sample_id: int
    kind: str
    visual_clip: int
    visual_start: int
    audio_clip: int
    audio_start: int

    @property
    def label(self) -> float:
        """1.0 for a sync positive, 0.0 for every negative kind."""
        return 1.0 if self.kind == "positive" else 0.0


@dataclass
class PairBatch:
    """Model inputs for a list of pairs.

    ``audio`` / ``visual``: batched windows in the model-side contract (e.g. mel (B, 1, 80, mel_steps(T)),
    3dmm (B, T, D)); ``label`` (B,) float; ``kind`` (B,) long index into ``PAIR_KINDS``; ``sample_id`` (B,) long.
    """

    audio: Tensor
    visual: Tensor
    label: Tensor
    kind: Tensor
    sample_id: Tensor

    def to(self, device: torch.device | str) -> "PairBatch":
        """The same batch on ``device``."""
        return PairBatch(*(t.to(device) for t in (self.audio, self.visual, self.label, self.kind, self.sample_id)))


class PairSampler:
    """Draws pairs over clips with known speakers and valid-window counts.

    Args:
        speakers: speaker id of each clip.
        window_counts: number of valid window starts of each clip (both modalities inside the clip);
            every clip needs at least T + 1 (so that a non-overlapping shift exists inside it).
        config: ratios and shift ranges.
        window: T.
        batch_size: global batch (all ranks together) per micro-step.
        seed: base seed (an int, or a tuple of ints such as ``(seed, pair_index)``); the batch of a
            step depends on (seed, step) only.
    """

    def __init__(
        self,
        speakers: Sequence[str],
        window_counts: Sequence[int],
        config: SamplingConfig,
        window: int,
        batch_size: int,
        seed: int | tuple[int, ...],
    ):
        if len(speakers) != len(window_counts) or not speakers:
            raise ValueError(f"PairSampler: need one speaker per clip and at least one clip, got {len(speakers)} speakers, {len(window_counts)} counts")
        short = [c for c, n in enumerate(window_counts) if n < window + 1]
        if short:
            raise ValueError(
                f"PairSampler: clips {short[:5]}{'...' if len(short) > 5 else ''} have fewer than T+1 = {window + 1} "
                f"valid windows (clips need at least 2T = {2 * window} frames); drop them from the source"
            )
        if not 1 <= config.overlap_min_shift < window:
            raise ValueError(f"sampling.overlap_min_shift must be in [1, T-1] = [1, {window - 1}], got {config.overlap_min_shift}")
        if config.no_overlap_max_shift is not None and config.no_overlap_max_shift < window:
            raise ValueError(f"sampling.no_overlap_max_shift must be >= T = {window} or null, got {config.no_overlap_max_shift}")
        self.speakers = list(speakers)
        self.window_counts = [int(n) for n in window_counts]
        self.config = config
        self.window = window
        self.batch_size = batch_size
        self.seed = seed
        self.clips_of: dict[str, list[int]] = {}
        for clip, speaker in enumerate(self.speakers):
            self.clips_of.setdefault(speaker, []).append(clip)
        self.speaker_names = sorted(self.clips_of)
        self.kind_counts = self._allocate(batch_size)

    def _allocate(self, batch_size: int) -> dict[str, int]:
        """Pairs of each kind in a global batch: ratios normalised, rounded by largest remainder."""
        ratios = {k: getattr(self.config.ratios, k) for k in PAIR_KINDS}
        if not self.config.cross_speaker:
            ratios["cross_speaker"] = 0.0
        if any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
            raise ValueError(f"sampling.ratios must be >= 0 with a positive sum, got {ratios}")
        if ratios["cross_speaker"] > 0 and len(self.clips_of) < 2:
            raise ValueError("cross-speaker negatives need at least 2 speakers; set sampling.cross_speaker=false")
        return dict(zip(PAIR_KINDS, apportion(batch_size, [ratios[k] for k in PAIR_KINDS])))

    def sample(self, step: int, rank: int = 0, world_size: int = 1) -> list[Pair]:
        """The pairs rank ``rank`` of ``world_size`` trains on at micro-step ``step``."""
        if self.batch_size % world_size:
            raise ValueError(f"optim.batch_size={self.batch_size} must be divisible by the number of processes ({world_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        rng = np.random.default_rng([*np.atleast_1d(self.seed).tolist(), step])
        kinds = np.repeat(np.arange(len(PAIR_KINDS)), [self.kind_counts[k] for k in PAIR_KINDS])
        kinds = rng.permutation(kinds)
        clips = rng.integers(0, len(self.speakers), size=self.batch_size)
        uniforms = rng.random((self.batch_size, 4))
        per_rank = self.batch_size // world_size
        first = rank * per_rank
        return [
            self._resolve(step * self.batch_size + j, PAIR_KINDS[kinds[j]], int(clips[j]), uniforms[j])
            for j in range(first, first + per_rank)
        ]

    def _resolve(self, sample_id: int, kind: str, clip: int, u: np.ndarray) -> Pair:
        """Turn a kind, a clip and 4 uniforms into concrete window starts (uniform over valid choices)."""
        n = self.window_counts[clip]
        if kind == "positive":
            start = _pick(u[0], n)
            return Pair(sample_id, kind, clip, start, clip, start)
        if kind == "overlap":
            shifts = range(self.config.overlap_min_shift, self.window)
            visual, shift = self._shifted_start(n, shifts, u[0])
            return Pair(sample_id, kind, clip, visual, clip, visual + shift)
        if kind == "no_overlap":
            others = [c for c in self.clips_of[self.speakers[clip]] if c != clip]
            if others and u[1] < self.config.other_clip:
                return self._other_clip(sample_id, kind, clip, others, u)
            top = n - 1 if self.config.no_overlap_max_shift is None else min(n - 1, self.config.no_overlap_max_shift)
            visual, shift = self._shifted_start(n, range(self.window, top + 1), u[0])
            return Pair(sample_id, kind, clip, visual, clip, visual + shift)
        speaker = self.speakers[clip]
        other_speakers = [s for s in self.speaker_names if s != speaker]
        audio_speaker = other_speakers[_pick(u[1], len(other_speakers))]
        return self._other_clip(sample_id, kind, clip, self.clips_of[audio_speaker], u)

    def _other_clip(self, sample_id: int, kind: str, clip: int, candidates: list[int], u: np.ndarray) -> Pair:
        """Visual window of ``clip``, audio window of a clip drawn from ``candidates``."""
        audio_clip = candidates[_pick(u[2], len(candidates))]
        return Pair(
            sample_id, kind, clip, _pick(u[0], self.window_counts[clip]),
            audio_clip, _pick(u[3], self.window_counts[audio_clip]),
        )

    @staticmethod
    def _shifted_start(n: int, magnitudes: range, u: float) -> tuple[int, int]:
        """Uniform (start, shift) with |shift| in ``magnitudes``, both windows among the n valid starts."""
        options = [(m, n - m) for m in magnitudes if n - m > 0]  # (|shift|, number of starts for +shift and for -shift)
        total = 2 * sum(count for _, count in options)
        k = _pick(u, total)
        for magnitude, count in options:
            if k < 2 * count:
                sign = 1 if k < count else -1
                offset = k % count  # visual start for +shift; for -shift the visual window starts after the audio
                return (offset, magnitude) if sign > 0 else (offset + magnitude, -magnitude)
            k -= 2 * count
        raise AssertionError("unreachable: k < total")


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder; ties go to the earlier entry)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [int(np.floor(v)) for v in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass
class JointBatch:
    """Model inputs of a joint step: one :class:`PairBatch` per representation pair.

    ``pairs[i]`` is the ``(audio, visual)`` representation pair of ``groups[i]``; ``label`` and
    ``kind`` concatenate the groups' in order, as the joint p_sync of ``UniSync.forward`` does.
    """

    pairs: list[tuple[str, str]]
    groups: list[PairBatch]

    @property
    def label(self) -> Tensor:
        """(B,) labels of all groups, in group order."""
        return torch.cat([group.label for group in self.groups])

    @property
    def kind(self) -> Tensor:
        """(B,) pair-kind indices of all groups, in group order."""
        return torch.cat([group.kind for group in self.groups])

    def to(self, device: torch.device | str) -> "JointBatch":
        """The same batch on ``device``."""
        return JointBatch(self.pairs, [group.to(device) for group in self.groups])


class JointPairSampler:
    """Pairs for several (audio, visual) representation pairs in one batch: the joint pretraining of one space.

    Each process's batch of ``batch_size / world_size`` pairs is split among ``pairs`` in
    proportion to ``ratios`` (largest remainder), identically on every process, so every process
    runs every head each step; within each pair, a :class:`PairSampler` seeded with
    ``(seed, pair_index)`` draws the pair kinds with their ratios. A single pair uses
    ``PairSampler(seed=seed)`` over the whole batch, exactly the single-pair sampling. Stateless
    like :class:`PairSampler`: a step's pairs depend on (seed, step, rank, world size) only, so a
    resumed run draws the same data without any sampler state in its checkpoint. Sample ids are
    unique over the run: pair ``i``'s samples follow those of the pairs before it in each step.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        ratios: Sequence[float],
        speakers: Sequence[str],
        window_counts: Sequence[int],
        config: SamplingConfig,
        window: int,
        batch_size: int,
        seed: int,
    ):
        if len(pairs) != len(ratios) or not pairs or any(r <= 0 for r in ratios):
            raise ValueError(f"JointPairSampler: need one positive ratio per pair, got pairs {list(pairs)} and ratios {list(ratios)}")
        self.pairs = [tuple(pair) for pair in pairs]
        self.ratios = list(ratios)
        self.batch_size = batch_size
        self.seed = seed
        self._clips = (list(speakers), list(window_counts), config, window)
        self._samplers: dict[int, list[PairSampler]] = {}
        self._make(batch_size, seed)  # checks clips, shifts and kind ratios once, up front

    def _make(self, batch_size: int, seed: int | tuple[int, ...]) -> PairSampler:
        return PairSampler(*self._clips, batch_size=batch_size, seed=seed)

    def counts(self, world_size: int) -> list[int]:
        """Pairs of each representation pair in one process's batch (the same on every process)."""
        if self.batch_size % world_size:
            raise ValueError(f"optim.batch_size={self.batch_size} must be divisible by the number of processes ({world_size})")
        counts = apportion(self.batch_size // world_size, self.ratios)
        if min(counts) < 1:
            raise ValueError(f"optim.batch_size={self.batch_size} over {world_size} process(es) leaves no sample for some of the "
                             f"{len(self.pairs)} pairs {self.pairs} (ratios {self.ratios}); raise the batch size")
        return counts

    def sample(self, step: int, rank: int = 0, world_size: int = 1) -> list[list[Pair]]:
        """Rank ``rank``'s pairs at micro-step ``step``: one list per representation pair, in ``pairs`` order."""
        if world_size not in self._samplers:
            if len(self.pairs) == 1:
                self._samplers[world_size] = [self._make(self.batch_size, self.seed)]
            else:
                self._samplers[world_size] = [self._make(count * world_size, (self.seed, index))
                                              for index, count in enumerate(self.counts(world_size))]
        samplers = self._samplers[world_size]
        if len(samplers) == 1:
            return [samplers[0].sample(step, rank, world_size)]
        groups, first = [], step * self.batch_size
        for sampler in samplers:
            groups.append([dataclasses.replace(p, sample_id=first + p.sample_id - step * sampler.batch_size)
                           for p in sampler.sample(step, rank, world_size)])
            first += sampler.batch_size
        return groups


def assemble(
    pairs: Sequence[Pair],
    load: Callable[[int], Mapping[str, Tensor]],
    audio: str,
    visual: str,
    window: int,
) -> PairBatch:
    """Cut the windows of ``pairs`` from clips returned by ``load(clip_index)`` (canonical tensors)."""
    audio_windows = [cut_windows(load(p.audio_clip)[audio], audio, [p.audio_start], window) for p in pairs]
    visual_windows = [cut_windows(load(p.visual_clip)[visual], visual, [p.visual_start], window) for p in pairs]
    return PairBatch(
        audio=torch.cat(audio_windows),
        visual=torch.cat(visual_windows),
        label=torch.tensor([p.label for p in pairs], dtype=torch.float32),
        kind=torch.tensor([PAIR_KINDS.index(p.kind) for p in pairs], dtype=torch.long),
        sample_id=torch.tensor([p.sample_id for p in pairs], dtype=torch.long),
    )


def _pick(u: float, n: int) -> int:
    """Index in [0, n) from a uniform u in [0, 1)."""
    return min(int(u * n), n - 1)
