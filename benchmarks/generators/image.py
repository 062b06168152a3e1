"""A Wav2Lip-like image generator (mel window + reference frame + masked target -> face crop), its
training, and the mouth reader that turns generated pictures back into a mouth track.

The generator draws frame ``i`` of a clip from the 16-column mel window of the 5 frames centred
on ``i`` (as Wav2Lip feeds each frame), a reference frame of the same clip and frame ``i`` with
its lower half blanked, through a small U-Net whose bottleneck receives the audio code. Its
encoder sees the whole 96 x 96 crop (head pose shows in the upper half) but its decoder draws
only the blanked lower half; the output face is the target's upper half above the drawn lower
half (Wav2Lip's output copies the upper half too), which halves the decoder's cost. It trains on
5 consecutive frames at a time with an L1 loss on the drawn lower half plus, optionally,
``sync_weight`` times a frozen mel x rgb expert's sync loss on those 5 composed faces.

The corpus knows the true mouth of every frame but a picture does not state it, so a small CNN,
the **mouth reader**, is trained on the train speakers' true frames (lower half -> jaw, spread,
round, closure) and reads the generated frames; its error on the true test frames is reported
as the ceiling of that measure.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from pretrain.data import FolderSource
from unisync_loss import UniSyncLoss
from unisync_loss.atomic import save_state_dict
from unisync_loss.progress import progress
from unisync_loss.windows import cut_windows, time_length, window_count

WINDOW = 5
CONTEXT = WINDOW // 2
"""Frame ``i`` hears the mel window of frames ``i - 2 .. i + 2``."""


@dataclass(frozen=True)
class ImageClip:
    """One clip: ``rgb`` (n, 3, H, W) uint8, ``mel`` (80, F), ``hubert`` (2n, D) for the evaluator,
    ``mouth`` (n, 4) true (jaw, spread, round, closure)."""

    clip_id: str
    rgb: Tensor
    mel: Tensor
    hubert: Tensor
    mouth: Tensor

    @property
    def frames(self) -> range:
        """Frames the generator can draw: those whose centred mel window lies inside the audio."""
        last = min(self.rgb.shape[0] - 1, window_count("mel", time_length(self.mel, "mel"), WINDOW) - 1 + CONTEXT)
        return range(CONTEXT, last + 1)


def load_image_clips(source: FolderSource) -> list[ImageClip]:
    """Every clip of ``source``, a procedural corpus written by ``pretrain.synth`` (ground-truth ``mouth``)."""
    clips = []
    for index, record in enumerate(source.records):
        tensors = source.load(index, ("rgb", "mel", "hubert"))
        with safe_open(str(source.clip_dir(index) / "reps.safetensors"), framework="pt") as reps:
            mouth = reps.get_tensor("mouth")
        clips.append(ImageClip(record.clip_id, tensors["rgb"], tensors["mel"].float(), tensors["hubert"].float(),
                               mouth.float()))
    return clips


def lower_half(x: Tensor) -> Tensor:
    """The lower half rows of ``(..., H, W)`` (a view): what the generator draws and the mouth reader reads."""
    return x[..., x.shape[-2] // 2:, :]


def masked(frames: Tensor) -> Tensor:
    """``(B, 3, H, W)`` frames with the lower half set to 0 (what the generator must fill in)."""
    out = frames.clone()
    lower_half(out).zero_()
    return out


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.ReLU())


class ImageGenerator(nn.Module):
    """``mel (B, 1, 80, 16)``, ``reference (B, 3, H, W)``, ``masked (B, 3, H, W)`` in [0, 1] -> ``(B, 3, H, W)``.

    A three-level U-Net (H divisible by 16, W by 8) with the audio code added at the bottleneck;
    the decoder works on the lower half of every level only, and the output is the masked
    target's upper half above the drawn lower half.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        c = width
        self.audio = nn.Sequential(_conv(1, c, 2), _conv(c, 2 * c, 2), _conv(2 * c, 4 * c, 2),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, 4 * c))
        self.stem = _conv(6, c)
        self.down = nn.ModuleList([_conv(c, 2 * c, 2), _conv(2 * c, 4 * c, 2), _conv(4 * c, 4 * c, 2)])
        self.up = nn.ModuleList([_conv(8 * c, 4 * c), _conv(6 * c, 2 * c), _conv(3 * c, c)])
        self.head = nn.Conv2d(c, 3, 1)

    def forward(self, mel: Tensor, reference: Tensor, masked_target: Tensor) -> Tensor:
        x = self.stem(torch.cat([reference, masked_target], dim=1))
        skips = [x]
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = lower_half(x + self.audio(mel)[:, :, None, None])
        skips.pop()
        for layer in self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = layer(torch.cat([x, lower_half(skips.pop())], dim=1))
        upper = masked_target[..., : masked_target.shape[-2] // 2, :]
        return torch.cat([upper, torch.sigmoid(self.head(x))], dim=-2)


def frame_inputs(clip: ImageClip, frames: Tensor, reference: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Generator inputs for ``frames`` ``(m,)`` of ``clip``: mel ``(m, 1, 80, 16)``, reference and masked
    target ``(m, 3, H, W)``, and the true frames ``(m, 3, H, W)`` in [0, 1]."""
    true = clip.rgb[frames].float() / 255.0
    mel = cut_windows(clip.mel, "mel", frames - CONTEXT, WINDOW)
    ref = (clip.rgb[reference].float() / 255.0).expand_as(true)
    return mel, ref, masked(true), true


@dataclass(frozen=True)
class ImageTraining:
    """Budget of one image-generator run; identical for every variant of a seed."""

    steps: int = 800
    batch: int = 4
    """clips per step, 5 consecutive frames each"""
    width: int = 12
    lr: float = 1e-3


def train_image(clips: list[ImageClip], settings: ImageTraining, seed: int, sync_loss: UniSyncLoss | None = None,
                sync_weight: float = 0.0, desc: str = "image") -> ImageGenerator:
    """Train an :class:`ImageGenerator` on ``clips`` (train speakers) with L1 + ``sync_weight`` · sync loss."""
    if (sync_loss is None) != (sync_weight == 0.0):
        raise ValueError(f"train_image: a sync loss needs a positive sync_weight and vice versa, got "
                         f"sync_loss={'set' if sync_loss is not None else None}, sync_weight={sync_weight}")
    torch.manual_seed(seed)
    model = ImageGenerator(settings.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    order = torch.Generator().manual_seed(seed)
    for _ in progress(range(settings.steps), desc=desc):
        batch = []
        for i in torch.randint(len(clips), (settings.batch,), generator=order).tolist():
            drawable = clips[i].frames
            start = drawable.start + int(torch.randint(len(drawable) - WINDOW + 1, (1,), generator=order))
            reference = int(torch.randint(clips[i].rgb.shape[0], (1,), generator=order))
            batch.append((clips[i], start, frame_inputs(clips[i], torch.arange(start, start + WINDOW), reference)))
        mel, ref, hidden, true = (torch.cat(parts) for parts in zip(*(inputs for _, _, inputs in batch)))
        generated = model(mel, ref, hidden)  # (B·5, 3, H, W)
        loss = F.l1_loss(lower_half(generated), lower_half(true))
        if sync_loss is not None:
            windows = generated.unflatten(0, (settings.batch, WINDOW)).transpose(1, 2)  # (B, 3, 5, H, W)
            audio = torch.cat([cut_windows(clip.mel, "mel", [start], WINDOW) for clip, start, _ in batch])
            loss = loss + sync_weight * sync_loss(audio, windows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def generate_image(model: ImageGenerator, clips: list[ImageClip], batch: int = 32) -> list[Tensor]:
    """Generated frames ``(m, 3, H, W)`` in [0, 1] of every clip, frames ``clip.frames``, reference frame 0."""
    outputs = []
    for clip in clips:
        frames = torch.arange(clip.frames.start, clip.frames.stop)
        outputs.append(torch.cat([model(*frame_inputs(clip, chunk, 0)[:3]) for chunk in frames.split(batch)]))
    return outputs


class MouthReader(nn.Module):
    """Lower half of a face crop ``(B, 3, H, W)`` in [0, 1] -> ``(B, 4)`` mouth (jaw, spread, round, closure)."""

    def __init__(self, width: int = 16):
        super().__init__()
        c = self.width = width
        self.net = nn.Sequential(_conv(3, c, 2), _conv(c, 2 * c, 2), _conv(2 * c, 4 * c, 2), _conv(4 * c, 4 * c, 2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * c, 4))

    def forward(self, frames: Tensor) -> Tensor:
        return self.net(lower_half(frames))


def train_mouth_reader(clips: list[ImageClip], steps: int, seed: int, batch: int = 64) -> MouthReader:
    """Fit a :class:`MouthReader` (MSE) on the true frames of ``clips`` (train speakers only)."""
    torch.manual_seed(seed)
    reader = MouthReader()
    optimizer = torch.optim.Adam(reader.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    frames = torch.cat([clip.rgb for clip in clips])
    mouth = torch.cat([clip.mouth for clip in clips])
    for _ in progress(range(steps), desc="mouth reader"):
        pick = torch.randint(frames.shape[0], (batch,), generator=order)
        loss = F.mse_loss(reader(frames[pick].float() / 255.0), mouth[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return reader.eval()


def save_mouth_reader(reader: MouthReader, path: Path) -> None:
    """Write ``reader``'s weights to ``path`` (safetensors, through a temporary file and a rename)."""
    save_state_dict(reader, path, {"width": str(reader.width)})


def load_mouth_reader(path: Path) -> MouthReader:
    """The :class:`MouthReader` written by :func:`save_mouth_reader` (eval mode)."""
    with safe_open(str(path), framework="pt") as f:
        width = int(f.metadata()["width"])
    reader = MouthReader(width)
    reader.load_state_dict(load_file(str(path)))
    return reader.eval()


@torch.no_grad()
def read_mouth(reader: MouthReader, frames: Tensor, batch: int = 128) -> Tensor:
    """The reader's mouth track ``(m, 4)`` of frames ``(m, 3, H, W)`` (float in [0, 1] or uint8)."""
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames
    return torch.cat([reader(chunk) for chunk in frames.split(batch)])
