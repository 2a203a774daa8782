import math

import pytest
import torch

from rewardkit.losses import bradley_terry_loss, bradley_terry_loss_softplus, margin_loss


def test_eq3_against_hand_computed_values():
    r_w = torch.tensor([2.0, 0.0, -1.0, 3.0])
    r_l = torch.tensor([0.5, 0.0, 1.0, -3.0])
    # −log σ(d) = log(1 + e^{−d}) for d = 1.5, 0, −2, 6
    expected = [math.log(1 + math.exp(-1.5)), math.log(2.0), math.log(1 + math.exp(2.0)), math.log(1 + math.exp(-6.0))]
    assert bradley_terry_loss(r_w, r_l).tolist() == pytest.approx(expected, rel=1e-6)
    assert expected[0] == pytest.approx(0.2014132779827524, rel=1e-12)


def test_eq4_equals_eq3_and_the_printed_typo_does_not():
    torch.manual_seed(0)
    r_w, r_l = torch.randn(1000) * 5, torch.randn(1000) * 5
    assert torch.allclose(bradley_terry_loss(r_w, r_l), bradley_terry_loss_softplus(r_w, r_l), atol=1e-6)
    # The source's log(1 + e^{r_l} − e^{r_w}) is a different function (and NaN when e^{r_w} > 1 + e^{r_l}).
    typo = torch.log(1 + torch.exp(r_l) - torch.exp(r_w))
    assert torch.isnan(typo).any()


def test_losses_are_stable_for_extreme_margins():
    r_w, r_l = torch.tensor([1000.0, -1000.0]), torch.tensor([-1000.0, 1000.0])
    loss = bradley_terry_loss(r_w, r_l)
    assert torch.isfinite(loss).all()
    assert loss.tolist() == pytest.approx([0.0, 2000.0])


def test_gradient_of_eq3_is_sigmoid_of_negative_margin():
    r_w = torch.tensor([0.3], requires_grad=True)
    r_l = torch.tensor([-0.2], requires_grad=True)
    bradley_terry_loss(r_w, r_l).sum().backward()
    assert r_w.grad.item() == pytest.approx(-1 / (1 + math.exp(0.5)), rel=1e-6)
    assert r_l.grad.item() == pytest.approx(1 / (1 + math.exp(0.5)), rel=1e-6)


def test_margin_loss_eq5_shifts_the_margin():
    r_w, r_l = torch.tensor([2.0]), torch.tensor([1.0])
    assert margin_loss(r_w, r_l, torch.tensor([0.0])).item() == pytest.approx(bradley_terry_loss(r_w, r_l).item())
    assert margin_loss(r_w, r_l, torch.tensor([1.0])).item() == pytest.approx(math.log(2.0), rel=1e-6)
