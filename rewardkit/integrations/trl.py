"""TRL ``GRPOTrainer`` reward functions backed by a ``rewardkit serve`` server.

    from trl import GRPOTrainer
    from rewardkit.integrations.trl import RewardFunction

    trainer = GRPOTrainer(model=..., reward_funcs=[RewardFunction("http://127.0.0.1:8000")], ...)

TRL calls a reward function with ``prompts`` and ``completions`` (one entry per generated completion) and dataset
columns as keyword arguments. Standard datasets give text; conversational ones give chat messages (a completion is
the list of messages the policy produced: with tools, assistant turns with ``tool_calls`` and the ``tool`` turns that
answered them). Each (prompt, completion) pair is scored on its own (``/v1/score`` with one completion), so a reward
does not depend on the other completions of the step; pairs are sent concurrently and batched by the server.
"""

from __future__ import annotations

from typing import Any

from rewardkit.client import AsyncRewardClient, RewardClient

# Message fields the server's request schema takes; TRL (or a dataset) may carry others that a reward model cannot use.
_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content", "reasoning", "thinking")


def _content(value: Any) -> Any:
    if isinstance(value, str) or value is None:
        return value
    return [{k: m[k] for k in _FIELDS if m.get(k) is not None} for m in value]


class RewardFunction:
    """A synchronous TRL reward function: one reward per completion, from the server at ``url``.

    ``client_options`` go to :class:`rewardkit.client.RewardClient` (``timeout``, ``retries``, ``max_concurrency``...).
    """

    def __init__(self, url: str, *, name: str = "rewardkit", **client_options: Any):
        self.client = RewardClient(url, **client_options)
        self.__name__ = name  # TRL names the reward column after the function

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        return self.client.score_samples([_content(p) for p in prompts], [_content(c) for c in completions])


class AsyncRewardFunction:
    """The asynchronous form: TRL runs async reward functions on its own event loop, concurrently with the others."""

    def __init__(self, url: str, *, name: str = "rewardkit", **client_options: Any):
        self.client = AsyncRewardClient(url, **client_options)
        self.__name__ = name

    async def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        return await self.client.score_samples([_content(p) for p in prompts], [_content(c) for c in completions])
