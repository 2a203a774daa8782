"""A verl ``compute_score`` backed by a ``rewardkit serve`` server (verl has no setting for an external reward URL; a
custom reward function is its way in).

    custom_reward_function:
      path: /path/to/site-packages/rewardkit/integrations/verl.py   # python -c "import rewardkit.integrations.verl as m; print(m.__file__)"
      name: compute_score
      reward_kwargs:
        url: http://127.0.0.1:8000

verl's reward managers call ``compute_score(data_source, solution_str, ground_truth, extra_info)`` per sample with the
decoded response only; the prompt is read from ``extra_info`` (``prompt_key``, default: the first of ``prompt``,
``question``, ``problem``, ``query`` that is there, text or chat messages) — put it there in the dataset's
``extra_info`` — and when none is, the response is scored without a prompt. ``url`` may also come from the
``REWARDKIT_URL`` environment variable. One client per URL and process is kept (it is thread-safe).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from rewardkit.client import RewardClient
from rewardkit.errors import UserError

PROMPT_KEYS = ("prompt", "question", "problem", "query")
_clients: dict[str, RewardClient] = {}
_lock = threading.Lock()


def _client(url: str | None, options: dict[str, Any]) -> RewardClient:
    url = url or os.environ.get("REWARDKIT_URL")
    if not url:
        raise UserError("rewardkit compute_score needs the server's URL: reward_kwargs.url, or REWARDKIT_URL")
    with _lock:
        if url not in _clients:
            _clients[url] = RewardClient(url, **options)
        return _clients[url]


def compute_score(data_source: Any, solution_str: str, ground_truth: Any = None, extra_info: dict | None = None, *,
                  url: str | None = None, prompt_key: str | None = None, **options: Any) -> float:
    """The reward of ``solution_str`` (the response) for the prompt found in ``extra_info``."""
    info = extra_info or {}
    keys = (prompt_key,) if prompt_key else PROMPT_KEYS
    prompt = next((info[k] for k in keys if isinstance(info.get(k), (str, list)) and info.get(k)), None)
    client_options = {k: v for k, v in options.items() if k in ("timeout", "retries", "backoff_s", "max_backoff_s")}
    reward = _client(url, client_options).score_samples([prompt], [solution_str])[0]
    return float("nan") if reward is None else float(reward)
