"""Draw the face crop framings side by side (README, "The face pipeline"): docs/img/framing.png.

A procedural corpus frame (its fixed camera), then one real frame cut with the shared face crop
from landmarks (``unisync_loss.framing`` via ``faces.crop_boxes``), with dlib's detector box
(``faces.detector_boxes``) and with SyncNet v2's framing of that box (``framing.syncnet_v2_boxes``).
Lines mark the eye height, the mouth height and the middle (rgb experts see below it).

    python benchmarks/plot_framing.py ../shared/real/latentsync_demo3.mp4 --frame 100 --out docs/img/framing.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.synth.clip import generate_clip  # noqa: E402
from pretrain.synth.speakers import make_speaker  # noqa: E402
from unisync_loss.faces import crop_boxes, crop_faces, detector_boxes, track_faces  # noqa: E402
from unisync_loss.framing import EYES_AT, MOUTH_AT, SYNCNET_V2_PAD, SYNCNET_V2_SIZE, syncnet_v2_boxes  # noqa: E402
from unisync_loss.media import read_media  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--frame", type=int, default=100, help="frame of the video to draw (25 fps)")
    parser.add_argument("--out", type=Path, default=Path("docs/img/framing.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = generate_clip(make_speaker(0, 3, "default"), seconds=0.4, preset="default", seed=0).rgb[0]
    frames = read_media(args.video).frames[: args.frame + 30]  # the track needs the frames before
    track = track_faces(frames)
    one = slice(args.frame, args.frame + 1)
    panels = [
        ("procedural corpus (its camera)", corpus),
        ("real: face crop from landmarks", crop_faces(frames[one], crop_boxes(track.landmarks)[one], 96)[0]),
        ("real: dlib detector box", crop_faces(frames[one], detector_boxes(track.landmarks)[one], 96)[0]),
        ("real: SyncNet v2 (syncnet_python)", crop_faces(frames[one], syncnet_v2_boxes(detector_boxes(track.landmarks))[one],
                                                         SYNCNET_V2_SIZE, fill=SYNCNET_V2_PAD)[0]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    for axis, (title, image) in zip(axes, panels):
        size = image.shape[-1]
        axis.imshow(image.permute(1, 2, 0).numpy(), extent=(0, 1, 1, 0))
        for height, style, label in ((EYES_AT, ":", "eyes"), (0.5, "--", "half"), (MOUTH_AT, ":", "mouth")):
            axis.axhline(height, color="lime", ls=style, lw=1)
            axis.text(1.01, 1 - height, label, color="black", fontsize=7, va="center", transform=axis.transAxes)
        axis.set_title(f"{title}\n{size} x {size}", fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([0, EYES_AT, 0.5, MOUTH_AT, 1], ["0", f"{EYES_AT:.3f}", "0.5", f"{MOUTH_AT:.3f}", "1"], fontsize=7)
    figure.suptitle(f"{Path(args.video).name}, frame {args.frame}: lines at the shared framing's eye and mouth heights", fontsize=9)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
