"""Where a Hugging Face backbone keeps its transformer blocks: one question that the model (partial fine-tunes)
and prefix sharing (its last-block shortcut) both ask, answered here so neither imports the other for it."""

from __future__ import annotations

from torch import nn

BLOCK_LIST_NAMES = ("layers", "h", "blocks")  # Llama/Qwen/Mistral/Gemma, GPT-2, others


def transformer_blocks(backbone: nn.Module) -> nn.ModuleList | None:
    """The backbone's list of transformer blocks (``layers`` in Llama/Qwen/Mistral, ``h`` in GPT-2), or None."""
    return next((m for name in BLOCK_LIST_NAMES if isinstance(m := getattr(backbone, name, None), nn.ModuleList)),
                None)
