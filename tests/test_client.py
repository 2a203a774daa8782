"""rewardkit.client against a real server (uvicorn on an ephemeral port): splitting by the advertised limits and by 413,
retries with backoff on 503 and on a refused connection, clear errors for 4xx, sync and async alike."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from rewardkit.batching import Encoder
from rewardkit.checkpoint import save_checkpoint
from rewardkit.client import AsyncRewardClient, RewardClient, RewardServerError
from rewardkit.config import ServeConfig
from rewardkit.inference.factory import load_scorer
from rewardkit.model import load_reward_model
from rewardkit.serve import running_server

from conftest import chat_rollout

PROMPTS = ["How was the answer?", "Is the question fine?", "What is the answer?"]
REPLIES = ["the answer is good", "the answer is bad", "fine", "poor", "the question is fine"]


@pytest.fixture(scope="module")
def scorer(tiny_model_dir, tmp_path_factory):
    torch.manual_seed(4)
    model, tok = load_reward_model(str(tiny_model_dir))
    folder: Path = tmp_path_factory.mktemp("client") / "run"
    save_checkpoint(folder, model, tok, Encoder(tok, max_length=64))
    return load_scorer(str(folder))


class Recorder:
    """httpx event hooks: the status of every response the client got (the retries are visible here)."""

    def __init__(self):
        self.statuses: list[int] = []
        self.paths: list[str] = []

    def __call__(self, response: httpx.Response) -> None:
        self.statuses.append(response.status_code)
        self.paths.append(response.request.url.path)


def test_large_batches_are_split_by_the_advertised_limits_and_by_413(scorer):
    queries, prompts = chat_rollout(scorer.encoder.tokenizer, PROMPTS, REPLIES)
    with running_server(scorer) as url:
        whole = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": prompts}, timeout=60).json()["rewards"]
    seen = Recorder()
    cfg = ServeConfig(port=0, max_items=4, max_request_tokens=40)  # one query fits, four (one prompt) do not
    with running_server(scorer, cfg) as url:
        client = RewardClient(url, http=httpx.Client(base_url=url, timeout=60, event_hooks={"response": [seen]}))
        split = client.get_reward(queries, prompts)
        texts = client.classify(queries)
        with pytest.raises(RewardServerError, match="422") as refused:
            client.get_reward([""])  # an empty query: the caller's mistake, not retried
        assert refused.value.status == 422
    assert np.allclose(split, whole, atol=1e-5) and np.allclose(texts, whole, atol=1e-5)
    posts = [s for s, p in zip(seen.statuses, seen.paths) if p == "/get_reward"]
    assert 413 in posts and posts.count(200) >= len(queries) / 4  # cut by max_items, then halved on 413


def test_503_is_retried_with_backoff_until_the_server_has_room(scorer):
    import json as json_

    from test_serve import Gate

    gate = Gate(scorer)
    cfg = ServeConfig(port=0, max_queue=1, dynamic_batching=False)
    seen = Recorder()
    with running_server(gate, cfg) as url:
        holders = [threading.Thread(target=httpx.post, args=(f"{url}/v1/score",),
                                    kwargs={"json": {"prompt": "q", "completions": [c]}, "timeout": 60})
                   for c in ("one", "two")]
        for t in holders:  # one taken by the worker (held at the gate), one waiting: the queue is full
            t.start()
            time.sleep(0.3)
        threading.Timer(1.0, gate.open.set).start()
        client = RewardClient(url, backoff_s=0.05, max_backoff_s=0.2, retries=50,
                              http=httpx.Client(base_url=url, timeout=60, event_hooks={"response": [seen]}))
        got = client.score_samples(["How was the answer?"], ["fine"])
        for t in holders:
            t.join(60)
    assert seen.statuses[0] == 503 and seen.statuses[-1] == 200  # refused while full, then answered
    assert isinstance(got[0], float) and json_.dumps(got)


def test_a_server_that_is_not_there_fails_after_the_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    client = RewardClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01)
    started = time.monotonic()
    with pytest.raises(RewardServerError, match="after 3 tries"):
        client.score_samples(["q"], ["a"])
    assert time.monotonic() - started < 30


def test_async_client_gives_the_sync_clients_rewards(scorer):
    queries, prompts = chat_rollout(scorer.encoder.tokenizer, PROMPTS, REPLIES)
    pairs = [(p, r) for p in PROMPTS for r in REPLIES]
    with running_server(scorer, ServeConfig(port=0, max_items=4)) as url:
        sync = RewardClient(url)
        expected = sync.get_reward(queries, prompts)
        samples = sync.score_samples([p for p, _ in pairs], [r for _, r in pairs])

        async def go():
            async with AsyncRewardClient(url, max_concurrency=4) as client:
                return (await client.get_reward(queries, prompts),
                        await client.score_samples([p for p, _ in pairs], [r for _, r in pairs]))

        got, got_samples = asyncio.run(go())
    assert np.allclose(got, expected, atol=1e-6) and np.allclose(got_samples, samples, atol=1e-6)
    assert np.allclose(samples, expected, atol=1e-5)  # messages and rendered text: the same rewards
