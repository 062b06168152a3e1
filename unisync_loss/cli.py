"""The ``unisync`` command: list the experts ``UniSyncLoss`` can find and show what one holds.

    unisync experts            experts in the cache ($UNISYNC_HOME/experts) and bundled with the package;
                               an unusable file is listed with its problem, the others still are
                               (exit status 0 either way: the listing itself succeeded)
    unisync info EXPERT        header of one expert (a path or a listed name such as ``hubert_3dmm``) as JSON
    unisync score VIDEO        offset, confidence and distance of a real clip (see unisync_loss.commands)
    unisync batch LIST_OR_DIR  score many clips into a CSV
    unisync prepare VIDEO...   Wav2Lip-layout training data (face crops, audio.wav, reps.safetensors, filelists)
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from unisync_loss.commands import MEDIA_COMMANDS, add_media_commands, run_media_command
from unisync_loss.experts import BUNDLED_DIR, EXPERT_SUFFIX, ExpertFileError, experts_dir, read_expert_header, trained_pairs


def _summary(path: Path) -> str:
    """One line per expert: file, heads, window, held-out accuracy when recorded; or the file's problem."""
    try:
        header = read_expert_header(path)
    except ExpertFileError as error:
        return f"  {path.name}: not a usable expert ({error})"
    pairs = trained_pairs(header)
    untrained = len(pairs) < len(header["audio"]) * len(header["visual"])
    trained = f" (trained pairs: {', '.join(f'{audio} x {visual}' for audio, visual in pairs)})" if untrained else ""
    return (f"  {path.name}: audio [{', '.join(header['audio'])}] x visual [{', '.join(header['visual'])}]{trained}, "
            f"T={header['window']}{_accuracy_text(header.get('training') or {})}")


def _accuracy_text(training: dict) -> str:
    """The held-out accuracy a header records: the pooled many-speaker figure (``training.held_out``,
    mean ± standard error over speakers; per pair in ``training.held_out_per_pair`` for a joint expert)
    when present, else the run's own test split (``test_accuracy``)."""
    per_pair = training.get("held_out_per_pair")
    if isinstance(per_pair, dict) and per_pair and all(_is_held_out(row) for row in per_pair.values()):
        first = next(iter(per_pair.values()))
        figures = ", ".join(f"{pair.replace('_', ' x ', 1)} {row['sync_accuracy']:.3f}{_spread(row)}" for pair, row in per_pair.items())
        return f", held-out sync accuracy{_details(first)}: {figures}"
    held_out = training.get("held_out")
    if _is_held_out(held_out):
        return f", held-out sync accuracy {held_out['sync_accuracy']:.3f}{_spread(held_out)}{_details(held_out)}"
    accuracy = training.get("test_accuracy")
    return f", held-out sync accuracy {accuracy:.3f}" if isinstance(accuracy, (int, float)) else ""


def _is_held_out(row: object) -> bool:
    return isinstance(row, dict) and isinstance(row.get("sync_accuracy"), (int, float))


def _spread(row: dict) -> str:
    se = row.get("speaker_se")
    return f" ± {se:.3f}" if isinstance(se, (int, float)) else ""


def _details(row: dict) -> str:
    speakers, chance = row.get("speakers"), row.get("chance")
    details = [f"{speakers} speakers"] if isinstance(speakers, int) else []
    details += [f"chance {chance:.3f}"] if isinstance(chance, (int, float)) else []
    return f" ({', '.join(details)})" if details else ""


def list_experts() -> str:
    """The text printed by ``unisync experts``: every file, usable or not (an unusable one with its problem)."""
    lines = []
    for title, folder in (("cache", experts_dir()), ("bundled (procedural corpus, demos and tests only)", BUNDLED_DIR)):
        files = sorted(folder.glob(f"*{EXPERT_SUFFIX}")) if folder.is_dir() else []
        lines.append(f"{title}: {folder}" + ("" if files else " (none)"))
        lines.extend(_summary(path) for path in files)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unisync", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("experts", help="list cached and bundled experts")
    info = commands.add_parser("info", help="print the JSON header of an expert")
    info.add_argument("expert", help="expert file, or a name `unisync experts` lists (e.g. hubert_3dmm, procedural_mel_rgb)")
    add_media_commands(commands)
    args = parser.parse_args(argv)
    if args.command in MEDIA_COMMANDS:
        return run_media_command(args, parser)
    if args.command == "experts":
        print(list_experts())
        return 0
    try:
        print(json.dumps(read_expert_header(args.expert), indent=1))
    except ExpertFileError as error:
        parser.exit(2, f"unisync info: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
