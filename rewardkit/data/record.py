"""The one canonical record: a prompt, two or more completions, and a preference among them."""

from __future__ import annotations

from dataclasses import dataclass, field

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": str}


@dataclass
class PreferenceExample:
    """A prompt and completions with a preference order.

    Attributes:
        prompt: the conversation so far, as chat messages (a plain-text prompt is one user turn).
        completions: each completion is the list of messages that follows the prompt (usually one
            assistant turn).
        ranking: indices into ``completions``, best first. A pair is ``completions=[chosen, rejected]``
            with ``ranking=[0, 1]``.
        margin: optional strength of the preference of ranking[0] over ranking[1] (eq. 5).
        scores: optional per-completion scores (e.g. 1–10 ratings), aligned with ``completions``.
        subset: optional subset name, used for per-subset evaluation.
        source: where the record came from ("file:line"), for messages about it.
    """

    prompt: list[Message]
    completions: list[list[Message]]
    ranking: list[int] = field(default_factory=lambda: [0, 1])
    margin: float | None = None
    scores: list[float] | None = None
    subset: str | None = None
    source: str = ""

    @property
    def chosen(self) -> list[Message]:
        return self.completions[self.ranking[0]]

    @property
    def rejected(self) -> list[Message]:
        return self.completions[self.ranking[-1]]

    @classmethod
    def pair(
        cls,
        prompt: list[Message] | str,
        chosen: list[Message] | str,
        rejected: list[Message] | str,
        **kwargs,
    ) -> PreferenceExample:
        """Build a pair from text or messages: strings become a user prompt and assistant replies."""
        return cls(
            prompt=as_messages(prompt, "user"),
            completions=[as_messages(chosen, "assistant"), as_messages(rejected, "assistant")],
            ranking=[0, 1],
            **kwargs,
        )


def as_messages(value: list[Message] | str, role: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def completion_text(completion: list[Message]) -> str:
    """The completion's text, used e.g. by the length baseline."""
    return "\n".join(m["content"] for m in completion)
