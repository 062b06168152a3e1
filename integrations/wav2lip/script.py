"""Import a Wav2Lip training script as a module, then run its ``if __name__ == "__main__":`` block.

Importing runs everything above the main block exactly as ``python wav2lip_train.py ...`` would
(argparse on the given arguments, the expert built as the global ``syncnet``, the functions
defined), so the adapter can replace module globals before the main block looks them up. The main
block is then compiled from the user's own file (same file name and line numbers in tracebacks) and
executed in the module's namespace: the same statements, run once, nothing copied.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Iterator, Sequence

from integrations.wav2lip.checkout import CheckoutError, main_block, parse


@contextlib.contextmanager
def imported_script(root: Path, script: Path, argv: Sequence[str]) -> Iterator[types.ModuleType]:
    """The script imported as a module under its own name, with ``sys.argv = [script, *argv]`` while it loads.

    ``root`` is put first on ``sys.path`` (the script imports ``models``, ``audio``, ``hparams``).
    On exit, ``sys.path``, ``sys.argv`` and every module loaded from ``root`` are restored / dropped,
    so a second checkout can be imported in the same process.
    """
    saved_argv, saved_path = sys.argv, list(sys.path)
    before = set(sys.modules)
    name = script.stem
    spec = importlib.util.spec_from_file_location(name, script)
    if spec is None or spec.loader is None:
        raise CheckoutError(f"{script}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root))
    sys.modules[name] = module
    try:
        sys.argv = [str(script), *argv]
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        for added in set(sys.modules) - before:
            origin = getattr(sys.modules[added], "__file__", None) or ""
            if added == name or Path(origin).resolve().is_relative_to(root):
                del sys.modules[added]


def run_main_block(module: types.ModuleType, script: Path) -> None:
    """Execute the script's ``if __name__ == "__main__":`` body in ``module``'s namespace."""
    block = main_block(parse(script))
    if block is None:
        raise CheckoutError(f"{script} has no `if __name__ == '__main__':` block to run")
    code = compile(ast.Module(body=block.body, type_ignores=[]), str(script), "exec")
    exec(code, module.__dict__)  # noqa: S102 - the user's own training script, as `python script.py` would run it

