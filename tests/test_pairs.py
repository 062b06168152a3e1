"""Pair sampling (pretrain.pairs): kinds, ratios, windows inside clips, determinism, disjoint ranks."""
import collections

import pytest
import torch

from pretrain.config import RatioConfig, SamplingConfig
from pretrain.pairs import PAIR_KINDS, PairSampler, assemble
from unisync_loss.audio import mel_steps

T = 5
SPEAKERS = ["a", "a", "a", "b", "b", "c", "d"]
COUNTS = [40, 12, 25, 6, 30, 18, 9]  # valid window starts per clip (>= T + 1)


def make_sampler(batch_size=64, seed=0, **sampling):
    return PairSampler(SPEAKERS, COUNTS, SamplingConfig(**sampling), window=T, batch_size=batch_size, seed=seed)


def test_kinds_respect_their_definitions():
    sampler = make_sampler(batch_size=256, no_overlap_max_shift=None)
    pairs = [p for step in range(20) for p in sampler.sample(step)]
    assert {p.kind for p in pairs} == set(PAIR_KINDS)
    for p in pairs:
        assert 0 <= p.visual_start < COUNTS[p.visual_clip], p
        assert 0 <= p.audio_start < COUNTS[p.audio_clip], p
        shift = p.audio_start - p.visual_start
        same_speaker = SPEAKERS[p.audio_clip] == SPEAKERS[p.visual_clip]
        if p.kind == "positive":
            assert p.label == 1.0 and p.audio_clip == p.visual_clip and shift == 0
        elif p.kind == "overlap":
            assert p.label == 0.0 and p.audio_clip == p.visual_clip and 0 < abs(shift) < T
        elif p.kind == "no_overlap":
            assert p.label == 0.0 and same_speaker
            assert p.audio_clip != p.visual_clip or abs(shift) >= T
        else:
            assert p.label == 0.0 and not same_speaker
    no_overlap = [p for p in pairs if p.kind == "no_overlap"]
    other_clip = sum(p.audio_clip != p.visual_clip for p in no_overlap) / len(no_overlap)
    assert 0.3 < other_clip < 0.6  # other_clip = 0.5, but speakers c and d have a single clip
    overlap_shifts = {p.audio_start - p.visual_start for p in pairs if p.kind == "overlap"}
    assert overlap_shifts == {-4, -3, -2, -1, 1, 2, 3, 4}


def test_shift_bounds_are_configurable():
    sampler = make_sampler(batch_size=256, overlap_min_shift=2, no_overlap_max_shift=7, other_clip=0.0)
    pairs = [p for step in range(10) for p in sampler.sample(step)]
    overlap = {abs(p.audio_start - p.visual_start) for p in pairs if p.kind == "overlap"}
    no_overlap = {abs(p.audio_start - p.visual_start) for p in pairs if p.kind == "no_overlap"}
    assert overlap == {2, 3, 4} and no_overlap == {5, 6, 7}
    assert all(p.audio_clip == p.visual_clip for p in pairs if p.kind == "no_overlap")


def test_ratios_follow_the_config_and_cross_speaker_switch():
    sampler = make_sampler(batch_size=100, ratios=RatioConfig(positive=0.5, overlap=0.2, no_overlap=0.1, cross_speaker=0.2))
    kinds = collections.Counter(p.kind for p in sampler.sample(3))
    assert kinds == {"positive": 50, "overlap": 20, "no_overlap": 10, "cross_speaker": 20}
    ablation = make_sampler(batch_size=100, cross_speaker=False)
    kinds = collections.Counter(p.kind for step in range(5) for p in ablation.sample(step))
    assert kinds["cross_speaker"] == 0
    assert kinds["positive"] == pytest.approx(0.5 / 0.8 * 500, abs=5)  # cross-speaker share redistributed


def test_sampling_is_a_pure_function_of_seed_step_rank():
    a, b = make_sampler(seed=3), make_sampler(seed=3)
    for step in (4, 5, 6):  # b has drawn other steps first: no hidden state carries over
        b.sample(step)
    assert a.sample(17, rank=1, world_size=2) == b.sample(17, rank=1, world_size=2)
    assert a.sample(17) == b.sample(17)
    assert a.sample(17) != a.sample(18)
    assert a.sample(17) != make_sampler(seed=4).sample(17)


def test_ranks_take_disjoint_slices_of_the_global_batch():
    sampler = make_sampler(batch_size=64)
    whole = sampler.sample(9)
    parts = [sampler.sample(9, rank=r, world_size=4) for r in range(4)]
    ids = [{p.sample_id for p in part} for part in parts]
    assert all(len(part) == 16 for part in parts)
    assert all(ids[i].isdisjoint(ids[j]) for i in range(4) for j in range(i + 1, 4))
    assert [p for part in parts for p in part] == whole  # together exactly the single-process batch
    assert {p.sample_id for p in sampler.sample(10)}.isdisjoint({p.sample_id for p in whole})
    with pytest.raises(ValueError, match="divisible"):
        sampler.sample(0, rank=0, world_size=3)


def test_clips_too_short_or_single_speaker_are_rejected():
    with pytest.raises(ValueError, match="T\\+1"):
        PairSampler(["a", "b"], [10, 5], SamplingConfig(), window=T, batch_size=8, seed=0)
    with pytest.raises(ValueError, match="2 speakers"):
        PairSampler(["a", "a"], [10, 10], SamplingConfig(), window=T, batch_size=8, seed=0)
    PairSampler(["a", "a"], [10, 10], SamplingConfig(cross_speaker=False), window=T, batch_size=8, seed=0)


def test_assemble_cuts_the_drawn_windows():
    """Each clip's mel column / 3dmm row encodes (clip, time), so the cut windows reveal where they came from."""
    n_frames = [c + T - 1 for c in COUNTS]
    clips = {}
    for c, n in enumerate(n_frames):
        mel = torch.arange(1 + n * 640 // 200, dtype=torch.float32).expand(80, -1) + 10_000 * c
        coeffs = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 64) + 10_000 * c
        clips[c] = {"mel": mel.contiguous(), "3dmm": coeffs.contiguous()}
    pairs = make_sampler(batch_size=32).sample(0)
    batch = assemble(pairs, clips.__getitem__, "mel", "3dmm", T)
    assert batch.audio.shape == (32, 1, 80, mel_steps(T)) and batch.visual.shape == (32, T, 64)
    for i, p in enumerate(pairs):
        assert batch.audio[i, 0, 0, 0].item() == 10_000 * p.audio_clip + (16 * p.audio_start) // 5
        assert batch.visual[i, 0, 0].item() == 10_000 * p.visual_clip + p.visual_start
        assert batch.label[i].item() == p.label and PAIR_KINDS[batch.kind[i]] == p.kind
