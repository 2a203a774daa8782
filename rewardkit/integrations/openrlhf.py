"""An OpenRLHF ``reward_func`` file backed by a ``rewardkit serve`` server:

    REWARDKIT_URL=http://127.0.0.1:8000 openrlhf.cli.train_ppo_ray ... \
        --remote_rm_url $(python -c "import rewardkit.integrations.openrlhf as m; print(m.__file__)")

OpenRLHF loads a ``--remote_rm_url`` ending in ``.py`` and calls ``reward_func(queries, prompts, labels)`` with
decoded conversations (>= 0.9.1: one query per call on a thread; 0.8.x-0.9.0: micro-batches as Ray tasks). The queries
go to the server's ``/get_reward`` (split by its limits); the answer is returned as tensors, the shape OpenRLHF's own
example (examples/python/reward_func.py) returns and every version merges (0.8.x concatenates ``extra_logs`` with
``torch.cat``, which takes tensors but no JSON lists). Reaching the server directly with ``--remote_rm_url
http://HOST:PORT/get_reward`` works too; this file adds the client's retries and splitting.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from rewardkit.client import RewardClient
from rewardkit.errors import UserError

_clients: dict[str, RewardClient] = {}
_lock = threading.Lock()


def _client() -> RewardClient:
    url = os.environ.get("REWARDKIT_URL")
    if not url:
        raise UserError("rewardkit's OpenRLHF reward_func reads the server's URL from REWARDKIT_URL")
    with _lock:
        if url not in _clients:
            _clients[url] = RewardClient(url)
        return _clients[url]


def reward_func(queries: list[str], prompts: list[str], labels: list[Any] | None = None, **kwargs: Any) -> dict:
    import torch

    rewards = _client().get_reward(list(queries), list(prompts) if prompts is not None else None)
    values = torch.tensor([float("nan") if r is None else r for r in rewards], dtype=torch.float32)
    return {"rewards": values, "scores": values, "extra_logs": {"rewardkit_reward": values}}
