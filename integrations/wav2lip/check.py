"""Can the adapter run this Wav2Lip checkout? Reports the commit, every relied-on name and the shims.

    python -m integrations.wav2lip.check --wav2lip-root ~/Wav2Lip [--script wav2lip|hq|both]

Exit status 0 when the adapter can run every script asked for, 1 when a name is missing or has
changed its signature (or a package the checkout imports is not installed), 2 for a path that is
not a Wav2Lip checkout. Nothing of the checkout is imported or executed: its files are parsed.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path
from typing import Sequence

import torch

from integrations.wav2lip import shims
from integrations.wav2lip.checkout import CheckoutError, Inspection, checkout_root, inspect_checkout, parse


def shim_report(root: Path, script: str) -> list[shims.Shim]:
    """The shims ``train`` would apply to ``script`` in this environment, each with its reason."""
    report = []
    try:
        librosa = importlib.import_module("librosa")
        needed = shims.librosa_shim_needed(librosa.filters.mel) and _calls_mel_positionally(root / "audio.py")
        reason = (f"librosa {librosa.__version__}: filters.mel is keyword-only and audio.py passes sr, n_fft positionally"
                  if needed else f"librosa {librosa.__version__} accepts audio.py's call")
    except ImportError:
        needed, reason = False, "librosa is not installed"
    report.append(shims.Shim("librosa", needed, reason))
    if script == "hq":
        cuda = not torch.cuda.is_available() and ".cuda(" in (root / "models" / "wav2lip.py").read_text(encoding="utf-8")
        report.append(shims.Shim("cuda", cuda, "no CUDA here and Wav2Lip_disc_qual.perceptual_forward calls .cuda()" if cuda
                                 else "CUDA is available or perceptual_forward has no .cuda()"))
    report.append(shims.Shim("workers", True, "hparams.num_workers and the eval loader's hard-coded 4 become --workers"))
    return report


def _calls_mel_positionally(audio_py: Path) -> bool:
    """True when ``audio_py`` calls some ``....mel(`` with positional arguments (librosa < 0.10 style)."""
    for node in ast.walk(parse(audio_py)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "mel" and node.args:
            return True
    return False


def format_report(inspection: Inspection, shim_list: list[shims.Shim]) -> str:
    """The text ``check`` prints for one script."""
    lines = [f"script {inspection.script}: {'OK, the adapter can run it' if inspection.runnable else 'the adapter CANNOT run it'}"]
    for finding in inspection.findings:
        requirement = finding.requirement
        detail = f" ({finding.detail})" if finding.detail else ""
        lines.append(f"  {finding.status:<17} {requirement.file}: {requirement.name}{detail} -- {requirement.use}")
    for name in inspection.missing_packages:
        lines.append(f"  missing package   {name}")
    for shim in shim_list:
        lines.append(f"  shim {shim.name:<8} {'applied' if shim.needed else 'not needed'}: {shim.reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m integrations.wav2lip.check",
                                     description="Report whether the UniSync adapter can run a Wav2Lip checkout.")
    parser.add_argument("--wav2lip-root", required=True, help="root of the Wav2Lip checkout")
    parser.add_argument("--script", choices=("wav2lip", "hq", "both"), default="both", help="which training script(s) to check")
    args = parser.parse_args(argv)
    try:
        root = checkout_root(args.wav2lip_root)
        inspections = [inspect_checkout(root, script) for script in (("wav2lip", "hq") if args.script == "both" else (args.script,))]
    except CheckoutError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    commit = inspections[0].commit
    print(f"Wav2Lip checkout {root}: commit {commit or 'unknown (not a git checkout)'}")
    for inspection in inspections:
        print(format_report(inspection, shim_report(root, inspection.script)))
    raise SystemExit(0 if all(i.runnable for i in inspections) else 1)


if __name__ == "__main__":
    main()
