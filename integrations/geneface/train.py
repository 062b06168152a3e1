"""Train a GeneFace task with a UniSync expert: GeneFace's own launcher (``tasks/run.py``) on an unmodified checkout.

    python -m integrations.geneface.train --geneface-root PATH --expert E [--visual landmarks] -- <GeneFace's arguments>

Runs from this project's root. It checks the checkout and the expert (one-line error, exit 2),
changes into the GeneFace root (GeneFace's paths are relative to it), puts the checkout and this
project on ``sys.path``, applies the shims, adds ``--config configs/lm3d_vae_sync_unisync.yaml`` when
no ``--config`` is given, passes the expert through ``--hparams unisync_expert=E,unisync_visual=V``
(merged with yours) and runs ``tasks/run.py`` as GeneFace's own command would.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path
from typing import Sequence

from unisync_loss.experts import ExpertFileError

from integrations.geneface.syncnet import VISUAL_KEYS, UniSyncSyncNetTask
from integrations.geneface.upstream import GeneFaceRootError, check_root, put_on_path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lm3d_vae_sync_unisync.yaml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m integrations.geneface.train",
        description="Run GeneFace's tasks/run.py with a UniSync expert in place of GeneFace's syncnet.",
        epilog="Everything after -- goes to GeneFace's tasks/run.py (--config, --exp_name, --hparams, --reset, ...).",
    )
    p.add_argument("--geneface-root", required=True, help="root of a yerfor/GeneFace checkout")
    p.add_argument("--expert", required=True, help="UniSync expert file, cached expert name, or 'procedural'")
    p.add_argument("--visual", default="landmarks", choices=sorted(VISUAL_KEYS), help="the expert's visual representation")
    p.add_argument("geneface_args", nargs=argparse.REMAINDER, help="-- then GeneFace's own arguments")
    return p


def expert_argument(expert: str) -> str:
    """The expert as GeneFace's ``--hparams`` can carry it: an absolute path when it is a file here."""
    value = str(Path(expert).resolve()) if Path(expert).is_file() else expert
    if "," in value or "=" in value:
        raise ValueError(f"--expert {expert}: GeneFace's --hparams cannot carry ',' or '=' in a value; rename the file")
    return value


def geneface_argv(args: Sequence[str], expert: str, visual: str) -> list[str]:
    """GeneFace's argument list: ours merged into ``--hparams``, our default config unless ``--config`` is given."""
    args = list(args[1:] if args and args[0] == "--" else args)
    ours = f"unisync_expert={expert},unisync_visual={visual}"
    for index, arg in enumerate(args):
        if arg in ("--hparams", "-hp") and index + 1 < len(args):
            args[index + 1] = f"{args[index + 1]},{ours}" if args[index + 1] else ours
            break
        if arg.startswith("--hparams="):
            given = arg.split("=", 1)[1]
            args[index] = f"--hparams={given},{ours}" if given else f"--hparams={ours}"
            break
    else:
        args += ["--hparams", ours]
    if not any(arg == "--config" or arg.startswith("--config=") for arg in args):
        args = ["--config", str(DEFAULT_CONFIG), *args]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        root = check_root(options.geneface_root)
        expert = expert_argument(options.expert)
        UniSyncSyncNetTask(expert, options.visual)  # fails here, clearly, rather than inside GeneFace's trainer
    except (GeneFaceRootError, ExpertFileError, ValueError) as error:
        print(f"integrations.geneface.train: error: {error}", file=sys.stderr)
        return 2
    argv_geneface = geneface_argv(options.geneface_args, expert, options.visual)
    os.chdir(root)
    put_on_path(root)
    from integrations.geneface.shims import apply_shims

    for shim in apply_shims():
        print(f"| unisync shim: {shim}")
    sys.argv = [str(root / "tasks" / "run.py"), *argv_geneface]
    runpy.run_path(str(root / "tasks" / "run.py"), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
