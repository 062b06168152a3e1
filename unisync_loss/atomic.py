"""Atomic file writes: a file is either its old self or completely new, never half written.

A crash, a kill or a full disk in the middle of a write leaves the previous file (or none) in
place, plus nothing else: the temporary file is removed.

    with atomic_path("runs/eval.json") as temporary:
        temporary.write_text(text)          # any writer: save_file, savefig, torch.save ...
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from safetensors.torch import save
from torch import nn


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """``with atomic_path(path) as temporary:`` write ``temporary``; it replaces ``path`` only when the block succeeds.

    The temporary file lies next to ``path`` (same file system, so the rename is atomic), has a
    unique hidden name ending in ``path``'s own suffix (writers that pick a format from the name
    keep working) and the permissions of any new file. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def save_state_dict(module: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """``module``'s state dict as ``.safetensors`` with string ``metadata``, through :func:`atomic_path`.

    Tensors are written as contiguous CPU copies, so tied or strided parameters save as well. The
    bytes are serialised in memory and written like any file, so the file gets the usual permissions
    (``safetensors.torch.save_file`` creates owner-only files).
    """
    tensors = {name: value.detach().to("cpu").contiguous().clone() for name, value in module.state_dict().items()}
    data = save(tensors, metadata=dict(metadata) if metadata is not None else None)
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
