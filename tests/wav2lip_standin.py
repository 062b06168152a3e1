"""A stand-in Wav2Lip checkout for the adapter tests, written from scratch (no upstream code).

It has the module layout and the global names the adapter relies on (``hparams.py``,
``audio.py``, ``models/``, ``wav2lip_train.py`` / ``hq_wav2lip_train.py`` with import-time
argparse, the expert as the global ``syncnet``, ``get_sync_loss`` / ``train`` / ``eval_model`` /
``load_checkpoint`` looked up as globals, a 0.75 gate on the eval sync loss), with tiny models on
32 x 32 faces so a training step takes milliseconds. Like the original, its expert is never put in
eval mode and its ``audio.py`` calls ``librosa.filters.mel`` positionally.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.io import write_jpeg

from unisync_loss import write_wav

HPARAMS = '''
import os


def get_image_list(data_root, split):
    with open(os.path.join("filelists", split + ".txt")) as listing:
        return [os.path.join(data_root, line.split()[0]) for line in listing if line.strip()]


class HParams:
    def __init__(self, **values):
        self.data = dict(values)

    def __getattr__(self, key):
        try:
            return self.data[key]
        except KeyError:
            raise AttributeError(key) from None

    def set_hparam(self, key, value):
        self.data[key] = value


hparams = HParams(sample_rate=16000, n_fft=800, hop_size=200, num_mels=80, img_size=32, fps=25, batch_size=2,
                  initial_learning_rate=1e-3, nepochs=1000, num_workers=16, checkpoint_interval=3, eval_interval=3,
                  save_optimizer_state=True, syncnet_wt=0.0, disc_wt=0.07)
'''

AUDIO = '''
import wave

import librosa
import librosa.filters
import numpy as np

from hparams import hparams as hp


def load_wav(path, sr):
    with wave.open(path, "rb") as handle:
        assert handle.getframerate() == sr
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def melspectrogram(wav):
    padded = np.pad(wav, (hp.n_fft // 2, hp.n_fft // 2))
    count = 1 + len(wav) // hp.hop_size
    frames = np.stack([padded[i * hp.hop_size: i * hp.hop_size + hp.n_fft] for i in range(count)], axis=1)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(hp.n_fft)[:, None], axis=0))
    basis = librosa.filters.mel(hp.sample_rate, hp.n_fft, n_mels=hp.num_mels)
    return np.clip(np.log10(np.maximum(basis @ spectrum, 1e-5)), -4.0, 4.0)
'''

MODELS_INIT = '''
from .wav2lip import Wav2Lip, Wav2Lip_disc_qual
from .syncnet import SyncNet_color
'''

SYNCNET = '''
import torch
from torch import nn
from torch.nn import functional as F


class SyncNet_color(nn.Module):
    def __init__(self):
        super().__init__()
        self.face_encoder = nn.Sequential(nn.Conv2d(15, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU())
        self.audio_encoder = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU())

    def forward(self, audio_sequences, face_sequences):
        return F.normalize(self.audio_encoder(audio_sequences), dim=1), F.normalize(self.face_encoder(face_sequences), dim=1)
'''

GENERATOR = '''
import torch
from torch import nn
from torch.nn import functional as F


class Wav2Lip(nn.Module):
    def __init__(self):
        super().__init__()
        self.face = nn.Conv3d(6, 3, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.audio = nn.Linear(80, 3)

    def forward(self, audio_sequences, face_sequences):
        shift = self.audio(audio_sequences.mean(dim=(2, 4)))          # (B, T, 3)
        return torch.sigmoid(self.face(face_sequences) + shift.permute(0, 2, 1)[..., None, None])


class Wav2Lip_disc_qual(nn.Module):
    def __init__(self):
        super().__init__()
        self.score = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(4, 1), nn.Sigmoid())

    def frames(self, faces):
        return faces.permute(0, 2, 1, 3, 4).flatten(0, 1)[:, :, faces.size(3) // 2:]

    def perceptual_forward(self, false_face_sequences):
        scores = self.score(self.frames(false_face_sequences))
        return F.binary_cross_entropy(scores, torch.ones(len(scores), 1).cuda())

    def forward(self, face_sequences):
        return self.score(self.frames(face_sequences))
'''

SCRIPT = '''
import argparse
import os
import random
from glob import glob
from os.path import join

import numpy as np
import torch
from torch import nn, optim
from torch.utils import data as data_utils

import audio
from hparams import hparams, get_image_list
from models import SyncNet_color as SyncNet
from models import Wav2Lip{disc_import}

parser = argparse.ArgumentParser(description="stand-in training script")
parser.add_argument("--data_root", required=True)
parser.add_argument("--checkpoint_dir", required=True)
parser.add_argument("--syncnet_checkpoint_path", required=True)
parser.add_argument("--checkpoint_path", default=None)
args = parser.parse_args()

global_step = 0
global_epoch = 0
use_cuda = torch.cuda.is_available()
device = torch.device("cuda" if use_cuda else "cpu")
syncnet_T = 5
syncnet_mel_step_size = 16


class Dataset(object):
    def __init__(self, split):
        self.all_videos = get_image_list(args.data_root, split)

    def __len__(self):
        return len(self.all_videos)

    def frames(self, video, start):
        from torchvision.io import read_image
        images = [read_image(join(video, "{{}}.jpg".format(i))).flip(0).float() / 255.0 for i in range(start, start + syncnet_T)]
        return torch.stack(images, dim=1)                                   # (3, T, H, W), BGR

    def mel_window(self, spectrogram, frame):
        first = int(80.0 * frame / hparams.fps)
        return torch.from_numpy(spectrogram[:, first:first + syncnet_mel_step_size].copy()).float()

    def __getitem__(self, idx):
        video = self.all_videos[random.randrange(len(self.all_videos))]
        count = len(glob(join(video, "*.jpg")))
        start, wrong = random.randrange(1, count - 2 * syncnet_T), random.randrange(0, count - syncnet_T)
        spectrogram = audio.melspectrogram(audio.load_wav(join(video, "audio.wav"), hparams.sample_rate))
        target = self.frames(video, start)
        masked = target.clone()
        masked[:, :, target.size(2) // 2:] = 0.0
        x = torch.cat([masked, self.frames(video, wrong)], dim=0)
        indiv_mels = torch.stack([self.mel_window(spectrogram, start + k - 1) for k in range(syncnet_T)]).unsqueeze(1)
        return x, indiv_mels, self.mel_window(spectrogram, start).unsqueeze(0), target


bce = nn.BCELoss()


def cosine_loss(a, v, y):
    return bce(nn.functional.cosine_similarity(a, v).clamp(1e-6, 1.0).unsqueeze(1), y)


syncnet = SyncNet().to(device)
for p in syncnet.parameters():
    p.requires_grad = False

recon_loss = nn.L1Loss()


def get_sync_loss(mel, g):
    lower = g[:, :, :, g.size(3) // 2:]
    stacked = torch.cat([lower[:, :, t] for t in range(syncnet_T)], dim=1)
    a, v = syncnet(mel, stacked)
    return cosine_loss(a, v, torch.ones(len(g), 1, device=device))


def train(device, model, {disc_param}train_data_loader, test_data_loader, optimizer, {disc_opt_param}checkpoint_dir=None,
          checkpoint_interval=None, nepochs=None):
    global global_step, global_epoch
    while global_epoch < nepochs:
        for step, (x, indiv_mels, mel, gt) in enumerate(train_data_loader):
            model.train()
            optimizer.zero_grad()
            x, indiv_mels, mel, gt = x.to(device), indiv_mels.to(device), mel.to(device), gt.to(device)
            g = model(indiv_mels, x)
            sync_loss = get_sync_loss(mel, g) if hparams.syncnet_wt > 0.0 else 0.0
            l1 = recon_loss(g, gt)
            loss = hparams.syncnet_wt * sync_loss + (1 - hparams.syncnet_wt) * l1{disc_loss}
            loss.backward()
            optimizer.step(){disc_step}
            global_step += 1
            if global_step == 1 or global_step % checkpoint_interval == 0:
                save_checkpoint(model, optimizer, global_step, checkpoint_dir, global_epoch)
            if global_step % hparams.eval_interval == 0:
                with torch.no_grad():
                    if eval_model(test_data_loader, global_step, device, model, checkpoint_dir) < 0.75:
                        hparams.set_hparam("syncnet_wt", {gate_weight})
        global_epoch += 1


def eval_model(test_data_loader, global_step, device, model, checkpoint_dir):
    losses = []
    while True:
        for x, indiv_mels, mel, gt in test_data_loader:
            model.eval()
            g = model(indiv_mels.to(device), x.to(device))
            losses.append(float(get_sync_loss(mel.to(device), g)))
            if len(losses) >= 6:
                return sum(losses) / len(losses)


def save_checkpoint(model, optimizer, step, checkpoint_dir, epoch):
    path = join(checkpoint_dir, "checkpoint_step{{:09d}}.pth".format(step))
    torch.save({{"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "global_step": step,
                "global_epoch": epoch}}, path)


def load_checkpoint(path, model, optimizer, reset_optimizer=False, overwrite_global_states=True):
    global global_step, global_epoch
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({{k.replace("module.", ""): v for k, v in checkpoint["state_dict"].items()}})
    if not reset_optimizer and optimizer is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if overwrite_global_states:
        global_step, global_epoch = checkpoint["global_step"], checkpoint["global_epoch"]
    return model


if __name__ == "__main__":
    train_loader = data_utils.DataLoader(Dataset("train"), batch_size=hparams.batch_size, shuffle=True,
                                         num_workers=hparams.num_workers)
    test_loader = data_utils.DataLoader(Dataset("val"), batch_size=hparams.batch_size, num_workers=4)
    model = Wav2Lip().to(device)
    optimizer = optim.Adam(model.parameters(), lr=hparams.initial_learning_rate){disc_build}
    if args.checkpoint_path is not None:
        load_checkpoint(args.checkpoint_path, model, optimizer)
    load_checkpoint(args.syncnet_checkpoint_path, syncnet, None, reset_optimizer=True, overwrite_global_states=False)
    os.makedirs(args.checkpoint_dir, exist_ok=True)
    train(device, model, {disc_arg}train_loader, test_loader, optimizer, {disc_opt_arg}checkpoint_dir=args.checkpoint_dir,
          checkpoint_interval=hparams.checkpoint_interval, nepochs=hparams.nepochs)
'''

PLAIN = dict(disc_import="", disc_param="", disc_opt_param="", disc_loss="", disc_step="", gate_weight="0.01",
             disc_build="", disc_arg="", disc_opt_arg="")
HQ = dict(
    disc_import=", Wav2Lip_disc_qual",
    disc_param="disc, ",
    disc_opt_param="disc_optimizer, ",
    disc_loss=" + hparams.disc_wt * disc.perceptual_forward(g)",
    disc_step=("\n            disc_optimizer.zero_grad()\n"
               "            fake = nn.functional.binary_cross_entropy(disc(g.detach()), torch.zeros(len(g) * syncnet_T, 1))\n"
               "            fake.backward()\n            disc_optimizer.step()"),
    gate_weight="0.03",
    disc_build=("\n    disc = Wav2Lip_disc_qual().to(device)\n"
                "    disc_optimizer = optim.Adam(disc.parameters(), lr=hparams.initial_learning_rate)"),
    disc_arg="disc, ",
    disc_opt_arg="disc_optimizer, ",
)


def write_checkout(root: Path, replace: dict[str, tuple[str, str]] | None = None) -> Path:
    """Write the stand-in checkout into ``root``; ``replace`` maps a file to an (old, new) text edit (to break it)."""
    files = {
        "hparams.py": HPARAMS,
        "audio.py": AUDIO,
        "models/__init__.py": MODELS_INIT,
        "models/syncnet.py": SYNCNET,
        "models/wav2lip.py": GENERATOR,
        "wav2lip_train.py": SCRIPT.format(**PLAIN),
        "hq_wav2lip_train.py": SCRIPT.format(**HQ),
    }
    for name, (old, new) in (replace or {}).items():
        assert old in files[name], f"{old!r} not in the stand-in {name}"
        files[name] = files[name].replace(old, new)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip())
    return root


def write_dataset(root: Path, videos: int = 3, frames: int = 24, size: int = 32) -> Path:
    """A Wav2Lip-layout dataset of random faces and tones: ``root/spk<i>/clip0/{0..}.jpg``, ``audio.wav``, filelists."""
    generator = torch.Generator().manual_seed(0)
    names = []
    for index in range(videos):
        clip = root / f"spk{index}" / "clip0"
        clip.mkdir(parents=True)
        for frame in range(frames):
            write_jpeg(torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8), str(clip / f"{frame}.jpg"))
        seconds = frames / 25 + 0.2
        t = torch.arange(int(16000 * seconds)) / 16000
        write_wav(clip / "audio.wav", 0.3 * torch.sin(2 * math.pi * (200 + 50 * index) * t))
        names.append(f"spk{index}/clip0")
    (root / "filelists").mkdir()
    (root / "filelists" / "train.txt").write_text("\n".join(names[:-1]) + "\n")
    (root / "filelists" / "val.txt").write_text(names[-1] + "\n")
    return root
