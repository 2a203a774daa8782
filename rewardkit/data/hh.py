"""Anthropic HH-RLHF transcripts: ``\\n\\nHuman: …\\n\\nAssistant: …`` → chat turns."""

from __future__ import annotations

import re

from rewardkit.data.record import Message

_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def looks_like_hh(text: str) -> bool:
    return "\n\nHuman:" in text and "\n\nAssistant:" in text


def has_hh_turns(text: str) -> bool:
    """An HH transcript, perhaps a broken one: both turn markers, or text that opens with one. A marker only in
    the middle of plain text is kept as text (model outputs sometimes hallucinate "\n\nAssistant:" turns)."""
    return looks_like_hh(text) or text.startswith(("\n\nHuman:", "\n\nAssistant:"))


def parse_hh(text: str) -> list[Message]:
    """Split a transcript into turns. Text before the first marker is kept as a user turn."""
    parts = _TURN.split(text)
    messages: list[Message] = []
    head = parts[0].strip()
    if head:
        messages.append({"role": "user", "content": head})
    for i in range(1, len(parts), 2):
        # Only the trailing whitespace is stripped: leading text is exactly what follows "Role: ".
        messages.append({"role": _ROLES[parts[i]], "content": parts[i + 1].rstrip()})
    return messages
