"""Pictures of one procedural clip for people: a contact sheet and a speech spectrogram (PNG, matplotlib Agg).

The contact sheet shows, on one shared time axis: RGB frames, parsing maps (colour palette),
the 2D landmarks, the mouth articulation (ground truth and the inner-lip gap measured on the
landmarks), the waveform and the log-mel spectrogram. Each thumbnail sits over the time span it
represents, so a mouth opening can be followed down to the audio it belongs to.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from pretrain.synth.clip import Clip  # noqa: E402
from unisync_loss.audio import SAMPLE_RATE, VIDEO_FPS  # noqa: E402

PARSING_PALETTE = np.array([
    [0, 0, 0], [204, 153, 128], [230, 190, 60], [170, 255, 255], [60, 120, 255], [0, 200, 255],
    [150, 90, 40], [200, 120, 60], [255, 200, 200], [255, 170, 170], [30, 10, 60], [220, 40, 70],
    [160, 20, 90], [90, 60, 30], [255, 255, 0], [255, 0, 255], [0, 255, 128], [240, 215, 190], [100, 100, 220],
], dtype=np.uint8)
"""(19, 3) display colour of each CelebAMask-HQ class id (10 mouth interior is near-black, lips red / purple)."""

_CONTOURS = ((0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False), (36, 42, True),
             (42, 48, True), (48, 60, True), (60, 68, True))
"""iBUG-68 polylines (start, end, closed): jaw, brows, nose bridge, nostrils, eyes, outer and inner lips."""


def _strip(frames: np.ndarray) -> np.ndarray:
    """(k, H, W, C) -> (H, k·W, C): thumbnails side by side."""
    return np.concatenate(list(frames), axis=1)


def _image_row(ax: Axes, strip: np.ndarray, seconds: float, label: str) -> None:
    ax.imshow(strip, extent=(0.0, seconds, 0.0, 1.0), aspect="auto", interpolation="nearest")
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center")


def _landmark_row(ax: Axes, points: np.ndarray, size: tuple[int, int], slot: float, label: str) -> None:
    """Draw (k, 68, 2) pixel landmarks, thumbnail j spanning [j·slot, (j+1)·slot] on the time axis."""
    height, width = size
    for j, frame in enumerate(points):
        x = j * slot + frame[:, 0] / width * slot
        y = 1.0 - frame[:, 1] / height
        for start, end, closed in _CONTOURS:
            index = list(range(start, end)) + ([start] if closed else [])
            colour = "tab:red" if start >= 48 else "0.35"
            ax.plot(x[index], y[index], color=colour, linewidth=0.8)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center")


def contact_sheet(clip: Clip, path: str | Path, columns: int = 15, dpi: int = 100) -> Path:
    """Write the contact sheet of ``clip`` as a PNG; returns the path.

    Args:
        clip: the clip to show.
        path: output ``.png``.
        columns: number of thumbnails across the clip (frame at the centre of each equal time slot).
        dpi: resolution; the figure is 15 inches wide.
    """
    n, seconds = clip.n_frames, clip.seconds
    slot = seconds / columns
    picks = np.minimum(((np.arange(columns) + 0.5) * n / columns).astype(int), n - 1)
    height, width = clip.rgb.shape[-2:]
    frame_t = (np.arange(n) + 0.5) / VIDEO_FPS

    left, right, fig_w = 0.1, 0.985, 15.0
    thumb_in = (right - left) * fig_w / columns * height / width
    rows_in = [thumb_in, thumb_in, thumb_in, 1.1, 0.9, 1.4]
    gap_in, top_in, bottom_in = 0.08, 0.45, 0.5
    fig_h = sum(rows_in) + gap_in * (len(rows_in) - 1) + top_in + bottom_in
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    axes: list[Axes] = []
    y = fig_h - top_in
    for row_in in rows_in:
        y -= row_in
        axes.append(fig.add_axes((left, y / fig_h, right - left, row_in / fig_h),
                                 sharex=axes[0] if axes else None))
        y -= gap_in
    ax_rgb, ax_parsing, ax_lm, ax_mouth, ax_wave, ax_mel = axes

    _image_row(ax_rgb, _strip(clip.rgb[picks].permute(0, 2, 3, 1).numpy()), seconds, "RGB")
    _image_row(ax_parsing, _strip(PARSING_PALETTE[clip.parsing[picks].numpy()]), seconds, "parsing")
    _landmark_row(ax_lm, clip.landmarks2d[picks].numpy(), (height, width), slot, "landmarks\n(2D)")

    mouth = clip.mouth.numpy()
    gap = torch.linalg.vector_norm(clip.landmarks2d[:, [61, 62, 63]] - clip.landmarks2d[:, [67, 66, 65]], dim=-1)
    gap = gap.mean(dim=1).numpy()
    ax_mouth.plot(frame_t, mouth[:, 0], color="tab:blue", label="jaw (truth)")
    ax_mouth.plot(frame_t, mouth[:, 3], color="tab:green", label="closure (truth)")
    ax_mouth.plot(frame_t, gap / max(gap.max(), 1e-6), color="tab:red", linestyle="--",
                  label=f"inner-lip gap / {gap.max():.1f} px")
    ax_mouth.set_ylim(-0.05, 1.4)
    ax_mouth.set_yticks([0.0, 0.5, 1.0])
    ax_mouth.legend(loc="upper right", fontsize=8, ncol=3, framealpha=0.9)
    ax_mouth.set_ylabel("mouth\n(25 fps)", rotation=0, ha="right", va="center")

    wave = clip.wave.numpy()
    ax_wave.plot(np.arange(wave.size) / SAMPLE_RATE, wave, color="0.2", linewidth=0.3)
    ax_wave.set_ylim(-1.0, 1.0)
    ax_wave.set_yticks([-0.5, 0.0, 0.5])
    ax_wave.set_ylabel("waveform\n(16 kHz)", rotation=0, ha="right", va="center")

    mel = clip.representation("mel").numpy()
    ax_mel.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0.0, seconds, 0.0, mel.shape[0]))
    ax_mel.set_ylabel("log-mel\n(80 bands)", rotation=0, ha="right", va="center")
    ax_mel.set_xlabel("time (s)")

    for ax in axes:
        for j in range(columns):
            if ax in (ax_mouth, ax_wave, ax_mel):
                ax.axvline((j + 0.5) * slot, color="0.6", linewidth=0.5, linestyle=":", zorder=0)
        if ax is not ax_mel:
            ax.tick_params(labelbottom=False)
    ax_rgb.set_xlim(0.0, seconds)
    fig.suptitle(f"{clip.clip_id}: {n} frames, {seconds:.2f} s, SNR {clip.snr_db:.0f} dB, "
                 f"AV offset {1000 * clip.av_offset_s:+.1f} ms (procedural, synthetic)", fontsize=11,
                 y=1.0 - 0.15 / fig_h, va="top")
    return _save(fig, path)


def spectrogram(clip: Clip, path: str | Path, dpi: int = 100) -> Path:
    """Write waveform, linear spectrogram (0–8 kHz, 32 ms Hann, dB) and jaw / closure of ``clip`` as a PNG."""
    wave = clip.wave
    n_fft, hop = 512, 64
    power = torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs().square()
    db = 10.0 * torch.log10(power + 1e-10)
    db = db.clamp(min=db.max().item() - 80.0).numpy()
    seconds = clip.seconds
    fig, (ax_wave, ax_spec, ax_mouth) = plt.subplots(3, 1, figsize=(10, 5.5), dpi=dpi, sharex=True,
                                                     gridspec_kw={"height_ratios": (1, 3, 1)})
    ax_wave.plot(np.arange(wave.numel()) / SAMPLE_RATE, wave.numpy(), color="0.2", linewidth=0.3)
    ax_wave.set_ylabel("wave")
    ax_spec.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0.0, seconds, 0.0, SAMPLE_RATE / 2000))
    ax_spec.set_ylabel("frequency (kHz)")
    frame_t = (np.arange(clip.n_frames) + 0.5) / VIDEO_FPS
    ax_mouth.plot(frame_t, clip.mouth[:, 0].numpy(), color="tab:blue", label="jaw")
    ax_mouth.plot(frame_t, clip.mouth[:, 3].numpy(), color="tab:green", label="lip closure")
    ax_mouth.set_ylim(-0.05, 1.4)
    ax_mouth.set_yticks([0.0, 0.5, 1.0])
    ax_mouth.legend(loc="upper right", fontsize=8, ncol=2)
    ax_mouth.set_ylabel("mouth")
    ax_mouth.set_xlabel("time (s)")
    ax_mouth.set_xlim(0.0, seconds)
    fig.suptitle(f"Synthetic babble speech, {clip.clip_id} (source-filter synthesis, SNR {clip.snr_db:.0f} dB)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a 256-colour PNG (a third of the RGB file size, no visible loss) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    return path
