"""Face pipeline speed and known-shift recovery on real clips (BENCHMARKS.md, "Face pipeline").

For each video: decode (25 fps, 16 kHz), detect faces + landmarks once (timed: frames/s, and its
share of the clip's whole ``score`` time), then score the clip with its audio shifted by each k in
``--shifts`` frames, by cropping as ``pretrain.evaluate`` does (k > 0 drops the first k video
frames, k < 0 the first |k| frames of audio), with each expert. A case is correct when the clip
offset equals the clip's own offset at k = 0 plus k, within +-1 frame. ``--crops`` frames the rgb
experts' crops with the project's face crop from landmarks (``landmarks``, what ``unisync score``
uses) and/or with dlib's detector box (``detector``: another framing, to see how much it matters).

    python benchmarks/bench_faces.py ../shared/real/syncnet_example.avi ../shared/real/latentsync_demo3.mp4 \
        --experts procedural_mel_landmarks procedural_mel_rgb --threads 1 --out runs/bench_faces.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's unisync_loss, not an installed copy

from unisync_loss.faces import crop_boxes, crop_faces, detector_boxes, track_faces
from unisync_loss.media import read_media
from unisync_loss.representations import fit_landmarks, rgb_clip
from unisync_loss.scoring import SAMPLES_PER_FRAME, open_expert, score_media


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+")
    parser.add_argument("--experts", nargs="+", default=["procedural_mel_landmarks", "procedural_mel_rgb"])
    parser.add_argument("--shifts", nargs="+", type=int, default=[-10, -5, -3, 0, 3, 5, 10])
    parser.add_argument("--crops", nargs="+", choices=("landmarks", "detector"), default=["landmarks"],
                        help="framings of the rgb crops: the face crop from landmarks and/or dlib's detector box")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench_faces.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    experts = [open_expert(name) for name in args.experts]
    report = {"videos": {}, "experts": args.experts, "shifts": args.shifts}
    for video in args.videos:
        clock = time.perf_counter()
        media = read_media(video)
        read_s = time.perf_counter() - clock
        clock = time.perf_counter()
        track = track_faces(media.frames)
        faces_s = time.perf_counter() - clock
        segments = track.segments()
        entry = {"frames": media.frames.shape[0], "frame_size": list(media.frames.shape[1:3]), "read_s": round(read_s, 2),
                 "faces_s": round(faces_s, 2), "faces_fps": round(media.frames.shape[0] / faces_s, 2), "faces": track.summary()}
        runs = [(expert, crop) for expert in experts for crop in (["landmarks"] if expert.visual == "landmarks" else args.crops)]
        for expert, crop in runs:
            if expert.visual == "landmarks":
                visual = fit_landmarks(track.landmarks, expert.model.config.visual["landmarks"], "y_down", pad_depth=True)
            else:
                boxes = crop_boxes(track.landmarks) if crop == "landmarks" else detector_boxes(track.landmarks)
                visual = rgb_clip(crop_faces(media.frames, boxes, expert.model.config.visual["rgb"]["size"]))
            name = Path(expert.source).stem + ("" if crop == "landmarks" else "@detector")
            cases = {}
            for shift in args.shifts:
                clock = time.perf_counter()
                if shift >= 0:
                    wave, shifted = media.wave, visual[shift:]
                    cut = [(max(a - shift, 0), b - shift) for a, b in segments if b > shift]
                else:
                    wave, shifted, cut = media.wave[-shift * SAMPLES_PER_FRAME:], visual, segments
                result = score_media(wave, shifted, cut, expert)
                cases[shift] = {"offset": result["offset_frames"], "confidence": round(result["confidence"], 4),
                                "score_s": round(time.perf_counter() - clock, 2)}
            own = cases[0]["offset"] if 0 in cases else 0
            correct = sum(abs(c["offset"] - (own + k)) <= 1 for k, c in cases.items())
            entry[name] = {"own_offset": own, "correct": correct, "cases": cases}
            print(f"{Path(video).name} {name}: own offset {own:+d}, "
                  f"{correct}/{len(cases)} shifts recovered; offsets {[c['offset'] for c in cases.values()]}", flush=True)
        score_s = entry[Path(experts[0].source).stem]["cases"][args.shifts[0]]["score_s"]
        entry["faces_share_of_score"] = round(faces_s / (read_s + faces_s + score_s), 3)
        print(f"{Path(video).name}: {entry['faces_fps']} frames/s detection + landmarks "
              f"({entry['frames']} frames {entry['frame_size']}), {entry['faces']['hog']} HOG / {entry['faces']['cnn']} CNN / "
              f"{entry['faces']['track']} tracked; share of score wall time {entry['faces_share_of_score']:.0%}", flush=True)
        report["videos"][str(video)] = entry
    names = [key for key, value in next(iter(report["videos"].values())).items() if isinstance(value, dict) and "correct" in value]
    totals = {name: sum(v[name]["correct"] for v in report["videos"].values()) for name in names}
    report["correct"] = totals
    print(f"recovered (of {len(args.videos) * len(args.shifts)}): {totals}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
