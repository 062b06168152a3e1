"""Command line: write the procedural talking-head corpus to disk.

    python -m pretrain.synth --out DIR --speakers N --clips-per-speaker K --seconds S --preset default --seed 0

Writes the Wav2Lip-layout corpus (see :mod:`pretrain.synth.corpus`) plus ``DIR/contact_sheet.png``
and ``DIR/spectrogram.png`` of the first clip, and prints a summary.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from pretrain.synth.clip import generate_clip
from pretrain.synth.contact_sheet import contact_sheet, spectrogram
from pretrain.synth.corpus import DEFAULT_FRACTIONS, write_corpus
from pretrain.synth.presets import PRESETS
from pretrain.synth.speakers import make_speaker


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="corpus root folder (created)")
    parser.add_argument("--speakers", type=int, default=16, help="number of speakers, all splits (default 16)")
    parser.add_argument("--clips-per-speaker", type=int, default=4, help="clips per speaker (default 4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each clip in seconds (default 3)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="difficulty (default: default)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed; same seed -> same bytes (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--image-size", type=int, default=None, help="face crop size in pixels (default: the preset's, 96)")
    parser.add_argument("--split", type=float, nargs=3, default=DEFAULT_FRACTIONS, metavar=("TRAIN", "VAL", "TEST"),
                        help="share of speakers per split (default 0.8 0.1 0.1)")
    args = parser.parse_args(argv)
    try:
        summary = write_corpus(args.out, args.speakers, args.clips_per_speaker, args.seconds, args.preset, args.seed,
                               args.workers, args.image_size, args.split)
    except ValueError as error:
        parser.error(str(error))
    first = generate_clip(make_speaker(args.seed, 0, args.preset), args.seconds, args.preset, args.seed,
                          args.image_size)
    sheet = contact_sheet(first, summary.out / "contact_sheet.png")
    spectrogram(first, summary.out / "spectrogram.png")
    splits = ", ".join(f"{name} {count}" for name, count in summary.splits.items())
    print(f"wrote {summary.clips} clips ({splits}), {summary.frames} frames, {summary.audio_seconds:.0f} s of audio "
          f"to {summary.out} in {summary.wall_s:.1f} s ({summary.frames / summary.wall_s:.0f} frames/s); "
          f"contact sheet {sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
