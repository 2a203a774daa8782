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
        ties: optional groups of tied completions, e.g. ``[[0, 1]]`` for a pair judged equally good.
            ``ranking`` still lists every completion (tied ones in any order); losses that can use
            ties read them from here, the others refuse tied records with a clear error.
        unordered: optional groups of completions whose order among themselves is **unknown**, e.g. the
            N−1 rejected completions of a best-of-N record. Unlike ``ties`` (judged equally good), no pair
            inside such a group is a preference: ``preference_pairs`` leaves it out, so it is neither
            trained (toward equal rewards, as a tie would be) nor evaluated.
        margin: optional strength of the preference of ranking[0] over ranking[1] (eq. 5).
        scores: optional per-completion scores (e.g. 1–10 ratings), aligned with ``completions``.
        subset: optional subset name, used for per-subset evaluation.
        id: optional identifier from the data (its ``id`` field), e.g. RewardBench 2's "ref:12" / "tied:12".
        aspect: optional objective the preference was judged on (e.g. "helpful", "harmless"): the record's
            ``aspect`` field, or the ``name=`` tag of the data source it came from. Aspect-conditioned
            reward models (``rewardkit.aspects``) train each head on its aspect's records.
        source: where the record came from ("file:line"), for messages about it.
    """

    prompt: list[Message]
    completions: list[list[Message]]
    ranking: list[int] = field(default_factory=lambda: [0, 1])
    ties: list[list[int]] | None = None
    unordered: list[list[int]] | None = None
    margin: float | None = None
    scores: list[float] | None = None
    subset: str | None = None
    id: str | None = None
    aspect: str | None = None
    source: str = ""

    @property
    def chosen(self) -> list[Message]:
        return self.completions[self.ranking[0]]

    @property
    def rejected(self) -> list[Message]:
        return self.completions[self.ranking[-1]]

    @property
    def ranks(self) -> list[int]:
        """Per completion, its rank (0 = best); tied or unordered completions share the best rank of their group."""
        ranks = [0] * len(self.completions)
        for position, index in enumerate(self.ranking):
            ranks[index] = position
        for group in (self.ties or []) + (self.unordered or []):
            best = min(ranks[i] for i in group)
            for i in group:
                ranks[i] = best
        return ranks

    @property
    def is_tie(self) -> bool:
        """True when every completion is tied with every other (e.g. a pair judged equal)."""
        return len(set(self.ranks)) == 1

    def preference_pairs(self) -> list[tuple[int, int, bool]]:
        """The pairs the annotation speaks about, as (better, worse, tied), better first in ``ranking`` order:
        all C(K,2) pairs (eq. 6) except those inside an ``unordered`` group."""
        ranks, order = self.ranks, self.ranking
        group = {i: g for g, members in enumerate(self.unordered or []) for i in members}
        return [(order[a], order[b], ranks[order[a]] == ranks[order[b]])
                for a in range(len(order)) for b in range(a + 1, len(order))
                if group.get(order[a], -1) != group.get(order[b], -2)]

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
