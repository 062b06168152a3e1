"""unisync-loss: the UniSync lip-sync expert as a differentiable loss.

    from unisync_loss import UniSyncLoss
    sync_loss = UniSyncLoss("hubert", "3dmm", weights="expert.safetensors")
    loss = sync_loss(hubert_window, generated_coeffs)   # scalar; gradients reach generated_coeffs
"""
from unisync_loss.audio import LogMel, log_mel, read_wav, write_wav
from unisync_loss.experts import (
    ExpertFileError,
    default_expert_path,
    expert_home,
    load_expert,
    read_expert_header,
    resolve_expert,
    save_expert,
)
from unisync_loss.loss import UniSyncLoss
from unisync_loss.metrics import SyncAccuracy, clip_sync, offset_probabilities, score_clip, sync_accuracy
from unisync_loss.model import UniSync, UniSyncConfig, sync_prob
from unisync_loss.representations import AUDIO_REPRESENTATIONS, REPRESENTATIONS, VISUAL_REPRESENTATIONS, modality
from unisync_loss.thirdparty import ThirdPartySyncLoss, load_sync_expert, score_clip_thirdparty
from unisync_loss.windows import cut_windows, num_valid_windows

__version__ = "0.1.0"

__all__ = [
    "AUDIO_REPRESENTATIONS",
    "REPRESENTATIONS",
    "VISUAL_REPRESENTATIONS",
    "ExpertFileError",
    "LogMel",
    "SyncAccuracy",
    "ThirdPartySyncLoss",
    "UniSync",
    "UniSyncConfig",
    "UniSyncLoss",
    "clip_sync",
    "cut_windows",
    "default_expert_path",
    "expert_home",
    "load_expert",
    "load_sync_expert",
    "log_mel",
    "modality",
    "num_valid_windows",
    "offset_probabilities",
    "read_expert_header",
    "read_wav",
    "resolve_expert",
    "save_expert",
    "score_clip",
    "score_clip_thirdparty",
    "sync_accuracy",
    "sync_prob",
    "write_wav",
]
