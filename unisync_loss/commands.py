"""Command-line glue of ``unisync score``, ``unisync batch`` and ``unisync prepare`` (the work is in ``scoring``).

    unisync score VIDEO [--audio WAV] [--expert E] [--json] [--plot out.png] [--face-crops] [--vad]
    unisync batch LIST_OR_DIR --out results.csv [--expert E] [--face-crops] [--vad]
    unisync prepare VIDEO... --out ROOT [--size 96] [--speaker NAME] [--split test]

Every problem a user can cause ends with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from unisync_loss.media import DEFAULT_MAX_SIDE

MEDIA_COMMANDS = ("score", "batch", "prepare")


def add_media_commands(commands: argparse._SubParsersAction) -> None:
    """Register the three subcommands on the ``unisync`` parser."""
    score = commands.add_parser("score", help="sync offset, confidence and distance of one video")
    score.add_argument("video", help="video file (any container / codec FFmpeg reads)")
    score.add_argument("--audio", help="separate audio file starting with the first frame (default: the video's own track)")
    _common(score)
    score.add_argument("--json", action="store_true",
                       help="print the full result as JSON (p_sync, or SyncNet v2's distance, over time and per offset)")
    score.add_argument("--plot", metavar="PNG", help="draw p_sync (SyncNet v2: distance) vs offset and over time into this file")

    batch = commands.add_parser("batch", help="score many videos into a CSV (failures are rows, not stops)")
    batch.add_argument("inputs", metavar="LIST_OR_DIR", help="folder of videos, or a text file with one video path per line")
    batch.add_argument("--out", required=True, help="CSV file to write (one row per video)")
    _common(batch)

    prepare = commands.add_parser("prepare", help="turn videos into Wav2Lip-layout training / evaluation data")
    prepare.add_argument("videos", nargs="+", metavar="VIDEO")
    prepare.add_argument("--out", required=True, help="data root (ROOT/<speaker>/<clip>/, ROOT/filelists/)")
    prepare.add_argument("--size", type=int, default=96, help="face crop size in pixels (default 96)")
    prepare.add_argument("--speaker", help="speaker folder for all given videos (default: each video's file name)")
    prepare.add_argument("--split", default="test", choices=("train", "val", "test"), help="filelist the clips join (default test)")
    prepare.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="decode frames at most this large (px)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--expert", help="expert file, cached name (mel_rgb), bundled name (procedural_mel_landmarks), "
                                         "wav2lip:lipsync_expert.pth or syncnet_v2:syncnet_v2.model (LSE-C / LSE-D); "
                                         "default: cached mel_landmarks / mel_rgb, else the bundled procedural mel_landmarks")
    parser.add_argument("--visual", choices=("landmarks", "rgb"), help="visual head when the expert has both")
    parser.add_argument("--face-crops", action="store_true",
                        help="the frames already are face crops (generator output): no face detection, rgb experts only")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="decode frames at most this large (px)")
    parser.add_argument("--vad", action="store_true", help="score only windows with speech (Silero VAD, the vad extra)")


def run_media_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run one of :data:`MEDIA_COMMANDS`; user errors exit with status 2 and one line."""
    from unisync_loss import scoring

    try:
        if args.command == "prepare":
            return _prepare(args, scoring)
        expert = scoring.open_expert(args.expert, args.visual)
        if args.command == "batch":
            summary = scoring.score_batch(scoring.batch_inputs(args.inputs), args.out, expert, args.face_crops, args.max_side, vad=args.vad)
            print(json.dumps(summary, indent=1))
            return 0
        result = scoring.score_video(args.video, args.audio, expert, args.face_crops, args.max_side, vad=args.vad)
        if args.plot:
            scoring.plot_result(result, args.plot)
        print(json.dumps(result, indent=1) if args.json else scoring.summary_line(result))
        return 0
    except (scoring.ScoringError, ImportError) as error:
        parser.exit(2, f"unisync {args.command}: {error}\n")
    return 2


def _prepare(args: argparse.Namespace, scoring) -> int:
    from unisync_loss.progress import progress

    written, failed = [], []
    for video in progress(args.videos, desc="preparing", stream=sys.stderr):
        try:
            written.extend(scoring.prepare_video(video, args.out, args.speaker, args.size, max_side=args.max_side))
        except scoring.ScoringError as error:
            failed.append(f"{video}: {error}")
    if written:
        scoring.add_to_filelist(args.out, args.split, written)
    for line in failed:
        print(f"unisync prepare: {line}", file=sys.stderr)
    print(json.dumps({"clips": written, "failed": len(failed), "filelist": f"{args.out}/filelists/{args.split}.txt"}, indent=1))
    if failed and not written:
        return 2
    return 0
