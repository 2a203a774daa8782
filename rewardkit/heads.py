"""Score heads beyond one scalar: ODIN's quality and length heads (Chen et al. 2024, arXiv 2402.07319).

The model's ``score`` layer grows from one output to two: output 0 is the **quality** head, output 1 the
**length** head. Training ranks with r_Q + r_L and adds ODIN's disentangling terms
(``rewardkit.losses.odin_disentangle_loss``), so length is pushed into r_L and out of r_Q. The reward at
inference is r_Q alone.

Why the checkpoint keeps only the quality head in ``model.safetensors`` (a plain 1-label
sequence-classification model) and the length head beside it in ``rewardkit_length_head.safetensors``:
the deployed reward is r_Q, so ``AutoModelForSequenceClassification`` and every rewardkit scorer read
exactly that without knowing about ODIN, and nothing downstream can pick up the length head by mistake.
The length head is kept for analysis and to resume training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rewardkit.model import RewardModel

LENGTH_HEAD_FILE = "rewardkit_length_head.safetensors"


def score_linear(model: RewardModel) -> nn.Linear:
    """The score layer that trains (under LoRA, peft's trainable copy of it)."""
    score = model.hf.score
    return score.modules_to_save["default"] if hasattr(score, "modules_to_save") else score


def add_length_head(model: RewardModel) -> None:
    """Grow the score layer to [quality, length]: the quality row keeps the existing head's weights, the length
    row starts as an independent draw of the same initialisation (seeded by the caller)."""
    old = model.hf.score
    if old.out_features != 1:
        raise ValueError(f"expected a 1-output score head, got {old.out_features}")
    new = nn.Linear(old.in_features, 2, bias=old.bias is not None, dtype=old.weight.dtype, device=old.weight.device)
    std = getattr(model.hf.config, "initializer_range", 0.02)
    with torch.no_grad():
        new.weight[0] = old.weight[0]
        new.weight[1].normal_(0.0, std)
        if old.bias is not None:
            new.bias[0], new.bias[1] = old.bias[0], 0.0
    model.hf.score = new
    model.hf.config.num_labels = 2


def head_weights(model: RewardModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_Q, w_L): the quality and length heads' weight vectors (for ODIN's orthogonality term)."""
    w = score_linear(model).weight
    return w[0], w[1]


def split_length_head(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A 2-head state dict → (the model's state with the quality head as its 1-output score, the length head)."""
    state = dict(state)
    length = {"weight": state["score.weight"][1:2].clone()}
    state["score.weight"] = state["score.weight"][0:1].clone()
    if "score.bias" in state:
        length["bias"] = state["score.bias"][1:2].clone()
        state["score.bias"] = state["score.bias"][0:1].clone()
    return state, length


def join_length_head(state: dict[str, torch.Tensor], folder: Path) -> dict[str, torch.Tensor]:
    """The inverse of :func:`split_length_head` when a checkpoint is loaded back to train (``--resume``)."""
    from safetensors.torch import load_file

    length = load_file(folder / LENGTH_HEAD_FILE)
    state = dict(state)
    state["score.weight"] = torch.cat([state["score.weight"], length["weight"]])
    if "score.bias" in state:
        state["score.bias"] = torch.cat([state["score.bias"], length["bias"]])
    return state


def length_balance_weights(chosen_longer: list[bool | None]) -> list[float]:
    """Per-record loss weights so that pairs whose chosen reply is longer and pairs whose chosen reply is shorter
    weigh the same in total (``None``: equal lengths or not a pair, weight 1); the mean weight stays 1.

    The simple baseline beside ODIN: if most chosen replies are longer, a model can lower its loss by reading
    length; after re-weighting, length alone predicts the label no better than chance."""
    longer = sum(1 for c in chosen_longer if c is True)
    shorter = sum(1 for c in chosen_longer if c is False)
    if not longer or not shorter:
        return [1.0] * len(chosen_longer)
    n = longer + shorter
    return [1.0 if c is None else n / (2 * (longer if c else shorter)) for c in chosen_longer]
