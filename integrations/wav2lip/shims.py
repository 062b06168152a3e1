"""Run-time fixes that Wav2Lip's 2020-era scripts need on today's software, applied without editing a file.

Each shim is reported by ``check`` (needed or not, and why) and applied by ``train`` inside an
``ExitStack`` that undoes it when the run ends:

- ``librosa``: librosa >= 0.10 made ``filters.mel`` keyword-only; ``audio.py`` passes ``sr`` and
  ``n_fft`` positionally, and the dataset's ``except Exception: continue`` turns the TypeError into a
  silent endless loop. ``audio.librosa`` is replaced by a view of librosa whose ``filters.mel``
  accepts them positionally (everything else is the real librosa).
- ``cuda``: the HQ script's ``Wav2Lip_disc_qual.perceptual_forward`` hard-codes ``.cuda()``; without
  CUDA, tensor ``.cuda()`` calls made inside it go to the script's ``device`` instead.
- ``workers``: ``hparams.num_workers`` (16) and the test loader's hard-coded 4 become ``--workers``.
"""
from __future__ import annotations

import contextlib
import inspect
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch


@dataclass(frozen=True)
class Shim:
    """One run-time fix: whether the checkout needs it here, and why."""

    name: str
    needed: bool
    reason: str


def librosa_shim_needed(mel: Callable[..., Any]) -> bool:
    """True when ``mel`` (librosa's ``filters.mel``) takes ``sr`` and ``n_fft`` only as keywords (librosa >= 0.10)."""
    params = inspect.signature(mel).parameters
    return any(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in ("sr", "n_fft") if name in params)


def positional_mel(mel: Callable[..., Any]) -> Callable[..., Any]:
    """``mel`` that also accepts ``(sr, n_fft)`` positionally, as librosa < 0.10 did."""
    def mel_filters(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(zip(("sr", "n_fft"), args))
        return mel(**kwargs)

    return mel_filters


def librosa_view(librosa: types.ModuleType) -> types.SimpleNamespace:
    """A stand-in for the ``librosa`` module: every attribute of it, with ``filters.mel`` positional-friendly."""
    filters = types.SimpleNamespace(**vars(librosa.filters))
    filters.mel = positional_mel(librosa.filters.mel)
    view = types.SimpleNamespace(**{name: getattr(librosa, name) for name in dir(librosa) if not name.startswith("__")})
    view.filters = filters
    return view


@contextlib.contextmanager
def cuda_calls_go_to(device: torch.device) -> Iterator[None]:
    """Inside the block, ``tensor.cuda()`` returns ``tensor.to(device)`` (for code that hard-codes CUDA)."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda tensor, *args, **kwargs: tensor.to(device)  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda = original  # type: ignore[method-assign]


def without_cuda(method: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``method`` with its tensor ``.cuda()`` calls sent to ``device``."""
    def shimmed(self: Any, *args: Any, **kwargs: Any) -> Any:
        with cuda_calls_go_to(device):
            return method(self, *args, **kwargs)

    shimmed.__wrapped__ = method  # type: ignore[attr-defined]
    return shimmed


def cuda_shim_needed(discriminator: type | None) -> bool:
    """True when CUDA is unavailable and the HQ discriminator's ``perceptual_forward`` calls ``.cuda()``."""
    if discriminator is None or torch.cuda.is_available() or not hasattr(discriminator, "perceptual_forward"):
        return False
    try:
        return ".cuda(" in inspect.getsource(discriminator.perceptual_forward)
    except (OSError, TypeError):
        return True


def set_attribute(stack: contextlib.ExitStack, owner: Any, name: str, value: Any) -> None:
    """``setattr(owner, name, value)`` until ``stack`` closes (then the old value, or none, comes back)."""
    missing = object()
    old = owner.__dict__.get(name, missing) if isinstance(owner, type) else getattr(owner, name, missing)

    def restore() -> None:
        if old is missing:
            delattr(owner, name)
        else:
            setattr(owner, name, old)

    setattr(owner, name, value)
    stack.callback(restore)
