"""Can the adapter run on this GeneFace checkout? Commit, upstream names relied on, shims, package collisions.

    python -m integrations.geneface.check --geneface-root PATH [--expert E] [--visual landmarks]

Exit status: 0 when everything the adapter needs is there (and the expert, when given, can score
GeneFace's samples); 1 when something is missing (listed); 2 for a bad root or expert (one line).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from unisync_loss.experts import ExpertFileError

from integrations.geneface.syncnet import VISUAL_KEYS, UniSyncSyncNetTask
from integrations.geneface.upstream import (GENEFACE_PACKAGES, RELIED_ON, RELIED_ON_METHODS, GeneFaceRootError,
                                            check_root, commit, put_on_path)


def collisions(root: Path) -> list[str]:
    """GeneFace packages that resolve outside the checkout, and our packages that the checkout would shadow."""
    problems = []
    for package in GENEFACE_PACKAGES:
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        origin = Path(locations[0]).resolve() if locations else None
        if origin is None or root not in origin.parents:
            problems.append(f"{package}: resolves to {origin} instead of {root / package}")
    for ours in ("unisync_loss", "integrations"):
        if (root / ours).exists():
            problems.append(f"{ours}: the GeneFace checkout has its own {root / ours}, which would shadow ours")
    return problems


def missing_names() -> list[str]:
    """Upstream modules / names / methods the adapter relies on that cannot be imported or found."""
    missing = []
    classes = {}
    for module_name, names in RELIED_ON.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # any import failure means the adapter cannot run
            missing.append(f"{module_name}: import failed ({type(error).__name__}: {error})")
            continue
        for name in names:
            if not hasattr(module, name):
                missing.append(f"{module_name}.{name}")
            else:
                classes.setdefault(name, getattr(module, name))
    for class_name, methods in RELIED_ON_METHODS.items():
        missing += [f"{class_name}.{m}" for m in methods if class_name in classes and not hasattr(classes[class_name], m)]
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integrations.geneface.check", description=__doc__.splitlines()[0])
    p.add_argument("--geneface-root", required=True, help="root of a yerfor/GeneFace checkout")
    p.add_argument("--expert", help="also check this UniSync expert (file, cached name or 'procedural')")
    p.add_argument("--visual", default="landmarks", choices=sorted(VISUAL_KEYS))
    options = p.parse_args(argv)
    try:
        root = check_root(options.geneface_root)
        expert = UniSyncSyncNetTask(options.expert, options.visual) if options.expert else None
    except (GeneFaceRootError, ExpertFileError, ValueError) as error:
        print(f"integrations.geneface.check: error: {error}", file=sys.stderr)
        return 2
    put_on_path(root)
    print(f"GeneFace root:   {root}")
    print(f"GeneFace commit: {commit(root)}")
    problems = collisions(root)
    from integrations.geneface.shims import apply_shims

    shims = apply_shims()
    problems += missing_names()
    print("relied on:       " + "; ".join(f"{m}: {', '.join(n)}" for m, n in RELIED_ON.items()))
    print("shims applied:   " + ("; ".join(shims) if shims else "none"))
    if expert is not None:
        print(f"expert:          {expert.model.source} (hubert x {options.visual}, window {expert.window})")
    for problem in problems:
        print(f"MISSING: {problem}")
    print("ready: yes" if not problems else f"ready: no ({len(problems)} problem(s))")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
