"""A deterministic STAND-IN for HuBERT features (50 Hz, 1024-d) for the procedural corpus.

This is NOT HuBERT. No pretrained speech model can reach these machines, so the corpus fills the
``hubert`` representation with features of the same rate and width, made by a fixed, untrained
encoder, so that the HuBERT pathway (shapes, windowing, standardisation, training) runs end to end.
Real HuBERT features for real data come from ``pretrain/extract.py``.

Encoder, per 20 ms frame (hop 320 samples at 16 kHz):

1. a 400-sample Hann-windowed power spectrum (frame ``j`` is centred on sample ``320 j + 160``,
   i.e. on the middle of its 20 ms interval; the wave is zero-padded by 40 samples at each end);
2. 64 log band energies on the library's Slaney mel filterbank
   (:func:`unisync_loss.audio.mel_filterbank`, 60–7600 Hz),
   standardised with the fixed constants ``(log(e + 1e-6) - LOG_MEAN) / LOG_STD`` (about zero mean and
   unit spread on peak-normalised corpus speech);
3. context stacking of the frames ``j - 2 … j + 2`` (edge frames repeated), 320 values;
4. a fixed random affine projection to 1024 dimensions (weights drawn once from a
   ``torch.Generator`` seeded with :data:`SEED`, scaled by 1/√320) and a GELU.

Length: video frame ``i`` owns HuBERT frames ``2 i`` and ``2 i + 1``. Given ``n_frames`` video
frames, the wave is zero-padded or trimmed to ``640 · n_frames`` samples before framing, so the
output always has exactly ``2 · n_frames`` rows; without ``n_frames``, ``n_frames = S // 640``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from unisync_loss.audio import SAMPLE_RATE, mel_filterbank

HOP = 320
"""Samples per feature frame (20 ms, 50 Hz): two frames per 25 fps video frame."""
WIN = 400
N_BANDS = 64
LOG_MEAN, LOG_STD = -8.5, 3.5
"""Fixed standardisation of the log band energies (measured once on the corpus, then frozen)."""
CONTEXT = 2
"""Frames of context on each side that are stacked before the projection."""
DIM = 1024
SEED = 20_250_320
"""Seed of the fixed projection; changing it changes every stand-in feature."""


class HubertStandIn(nn.Module):
    """Fixed random-projection stand-in for a HuBERT encoder; see the module docstring.

    ``forward(wave, n_frames)``: wave (S,) or (B, S) float at 16 kHz -> (2·n_frames, 1024) or
    (B, 2·n_frames, 1024) float32. Deterministic; holds no trainable parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(SEED)
        in_dim = N_BANDS * (2 * CONTEXT + 1)
        self.register_buffer("window", torch.hann_window(WIN))
        self.register_buffer("filterbank", mel_filterbank(SAMPLE_RATE, WIN, N_BANDS, 60.0, 7600.0).T.float())
        self.register_buffer("weight", torch.randn(in_dim, DIM, generator=generator) / in_dim ** 0.5)
        self.register_buffer("bias", 0.5 * torch.randn(DIM, generator=generator))

    def forward(self, wave: Tensor, n_frames: int | None = None) -> Tensor:
        if wave.ndim not in (1, 2):
            raise ValueError(f"hubert stand-in: expected wave of shape (S,) or (B, S), got {tuple(wave.shape)}")
        batched = wave.ndim == 2
        wave = wave.reshape(-1, wave.shape[-1]).float()
        if n_frames is None:
            n_frames = wave.shape[-1] // (2 * HOP)
        if n_frames < 1:
            raise ValueError(f"hubert stand-in: expected at least one video frame ({2 * HOP} samples), "
                             f"got n_frames={n_frames}")
        length = 2 * HOP * n_frames
        wave = nn.functional.pad(wave[:, :length], (0, length - min(wave.shape[-1], length)))
        pad = (WIN - HOP) // 2
        frames = nn.functional.pad(wave, (pad, pad)).unfold(-1, WIN, HOP) * self.window  # (B, 2n, WIN)
        power = torch.fft.rfft(frames).abs().square()
        bands = (torch.log(power @ self.filterbank + 1e-6) - LOG_MEAN) / LOG_STD  # (B, 2n, N_BANDS)
        edged = torch.cat([bands[:, :1].expand(-1, CONTEXT, -1), bands, bands[:, -1:].expand(-1, CONTEXT, -1)], dim=1)
        stacked = edged.unfold(1, 2 * CONTEXT + 1, 1).flatten(2)  # (B, 2n, N_BANDS * (2C + 1))
        features = nn.functional.gelu(stacked @ self.weight + self.bias)
        return features if batched else features[0]


@lru_cache(maxsize=1)
def _encoder() -> HubertStandIn:
    return HubertStandIn()


def hubert_standin(wave: np.ndarray | Tensor, n_frames: int | None = None) -> np.ndarray:
    """Stand-in HuBERT features of a 16 kHz wave (S,) or (B, S).

    Returns (2·n_frames, 1024) or (B, 2·n_frames, 1024) float32, computed on the CPU by a cached
    :class:`HubertStandIn`.
    """
    tensor = torch.as_tensor(np.asarray(wave, dtype=np.float32) if isinstance(wave, np.ndarray) else wave)
    with torch.no_grad():
        return _encoder()(tensor.cpu(), n_frames).numpy()
