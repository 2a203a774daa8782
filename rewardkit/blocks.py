"""Two questions about a Hugging Face model that the reward model (``rewardkit.model``) and prefix sharing
(``rewardkit.sharing``) both ask, answered here so neither imports the other for them: where the backbone keeps its
transformer blocks (partial fine-tunes, the last-block shortcut) and how the score head turns hidden states into
rewards (the same way on the padded and the packed path)."""

from __future__ import annotations

import torch
from torch import nn

BLOCK_LIST_NAMES = ("layers", "h", "blocks")  # Llama/Qwen/Mistral/Gemma, GPT-2, others


def transformer_blocks(backbone: nn.Module) -> nn.ModuleList | None:
    """The backbone's list of transformer blocks (``layers`` in Llama/Qwen/Mistral, ``h`` in GPT-2), or None."""
    return next((m for name in BLOCK_LIST_NAMES if isinstance(m := getattr(backbone, name, None), nn.ModuleList)),
                None)


def head_scores(hf: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The score head on pooled hidden states ``(n, d)`` → ``(n, heads)`` fp32, computed in fp32.

    Under bf16 (autocast in training, bf16 weights in inference) the backbone's states are upcast and the head runs
    outside autocast with fp32 weights: a reward is read through differences, and bf16 keeps 8 mantissa bits
    (steps of 0.016 at |r| ≈ 2, coarser than many pairs' margins). The head is d × heads, so this costs nothing.
    In fp32 it is the plain call.
    """
    head = hf.score
    dtype = next(head.parameters()).dtype
    with torch.autocast(hidden.device.type, enabled=False):
        return head(hidden.to(dtype)).float()
