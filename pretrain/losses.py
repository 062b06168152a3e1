"""Pretraining loss: binary cross-entropy on p_sync plus a margin term.

For sync probabilities ``p`` (B,) in [0, 1] and labels ``y`` (B,) (1 = in sync)::

    loss = bce * BCE(p, y)
         + margin * mean_i[ (1 - y_i) * relu(p_i - m_neg)^2  +  y_i * relu(m_pos - p_i)^2 ]

The margin term pushes negatives below ``m_neg`` (``negative_margin``) and, when
``positive_margin`` is set, positives above ``m_pos``; ``m_pos = 1`` gives the classic
contrastive ``(1 - p)^2`` positive term. ``margin = 0`` is the BCE-only ablation (the
SyncNet-style recipe together with ``sampling.cross_speaker: false``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.config import LossConfig


def sync_bce(p: Tensor, label: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean BCE of sync probabilities ``p`` (B,) against ``label`` (B,), with p clamped to [eps, 1 - eps]."""
    p = p.float().clamp(eps, 1.0 - eps)
    return F.binary_cross_entropy(p, label.float())


def margin_term(p: Tensor, label: Tensor, negative_margin: float, positive_margin: float | None = None) -> Tensor:
    """Mean over the batch of ``relu(p - m_neg)^2`` on negatives (+ ``relu(m_pos - p)^2`` on positives)."""
    p, label = p.float(), label.float()
    per_item = (1.0 - label) * F.relu(p - negative_margin).square()
    if positive_margin is not None:
        per_item = per_item + label * F.relu(positive_margin - p).square()
    return per_item.mean()


class SyncPretrainLoss(torch.nn.Module):
    """The configured combination; ``forward`` returns the total and its parts (detached) for logging."""

    def __init__(self, config: LossConfig):
        super().__init__()
        if config.bce < 0 or config.margin < 0:
            raise ValueError(f"loss weights must be >= 0, got bce={config.bce}, margin={config.margin}")
        if not 0.0 <= config.negative_margin <= 1.0:
            raise ValueError(f"loss.negative_margin must lie in [0, 1], got {config.negative_margin}")
        if config.positive_margin is not None and not 0.0 <= config.positive_margin <= 1.0:
            raise ValueError(f"loss.positive_margin must lie in [0, 1] or be null, got {config.positive_margin}")
        self.config = config

    def forward(self, p: Tensor, label: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``p`` (B,) sync probabilities, ``label`` (B,) in {0, 1} -> (scalar loss, {"bce": .., "margin": ..})."""
        cfg = self.config
        bce = sync_bce(p, label, cfg.eps)
        total = cfg.bce * bce
        parts = {"bce": bce.detach()}
        if cfg.margin > 0:
            margin = margin_term(p, label, cfg.negative_margin, cfg.positive_margin)
            total = total + cfg.margin * margin
            parts["margin"] = margin.detach()
        return total, parts
