"""ORM and PRM losses (rewardkit.losses): soft labels reach the loss unchanged, unlabelled steps are left out."""

from __future__ import annotations

import math

import pytest
import torch

from rewardkit.losses import pointwise_bce_loss, step_bce_loss, within_problem_ranking_loss


def bce(r: float, t: float) -> float:
    p = 1 / (1 + math.exp(-r))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_pointwise_bce_by_hand_with_hard_and_soft_labels():
    logits = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    out = pointwise_bce_loss(logits, torch.tensor([1.0, 0.0, 0.7], dtype=torch.float64))
    assert out.tolist() == pytest.approx([bce(0.3, 1), bce(-1.2, 0), bce(2.0, 0.7)], rel=1e-12)
    assert torch.isfinite(pointwise_bce_loss(torch.tensor([200.0, -200.0]), torch.tensor([0.0, 1.0]))).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pointwise_bce_loss(logits, torch.tensor([1.0, 0.0, 1.5]))


def test_within_problem_ranking_by_hand_with_hard_and_soft_labels():
    logits = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    # labels 1, 0, 1: the pairs (0 over 1) and (2 over 1); solutions 0 and 2 are equal and not ranked
    loss = within_problem_ranking_loss(logits, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    assert float(loss) == pytest.approx((bce(1.5, 1) + bce(3.2, 1)) / 2, rel=1e-12)
    loss.backward()
    assert logits.grad[1] > 0 > logits.grad[0]  # pushes the incorrect one down, the correct ones up
    soft = within_problem_ranking_loss(torch.tensor([0.4, 0.1], dtype=torch.float64),
                                       torch.tensor([0.6, 0.7], dtype=torch.float64))
    assert float(soft) == pytest.approx(bce(0.1 - 0.4, 0.55), rel=1e-12)  # 0.7 over 0.6, target 1/2 + 0.05
    same = torch.tensor([0.5, 0.2], requires_grad=True)
    flat = within_problem_ranking_loss(same, torch.tensor([1.0, 1.0]))
    assert float(flat) == 0.0 and flat.requires_grad
    assert torch.isfinite(within_problem_ranking_loss(torch.tensor([-300.0, 300.0]), torch.tensor([1.0, 0.0])))


def test_step_bce_keeps_soft_labels_and_skips_unlabelled_steps():
    logits = torch.tensor([0.5, 0.1, -0.4, 1.0], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1.0, 0.7, 0.0, float("nan")], dtype=torch.float64)
    loss = step_bce_loss(logits, targets)
    assert loss.item() == pytest.approx((bce(0.5, 1) + bce(0.1, 0.7) + bce(-0.4, 0)) / 3, rel=1e-12)
    # 0.7 is not rounded: truncating it to 0 (int(0.7)) would give another loss
    assert loss.item() != pytest.approx((bce(0.5, 1) + bce(0.1, 0) + bce(-0.4, 0)) / 3, rel=1e-6)
    loss.backward()
    p = 1 / (1 + math.exp(-0.1))
    assert logits.grad[1].item() == pytest.approx((p - 0.7) / 3, rel=1e-12)  # dL/dr = (σ(r) − t) / n
    assert logits.grad[3].item() == 0.0  # the unlabelled step gets no gradient
    last = step_bce_loss(logits.detach(), targets, last_step_only=True)
    assert last.item() == pytest.approx(bce(-0.4, 0), rel=1e-12)  # the last labelled step
    with pytest.raises(ValueError, match="at least one labelled step"):
        step_bce_loss(logits.detach(), torch.full((4,), float("nan")))
    with pytest.raises(ValueError, match="one target per step"):
        step_bce_loss(logits.detach(), torch.tensor([1.0, 0.0]))
