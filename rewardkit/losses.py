"""Reward-model losses: pure functions of rewards, numbered as in the source document (MISSION.md).

All take rewards of shape (N,) and return per-pair losses of shape (N,); reducing (mean, or the
per-prompt weights of eq. 6) is the caller's choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. 3: L = −log σ(r(x, y_w) − r(x, y_l)).

    The negative log-likelihood of the Bradley-Terry model (eq. 1–2), P(y_w ≻ y_l) = σ(r_w − r_l).
    ``logsigmoid`` is stable for large |Δr| (no overflow, no log(0)).
    """
    return -F.logsigmoid(r_chosen - r_rejected)


def bradley_terry_loss_softplus(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Eq. 4: L = log(1 + exp(r(x, y_l) − r(x, y_w))) = softplus(r_l − r_w).

    The source prints ``log(1 + e^{r_l} − e^{r_w})``, a typo that is not equivalent (it is
    undefined when e^{r_w} > 1 + e^{r_l}); this is the correct second form, equal to eq. 3.
    """
    return F.softplus(r_rejected - r_chosen)


def margin_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Eq. 5 (Llama 2): L = −log σ(r_w − r_l − m(r)); the pair must win by at least ``margin``."""
    return -F.logsigmoid(r_chosen - r_rejected - margin)
