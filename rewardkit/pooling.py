"""Where a sequence's reward is read: the last real token.

The index is derived from the attention mask only. Searching for the pad id (what
``*ForSequenceClassification`` does) is wrong whenever pad == eos and the text itself ends in eos,
and it silently depends on the padding side; the attention mask is right in every case.
"""

from __future__ import annotations

import torch

POOLING_RULE = "last_real_token"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the rightmost position whose mask is 1, per row; works for left and right padding."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq), got shape {tuple(attention_mask.shape)}")
    if bool((attention_mask.sum(-1) == 0).any()):
        raise ValueError("a sequence has no real tokens (all-zero attention mask row)")
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so left padding gives the same positions as right padding."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Gather ``hidden[b, last_real_token(b)]`` → (batch, dim)."""
    idx = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
