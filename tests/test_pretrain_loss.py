"""BCE + margin pretraining loss (pretrain.losses): values, margin behaviour, ablation switches."""
import math

import pytest
import torch

from pretrain.config import LossConfig
from pretrain.losses import SyncPretrainLoss, margin_term, sync_bce


def test_bce_values_match_the_formula():
    p = torch.tensor([0.9, 0.2, 0.5, 0.7])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(0.3)) / 4
    assert sync_bce(p, y).item() == pytest.approx(expected, rel=1e-6)
    # chance level: p = 0.5 everywhere gives ln 2
    assert sync_bce(torch.full((6,), 0.5), torch.tensor([1.0, 0, 1, 0, 1, 0])).item() == pytest.approx(math.log(2), rel=1e-6)


def test_bce_is_finite_at_the_ends():
    p = torch.tensor([0.0, 1.0, 0.0, 1.0], requires_grad=True)
    loss = sync_bce(p, torch.tensor([1.0, 0.0, 0.0, 1.0]), eps=1e-6)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-math.log(1e-6) / 2, rel=1e-3)
    assert torch.isfinite(p.grad).all()


def test_margin_term_zero_below_margin_positive_above():
    y = torch.zeros(3)
    assert margin_term(torch.tensor([0.0, 0.1, 0.29]), y, negative_margin=0.3).item() == 0.0
    above = margin_term(torch.tensor([0.5, 0.1, 0.9]), y, negative_margin=0.3)
    assert above.item() == pytest.approx((0.2**2 + 0.6**2) / 3, rel=1e-6)
    # positives are ignored unless a positive margin is set, then pushed above it
    positives = torch.tensor([0.6, 0.95])
    assert margin_term(positives, torch.ones(2), negative_margin=0.3).item() == 0.0
    assert margin_term(positives, torch.ones(2), 0.3, positive_margin=0.8).item() == pytest.approx(0.2**2 / 2, rel=1e-5)


def test_total_combines_weights_and_margin_zero_is_bce_only():
    p = torch.tensor([0.8, 0.6, 0.1])
    y = torch.tensor([1.0, 0.0, 0.0])
    full = SyncPretrainLoss(LossConfig(bce=1.0, margin=2.0, negative_margin=0.3))
    total, parts = full(p, y)
    assert total.item() == pytest.approx(sync_bce(p, y).item() + 2.0 * (0.3**2 / 3), rel=1e-6)
    assert set(parts) == {"bce", "margin"}
    ablation = SyncPretrainLoss(LossConfig(margin=0.0))
    total, parts = ablation(p, y)
    assert total.item() == pytest.approx(sync_bce(p, y).item(), rel=1e-7)
    assert set(parts) == {"bce"}


def test_margin_gradient_pushes_negatives_down():
    p = torch.tensor([0.7], requires_grad=True)
    margin_term(p, torch.zeros(1), negative_margin=0.3).backward()
    assert p.grad.item() == pytest.approx(2 * 0.4, rel=1e-6)  # d/dp (p - m)^2 > 0: descent lowers p


@pytest.mark.parametrize("bad", [dict(margin=-1.0), dict(negative_margin=1.5), dict(positive_margin=-0.1)])
def test_invalid_loss_config_is_rejected(bad):
    with pytest.raises(ValueError, match="loss"):
        SyncPretrainLoss(LossConfig(**bad))
