"""Procedural-corpus benchmark: time to write a corpus to disk, against the 3-minute target.

    python benchmarks/bench_synth.py [--speakers 100] [--clips-per-speaker 10] [--seconds 3] [--workers 2]
        [--preset default] [--out /tmp/bench_synth]

Writes the corpus with ``pretrain.synth.corpus.write_corpus`` (all representations, JPEG frames,
audio.wav, reps.safetensors, manifest) and prints wall time, frames per second, the seconds spent
per stage (summed over workers) and the ratio to the 180 s target. As a same-run baseline it also
writes the first speaker's clips with one worker, so the parallel speed-up is measured on the
same machine at the same moment. Deletes the output folder afterwards.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pretrain.synth.corpus import write_corpus  # noqa: E402

TARGET_S = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=100)
    parser.add_argument("--clips-per-speaker", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_synth"))
    args = parser.parse_args()

    baseline_dir, full_dir = args.out / "baseline", args.out / "full"
    shutil.rmtree(args.out, ignore_errors=True)
    start = time.perf_counter()
    baseline = write_corpus(baseline_dir, 1, args.clips_per_speaker, args.seconds, args.preset, workers=1, progress=False)
    baseline_fps = baseline.frames / (time.perf_counter() - start)

    summary = write_corpus(full_dir, args.speakers, args.clips_per_speaker, args.seconds, args.preset,
                           workers=args.workers)
    fps = summary.frames / summary.wall_s
    size_mb = sum(f.stat().st_size for f in full_dir.rglob("*") if f.is_file()) / 2**20
    shutil.rmtree(args.out, ignore_errors=True)

    print(f"\ncorpus: {args.speakers} speakers x {args.clips_per_speaker} clips x {args.seconds:g} s, "
          f"preset {args.preset}, {args.workers} workers")
    print(f"  clips {summary.clips}, frames {summary.frames}, audio {summary.audio_seconds:.0f} s, "
          f"{size_mb:.0f} MiB on disk")
    print(f"  wall {summary.wall_s:.1f} s  ({fps:.0f} frames/s); target {TARGET_S:.0f} s -> "
          f"ratio wall/target {summary.wall_s / TARGET_S:.2f}")
    print(f"  1-worker baseline (same run): {baseline_fps:.0f} frames/s -> speed-up x{fps / baseline_fps:.2f}")
    total = sum(summary.stage_s.values())
    for stage, seconds in sorted(summary.stage_s.items(), key=lambda item: -item[1]):
        print(f"  stage {stage:<7} {seconds:7.1f} s summed over workers ({100 * seconds / total:4.1f} %)")


if __name__ == "__main__":
    main()
