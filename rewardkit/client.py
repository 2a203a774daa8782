"""Clients for ``rewardkit serve``: :class:`RewardClient` (sync) and :class:`AsyncRewardClient` (asyncio).

Both speak the server's routes and do what every caller would otherwise write by hand:

* **retries with backoff** on what is worth retrying — a refused or dropped connection, 500, 502, 503 (its
  ``Retry-After`` is honoured) and 504 — with exponential backoff and jitter (``backoff_s`` doubling, capped at
  ``max_backoff_s``), ``retries`` times; a 4xx is the caller's mistake and raises :class:`RewardServerError` at once;
* **splitting a large batch** by the limits the server advertises at ``GET /v1/model`` (``max_items``,
  ``max_request_bytes``), and in halves again when the server still answers 413 (its token limit depends on the
  tokenizer, which the client does not have). Every query is scored on its own on the server side, so how a batch is
  split does not change any reward;
* **one completion per request** for ``score_samples`` (what RL loops need: one reward per prompt-completion pair),
  sent concurrently (``max_concurrency``) so that the server's dynamic batching packs them into shared forward passes.

Results are plain lists of floats (``None`` where a judge gave no verdict), in input order.

    from rewardkit.client import RewardClient
    client = RewardClient("http://127.0.0.1:8000")
    client.score_samples(["What is 2+2?"], ["4"])                      # -> [reward]
    client.get_reward(["<|im_start|>user\\n...<|im_end|>\\n..."])     # OpenRLHF's body, split by the limits
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from rewardkit.errors import UserError

RETRY_STATUSES = {500, 502, 503, 504}

Content = str | list[dict[str, Any]]  # text, or chat messages


class RewardServerError(UserError):
    """The reward server refused a request (a 4xx), or kept failing after every retry."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Limits:
    """What the server accepts per request (``GET /v1/model`` → ``limits``)."""

    max_items: int = 256
    max_request_bytes: int = 8_000_000

    @classmethod
    def of(cls, model_info: dict[str, Any]) -> Limits:
        limits = model_info.get("limits") or {}
        return cls(max_items=int(limits.get("max_items", cls.max_items)),
                   max_request_bytes=int(limits.get("max_request_bytes", cls.max_request_bytes)))


@dataclass
class RetryPolicy:
    retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def wait(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("retry-after") if response is not None else None
        if after is not None and after.replace(".", "", 1).isdigit():
            return min(float(after), self.max_backoff_s)
        # full jitter: clients that failed together do not all come back at the same instant
        return self.rng.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))

    def settle(self, what: str, attempt: int, response: httpx.Response | None,
               error: httpx.TransportError | None) -> tuple[bool, Any]:
        """What one try's outcome means, for the sync and the async loop alike: ``(True, decoded answer)`` when it
        succeeded, ``(False, seconds to wait)`` when it is worth another try; raises when it is not (a 4xx, or the
        last try failed)."""
        last = attempt == self.retries
        if error is not None:
            if last:
                raise RewardServerError(f"{what}: {type(error).__name__}: {error} (after {attempt + 1} tries)") from None
        elif response.status_code < 400:
            return True, response.json()
        elif response.status_code not in RETRY_STATUSES or last:
            raise RewardServerError(_failure(response), response.status_code)
        return False, self.wait(attempt, response)


def chunks(items: Sequence[Any], limits: Limits, size_of: Any) -> list[tuple[int, int]]:
    """(start, end) ranges of ``items`` that each stay within ``max_items`` and, by ``size_of(item)`` bytes, within
    ``max_request_bytes`` (less a margin for the JSON around the items)."""
    budget = max(1, int(limits.max_request_bytes * 0.9) - 1024)
    out, start, used = [], 0, 0
    for i, item in enumerate(items):
        size = size_of(item)
        if i > start and (i - start >= limits.max_items or used + size > budget):
            out.append((start, i))
            start, used = i, 0
        used += size
    if start < len(items):
        out.append((start, len(items)))
    return out


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode()) + 2


def _sample_body(prompt: Content | None, completion: Content) -> dict[str, Any]:
    body: dict[str, Any] = {"completions": [completion]}
    if prompt is not None:
        body["prompt"] = prompt
    return body


def _failure(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return f"{response.request.method} {response.request.url.path}: {response.status_code}: {detail}"


def _check_lengths(prompts: Sequence[Any], completions: Sequence[Any]) -> None:
    if len(prompts) != len(completions):
        raise UserError(f"{len(prompts)} prompts but {len(completions)} completions: give one prompt per completion")


class RewardClient:
    """A synchronous client (``httpx.Client``); safe to share between threads."""

    def __init__(self, url: str, *, timeout: float = 180.0, retries: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, max_concurrency: int = 16, http: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(retries, backoff_s, max_backoff_s)
        self.max_concurrency = max_concurrency
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout,
                                         limits=httpx.Limits(max_connections=max_concurrency))
        self._limits: Limits | None = None

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call with retries (see the module docstring); the decoded JSON answer."""
        for attempt in range(self.retry.retries + 1):
            response, error = None, None
            try:
                response = self.http.request(method, path, json=body)
            except httpx.TransportError as e:
                error = e
            done, value = self.retry.settle(f"{method} {self.url}{path}", attempt, response, error)
            if done:
                return value
            time.sleep(value)
        raise AssertionError("unreachable")

    def model_info(self) -> dict[str, Any]:
        return self.request("GET", "/v1/model")

    def limits(self) -> Limits:
        if self._limits is None:
            self._limits = Limits.of(self.model_info())
        return self._limits

    def _split_post(self, path: str, items: list[Any], make_body: Any, size_of: Any, take: Any) -> list[Any]:
        """POST ``items`` in as many requests as the limits need; halves a part the server still finds too big."""
        out: list[Any] = []

        def send(part: list[Any]) -> None:
            try:
                out.extend(take(self.request("POST", path, make_body(part)), len(part)))
            except RewardServerError as e:
                if e.status != 413 or len(part) == 1:
                    raise
                half = len(part) // 2
                send(part[:half])
                send(part[half:])

        for start, end in chunks(items, self.limits(), size_of):
            send(items[start:end])
        return out

    def get_reward(self, queries: Sequence[str], prompts: Sequence[str] | None = None,
                   labels: Sequence[Any] | None = None) -> list[float | None]:
        """OpenRLHF's ``/get_reward``: rewards of rendered conversations (``prompts``: their rendered prompts)."""
        items = [(q, None if prompts is None else prompts[i], None if labels is None else labels[i])
                 for i, q in enumerate(queries)]

        def body(part: list[tuple]) -> dict[str, Any]:
            out: dict[str, Any] = {"query": [q for q, _, _ in part]}
            if prompts is not None:
                out["prompts"] = [p for _, p, _ in part]
            if labels is not None:
                out["labels"] = [label for _, _, label in part]
            return out

        return self._split_post("/get_reward", items, body, lambda it: sum(_json_size(x) for x in it if x is not None),
                                lambda answer, n: answer["rewards"])

    def classify(self, texts: Sequence[str]) -> list[float | None]:
        """Raw rewards of rendered conversations through vLLM's ``/classify`` shape (``activation: false``)."""
        return self._split_post("/classify", list(texts), lambda part: {"input": part, "activation": False}, _json_size,
                                lambda answer, n: [d["probs"][0] for d in answer["data"]])

    def score(self, prompt: Content | None, completions: Sequence[Content]) -> dict[str, Any]:
        """``/v1/score`` for one prompt and its completions (one group: compared in one context); the whole answer."""
        body: dict[str, Any] = {"completions": list(completions)}
        if prompt is not None:
            body["prompt"] = prompt
        return self.request("POST", "/v1/score", body)

    def score_samples(self, prompts: Sequence[Content | None], completions: Sequence[Content]) -> list[float | None]:
        """One reward per (prompt, completion) pair, each pair its own request (its reward depends on it alone),
        ``max_concurrency`` at a time."""
        _check_lengths(prompts, completions)

        def one(pair: tuple[Any, Any]) -> float | None:
            return self.request("POST", "/v1/score", _sample_body(*pair))["rewards"][0]

        pairs = list(zip(prompts, completions))
        if len(pairs) <= 1:
            return [one(p) for p in pairs]
        with ThreadPoolExecutor(min(self.max_concurrency, len(pairs))) as pool:
            return list(pool.map(one, pairs))


class AsyncRewardClient:
    """The same client for asyncio code (``httpx.AsyncClient``)."""

    def __init__(self, url: str, *, timeout: float = 180.0, retries: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, max_concurrency: int = 16, http: httpx.AsyncClient | None = None):
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(retries, backoff_s, max_backoff_s)
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self._http = http
        self._limits: Limits | None = None

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        # made on first use, inside the event loop that will use it
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.url, timeout=self.timeout,
                                           limits=httpx.Limits(max_connections=self.max_concurrency))
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        for attempt in range(self.retry.retries + 1):
            response, error = None, None
            try:
                response = await self.http.request(method, path, json=body)
            except httpx.TransportError as e:
                error = e
            done, value = self.retry.settle(f"{method} {self.url}{path}", attempt, response, error)
            if done:
                return value
            await asyncio.sleep(value)
        raise AssertionError("unreachable")

    async def model_info(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/model")

    async def limits(self) -> Limits:
        if self._limits is None:
            self._limits = Limits.of(await self.model_info())
        return self._limits

    async def get_reward(self, queries: Sequence[str], prompts: Sequence[str] | None = None,
                         labels: Sequence[Any] | None = None) -> list[float | None]:
        out: list[float | None] = []
        items = list(range(len(queries)))

        async def send(part: list[int]) -> None:
            body: dict[str, Any] = {"query": [queries[i] for i in part]}
            if prompts is not None:
                body["prompts"] = [prompts[i] for i in part]
            if labels is not None:
                body["labels"] = [labels[i] for i in part]
            try:
                out.extend((await self.request("POST", "/get_reward", body))["rewards"])
            except RewardServerError as e:
                if e.status != 413 or len(part) == 1:
                    raise
                await send(part[:len(part) // 2])
                await send(part[len(part) // 2:])

        def size(i: int) -> int:
            return _json_size(queries[i]) + (_json_size(prompts[i]) if prompts is not None else 0)

        for start, end in chunks(items, await self.limits(), size):
            await send(items[start:end])
        return out

    async def score(self, prompt: Content | None, completions: Sequence[Content]) -> dict[str, Any]:
        body: dict[str, Any] = {"completions": list(completions)}
        if prompt is not None:
            body["prompt"] = prompt
        return await self.request("POST", "/v1/score", body)

    async def score_samples(self, prompts: Sequence[Content | None], completions: Sequence[Content]
                            ) -> list[float | None]:
        _check_lengths(prompts, completions)
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(prompt: Any, completion: Any) -> float | None:
            async with gate:
                return (await self.request("POST", "/v1/score", _sample_body(prompt, completion)))["rewards"][0]

        return list(await asyncio.gather(*[one(p, c) for p, c in zip(prompts, completions)]))
