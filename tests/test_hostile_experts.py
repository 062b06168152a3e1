"""Hostile and damaged expert files: a clear ExpertFileError naming the file, never a crash, a huge allocation or NaN losses.

Every case of HOSTILE_FILES rewrites a valid tiny expert (hubert x 3dmm, or mel x rgb for the crop size)
and checks that loading names the file, what was expected and what the file holds. The memory test
loads the files with huge architecture numbers in a fresh process and measures its peak RSS.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unisync_loss.cli import main as unisync_main
from unisync_loss.experts import METADATA_KEY, ExpertFileError, load_expert, resolve_expert, save_expert
from unisync_loss.loss import UniSyncLoss

REPO = Path(__file__).resolve().parents[1]

Tensors = dict[str, torch.Tensor]
Header = dict[str, Any]


Corruption = Callable[[Tensors, Header], "str | None"]
"""Changes the tensors and header of a file in place, or returns the raw metadata text to write instead."""


def _deep_json(depth: int) -> Corruption:
    """A header whose training summary nests ``depth`` lists (json.dumps cannot write that deep: text by hand)."""
    return lambda tensors, header: json.dumps({**header, "training": "DEEP"}).replace('"DEEP"', "[" * depth + "]" * depth)


def _set_header(**fields: Any) -> Corruption:
    return lambda tensors, header: header.update(fields)


def _drop(key: str) -> Corruption:
    return lambda tensors, header: header.pop(key) and None


def _set_config(**fields: Any) -> Corruption:
    return lambda tensors, header: header["config"].update(fields)


def _set_option(kind: str, name: str, **options: Any) -> Corruption:
    return lambda tensors, header: header["config"][kind][name].update(options)


def _set_tensor(name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Corruption:
    return lambda tensors, header: tensors.update({name: make(tensors[name])})


STD = "visual_heads.3dmm.preprocess.standardize.std"
VAR = "audio_unified.norm.running_var"
WEIGHT = "visual_unified.project.weight"

HOSTILE_FILES = [
    # (id, pair, corruption, expected (part of the message), received (part of the message))
    ("huge hidden width", ("hubert", "3dmm"), _set_config(hidden=2**20), "its config needs (1048576,", "has shape (16,"),
    ("huge hubert dim", ("hubert", "3dmm"), _set_option("audio", "hubert", dim=10**9), "its config needs (1000000000,)", "has shape (24,)"),
    ("huge 3dmm dim", ("hubert", "3dmm"), _set_option("visual", "3dmm", dim=10**9), "its config needs (1000000000,)", "has shape (16,)"),
    ("huge pooled length", ("hubert", "3dmm"), _set_config(pooled_len=10**9), "its config needs (16, 16000000000)", "has shape (16, 48)"),
    ("huge unified layer count", ("hubert", "3dmm"), _set_config(unified_layers=10**9),
     "expected a config that matches the stored tensors", "asks for 1000000000 unified layers"),
    ("sizes beyond torch", ("hubert", "3dmm"), _set_config(hidden=10**12), "expected sizes that match the stored tensors", "cannot be built (Storage size calculation overflowed"),
    ("huge rgb crop size", ("mel", "rgb"), _set_option("visual", "rgb", size=10**7), "option 'size' must lie in [2, 1024]", "got 10000000"),
    ("huge landmark count", ("hubert", "landmarks"), _set_option("visual", "landmarks", points=10**9),
     "its config needs (16, 3000000000, 3)", "has shape (16, 204, 3)"),
    ("integer weights", ("hubert", "3dmm"), _set_tensor(WEIGHT, lambda t: t.long()), "expected a floating dtype", "has dtype I64"),
    ("boolean weights", ("hubert", "3dmm"), _set_tensor(WEIGHT, lambda t: t > 0), "expected a floating dtype", "has dtype BOOL"),
    ("integer statistics", ("hubert", "3dmm"), _set_tensor(STD, lambda t: t.int()), "expected a floating dtype", "has dtype I32"),
    ("NaN weight", ("hubert", "3dmm"), _set_tensor(WEIGHT, lambda t: t.index_fill(0, torch.tensor([0]), float("nan"))),
     "expected finite weights", f"{WEIGHT} holds NaN or Inf"),
    ("Inf weight", ("hubert", "3dmm"), _set_tensor(WEIGHT, lambda t: t.index_fill(0, torch.tensor([1]), float("inf"))),
     "expected finite weights", f"{WEIGHT} holds NaN or Inf"),
    ("NaN statistics", ("hubert", "3dmm"), _set_tensor(STD, lambda t: t * float("nan")), "expected finite weights", f"{STD} holds NaN"),
    ("zero std", ("hubert", "3dmm"), _set_tensor(STD, torch.zeros_like), "expected standard deviations > 0", "has a minimum of 0"),
    ("negative std", ("hubert", "3dmm"), _set_tensor(STD, lambda t: -t), "expected standard deviations > 0", "has a minimum of -1"),
    ("negative running variance", ("hubert", "3dmm"), _set_tensor(VAR, lambda t: t - 2.0), "expected variances >= 0", "has a minimum of -1"),
    ("JSON nested beyond the recursion limit", ("hubert", "3dmm"), _deep_json(100_000), "expected at most 32 levels", "nested too deeply"),
    ("JSON nested 40 levels", ("hubert", "3dmm"), _deep_json(40), "expected at most 32 levels", "nested too deeply"),
    ("no window", ("hubert", "3dmm"), _drop("window"), "'window' must be a positive integer", "got missing"),
    ("window as text", ("hubert", "3dmm"), _set_header(window="5"), "'window' must be a positive integer", "got '5' (str)"),
    ("zero embed_dim", ("hubert", "3dmm"), _set_header(embed_dim=0), "'embed_dim' must be a positive integer", "got 0 (int)"),
    ("training as text", ("hubert", "3dmm"), _set_header(training="lrs2"), "'training' section must be a JSON object", "got 'lrs2' (str)"),
    ("audio section as a list", ("hubert", "3dmm"), _set_header(audio=["hubert"]),
     "lacks its 'audio' section (expected a JSON object", "got ['hubert'] (list)"),
    ("no config section", ("hubert", "3dmm"), _drop("config"), "lacks its 'config' section (expected a JSON object", "got missing"),
]


def _rewrite(path: Path, corrupt: Corruption) -> Path:
    """Apply ``corrupt`` to the expert file at ``path`` (in place); returns the path."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        header = json.loads(handle.metadata()[METADATA_KEY])
    raw = corrupt(tensors, header)
    save_file(tensors, str(path), metadata={METADATA_KEY: raw if raw is not None else json.dumps(header)})
    return path


def _hostile(make_expert, pair: tuple[str, str], corrupt: Corruption) -> Path:
    return _rewrite(make_expert(*pair), corrupt)


def test_table_has_at_least_20_cases() -> None:
    assert len(HOSTILE_FILES) >= 20


@pytest.mark.parametrize(("pair", "corrupt", "expected", "received"), [c[1:] for c in HOSTILE_FILES], ids=[c[0] for c in HOSTILE_FILES])
def test_hostile_file_is_refused_naming_file_expected_and_received(make_expert, pair, corrupt, expected, received) -> None:
    path = _hostile(make_expert, pair, corrupt)
    with pytest.raises(ExpertFileError) as caught:
        load_expert(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert received in message, message


MEMORY_PROBE = """
import json, sys, time
import torch
torch.set_num_threads(1)
from unisync_loss.experts import ExpertFileError, load_expert

def memory_mb(field):  # VmRSS: resident now; VmHWM: peak resident so far
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024

load_expert(sys.argv[1])  # warm-up with the valid file: imports, first meta build
results = {}
for path in sys.argv[2:]:
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    try:
        load_expert(path)
        outcome = "loaded"
    except ExpertFileError:
        outcome = "refused"
    seconds = time.perf_counter() - start
    results[path] = {"outcome": outcome, "seconds": seconds, "peak_rss_growth_mb": memory_mb("VmHWM") - before}
print(json.dumps(results))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="RSS is read from /proc (Linux)")
def test_huge_header_values_fail_fast_without_allocating(make_expert, tmp_path) -> None:
    """Each huge-architecture file is refused in well under a second with < 100 MB peak RSS growth (fresh process).

    Growth is the peak RSS after the load minus the RSS before it, so any transient allocation counts.
    """
    good = make_expert("mel", "3dmm")
    huge = [case for case in HOSTILE_FILES if case[0].startswith(("huge", "sizes beyond"))]
    paths = []
    for name, pair, corrupt, _, _ in huge:
        path = _hostile(make_expert, pair, corrupt)
        paths.append(str(path.rename(tmp_path / f"{name.replace(' ', '_')}.safetensors")))
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(good), *paths], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    assert len(results) == len(huge) == 8
    print(json.dumps(results, indent=1))  # the figures quoted in the README (pytest -s)
    for path, result in results.items():
        assert result["outcome"] == "refused", path
        assert result["seconds"] < 0.5, (path, result)
        assert result["peak_rss_growth_mb"] < 100, (path, result)


def test_one_bad_file_in_the_cache_is_named_and_skipped(make_model, unisync_home, capsys) -> None:
    experts = unisync_home / "experts"
    good = save_expert(make_model(["hubert"], ["3dmm"]), experts / "zz_good.safetensors", training={"test_accuracy": 0.75})
    bad = _rewrite(save_expert(make_model(["hubert"], ["3dmm"]), experts / "aa_bad.safetensors"), _set_header(training="x"))
    deep = _rewrite(save_expert(make_model(["hubert"], ["3dmm"]), experts / "ab_deep.safetensors"), _deep_json(100_000))
    with pytest.warns(UserWarning) as caught:
        assert resolve_expert("hubert", "3dmm") == good
        loss_fn = UniSyncLoss("hubert", "3dmm")
    warned = " ".join(str(w.message) for w in caught)
    assert f"{bad}: the expert header's 'training' section must be a JSON object" in warned
    assert f"{deep}: the 'unisync_expert' metadata is nested too deeply" in warned
    assert loss_fn.source == str(good)
    assert unisync_main(["experts"]) == 0  # documented: 0 even when some files are unusable
    listing = capsys.readouterr().out
    assert "zz_good.safetensors: audio [hubert] x visual [3dmm], T=5, held-out sync accuracy 0.750" in listing
    assert "aa_bad.safetensors: not a usable expert (" in listing and "'training' section must be a JSON object" in listing
    assert "ab_deep.safetensors: not a usable expert (" in listing and "nested too deeply" in listing


def test_nothing_usable_in_the_cache_lists_the_skipped_files(make_model, unisync_home) -> None:
    bad = _rewrite(save_expert(make_model(["hubert"], ["3dmm"]), unisync_home / "experts" / "bad.safetensors"),
                   _drop("window"))
    with warnings.catch_warnings(), pytest.raises(ExpertFileError, match="skipped 1 unusable file\\(s\\): bad.safetensors"):
        warnings.simplefilter("ignore")
        resolve_expert("hubert", "3dmm")
    assert bad.is_file()


def test_a_float16_expert_file_loads_as_float32(make_model, tmp_path) -> None:
    model = make_model(["hubert"], ["3dmm"])
    path = _rewrite(save_expert(model, tmp_path / "half.safetensors"), lambda t, h: t.update({k: v.half() for k, v in t.items()}) or None)
    loaded = load_expert(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(loaded.visual_unified.project.weight, model.visual_unified.project.weight.half().float())
