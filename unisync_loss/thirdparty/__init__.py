"""Third-party sync experts in the project's API: Wav2Lip's ``SyncNet_color`` and syncnet_python's SyncNet v2.

Both are rebuilt here from their published architectures (no upstream code copied) with state
dicts whose keys match the public checkpoints exactly, so the files users already have load
without unpickling code, can be converted once to ``.safetensors``, score clips through the same
interface as :class:`~unisync_loss.model.UniSync`, and serve as a loss beside ``UniSyncLoss``::

    from unisync_loss.thirdparty import ThirdPartySyncLoss, load_sync_expert, score_clip_thirdparty
    expert = load_sync_expert("syncnet_v2:data/syncnet_v2.model")     # or "wav2lip:lipsync_expert.pth"
    result = score_clip_thirdparty(expert, wave, frames)               # LSE-D / LSE-C as syncnet_python
    loss = ThirdPartySyncLoss("wav2lip:lipsync_expert.pth", channel_order="bgr")(mel_window, frames)

No third-party weights ship with the package; see the README for their licences.
"""
from unisync_loss.thirdparty.base import ThirdPartyConfig, ThirdPartyExpert
from unisync_loss.thirdparty.checkpoints import (
    convert_checkpoint,
    load_converted,
    load_sync_expert,
    read_torch_checkpoint,
    save_converted,
)
from unisync_loss.thirdparty.loss import ThirdPartySyncLoss
from unisync_loss.thirdparty.lse import SyncNetScores, score_clip_syncnet, syncnet_distances, syncnet_scores
from unisync_loss.thirdparty.mfcc import cut_mfcc_windows, mfcc
from unisync_loss.thirdparty.scoring import score_clip_thirdparty
from unisync_loss.thirdparty.syncnet_v2 import SyncNetV2
from unisync_loss.thirdparty.wav2lip_syncnet import Wav2LipSyncNet

__all__ = [
    "SyncNetScores",
    "SyncNetV2",
    "ThirdPartyConfig",
    "ThirdPartyExpert",
    "ThirdPartySyncLoss",
    "Wav2LipSyncNet",
    "convert_checkpoint",
    "cut_mfcc_windows",
    "load_converted",
    "load_sync_expert",
    "mfcc",
    "read_torch_checkpoint",
    "save_converted",
    "score_clip_syncnet",
    "score_clip_thirdparty",
    "syncnet_distances",
    "syncnet_scores",
]
