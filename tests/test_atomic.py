"""Atomic writes: the old file survives a failed write, nothing is left behind, new files get normal permissions."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unisync_loss.atomic import atomic_path, save_state_dict, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "eval.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            temporary.write_text("half writ")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


def usual_permissions() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_success_replaces_creates_parents_and_keeps_the_suffix(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "curve.png"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.suffix == ".png" and temporary.name.startswith(".")
        temporary.write_bytes(b"png")
    assert target.read_bytes() == b"png" and os.listdir(target.parent) == ["curve.png"]
    assert stat.S_IMODE(target.stat().st_mode) == usual_permissions()  # not mkstemp's 0600


def test_save_state_dict_writes_tied_tensors_and_metadata(tmp_path: Path) -> None:
    module = torch.nn.Linear(3, 2)
    module.register_buffer("tied", module.weight.data)  # shares storage with the weight
    save_state_dict(module, tmp_path / "m.safetensors", {"note": "x"})
    loaded = load_file(tmp_path / "m.safetensors")
    assert torch.equal(loaded["weight"], module.weight) and torch.equal(loaded["tied"], module.weight)
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == usual_permissions()  # not save_file's 0600
