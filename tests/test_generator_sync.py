"""Generator sync benchmark: its ground-truth measures on known tracks, and the whole pipeline at the tiny size."""
from __future__ import annotations

import json
import math
import operator
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.generator_sync import GENERATORS, SIZES, VARIANTS, run_benchmark  # noqa: E402
from benchmarks.generators.motion import sync_windows  # noqa: E402
from benchmarks.generators.parallel import Task, run_tasks  # noqa: E402
from benchmarks.generators.report import IMAGE_COLUMNS, MOTION_COLUMNS  # noqa: E402
from benchmarks.generators.scoring import MAX_LAG, best_lag, oracle_probabilities  # noqa: E402
from unisync_loss.metrics import sync_accuracy  # noqa: E402
from unisync_loss.windows import cut_windows  # noqa: E402


def speech_like_track(n: int, seed: int = 0) -> torch.Tensor:
    """A smooth random (n, 4) mouth track in [0, 1] with no flat stretch."""
    noise = torch.randn(n + 8, 4, generator=torch.Generator().manual_seed(seed))
    return torch.sigmoid(2 * noise.unfold(0, 9, 1).mean(-1))[:n]


@pytest.mark.parametrize("shift", [-3, 0, 2])
def test_best_lag_finds_a_known_delay(shift: int) -> None:
    true = speech_like_track(80)[:, 0]
    generated = torch.roll(true, shift)  # generated[t + shift] = true[t]: the generated mouth is `shift` frames late
    assert best_lag(generated, true) == shift


def test_oracle_is_perfect_on_the_truth_and_sees_a_shift() -> None:
    true = speech_like_track(75)
    assert float(sync_accuracy(oracle_probabilities(true, true, window=5)).accuracy) == 1.0
    late = torch.roll(true, 4, dims=0)  # window j of `late` shows true window j - 4
    result = sync_accuracy(oracle_probabilities(late, true, window=5), true_offset=-4)
    assert float(result.accuracy) > 0.9
    assert float(sync_accuracy(oracle_probabilities(late, true, window=5)).accuracy) < 0.1


def test_sync_windows_cut_what_cut_windows_cuts() -> None:
    audio, coeffs = torch.randn(2, 48, 6), torch.randn(2, 24, 3)
    audio_windows, visual_windows = sync_windows(audio, coeffs, window=5, stride=4)
    starts = torch.arange(0, 20, 4)
    assert torch.equal(audio_windows[5:10], cut_windows(audio[1], "hubert", starts, 5))
    assert torch.equal(visual_windows[:5], cut_windows(coeffs[0], "3dmm", starts, 5))


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_tasks_waits_for_dependencies_whatever_the_jobs(jobs: int) -> None:
    tasks = [Task("sum", operator.add, lambda done: (done["x"], done["y"]), deps=("x", "y")),
             Task("x", operator.mul, (2, 3)), Task("y", operator.pow, (2, 5))]
    finished = []
    assert run_tasks(tasks, jobs, on_done=lambda key, result: finished.append(key)) == {"x": 6, "y": 32, "sum": 38}
    assert finished[-1] == "sum" and sorted(finished) == ["sum", "x", "y"]


def test_run_tasks_refuses_an_unknown_dependency() -> None:
    with pytest.raises(ValueError, match="unknown dependencies"):
        run_tasks([Task("x", operator.neg, (1,), deps=("missing",))])


def test_tiny_benchmark_writes_a_complete_table(tmp_path: Path) -> None:
    """The whole pipeline, both generators, at the tiny size: structure and ranges only, not the numbers."""
    result = run_benchmark(tmp_path, "tiny", seeds=(0, 1), log=lambda line: None)
    size = SIZES["tiny"]

    assert set(result["generators"]) == set(GENERATORS)
    for generator, columns in (("motion", MOTION_COLUMNS), ("image", IMAGE_COLUMNS)):
        section = result["generators"][generator]
        assert set(section["test"]) == set(VARIANTS)
        assert section["splits"]["test"] >= 1 and section["splits"]["val"] >= 1
        expert_seeds = (0, 1) if generator in size.experts_per_seed else (0,)
        assert set(section["experts"]) == {"evaluator"} | {f"{role}_seed{s}" for role in ("syncnet", "unisync") for s in expert_seeds}
        for variant in ("b", "c"):
            assert section["selection"][variant]["chosen"] in size.weights[generator]
        for entry in section["test"].values():
            assert len(entry["per_seed"]) == 2
            for scores in entry["per_seed"] + [section["ceiling"]]:
                assert all(math.isfinite(scores[name]) for name, *_ in columns), scores
                for name in ("accuracy", "oracle_accuracy", "lag0", "lse_d"):
                    assert 0.0 <= scores[name] <= 1.0, (generator, name, scores[name])
                assert 0.0 <= scores["abs_lag"] <= MAX_LAG and scores["mouth_mae"] >= 0
                assert sum(scores["lags"].values()) == section["splits"]["test"]
        table = section["table"].splitlines()
        assert len(table) == 2 + len(VARIANTS) + 1  # header, rule, three variants, ceiling
        assert all(row.count("|") == len(columns) + 2 for row in table)
        assert (tmp_path / f"{generator}_jaw_tracks.png").stat().st_size > 10_000
    motion_ceiling = result["generators"]["motion"]["ceiling"]
    assert motion_ceiling["mouth_mae"] == 0.0 and motion_ceiling["oracle_accuracy"] == 1.0 and motion_ceiling["mse"] == 0.0
    assert result["generators"]["image"]["ceiling"]["l1"] == 0.0
    assert (tmp_path / "image_mouth_strips.png").stat().st_size > 10_000
    markdown = (tmp_path / "generator_sync.md").read_text(encoding="utf-8")
    assert all(result["generators"][g]["table"] in markdown for g in GENERATORS)
    assert json.loads((tmp_path / "generator_sync.json").read_text(encoding="utf-8"))["generators"]["image"]["verdicts"] \
        == result["generators"]["image"]["verdicts"]

    rerun = run_benchmark(tmp_path, "tiny", seeds=(0, 1), log=lambda line: None)  # reuses every finished run
    assert json.dumps(rerun["generators"]) == json.dumps(result["generators"])
