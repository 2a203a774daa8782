"""Dynamic batching: concurrent requests share forward passes.

Requests arrive already tokenized (``Scorer.prepare``, run on the server's thread pool) and wait in
one FIFO queue. A single worker thread owns the model: it takes the oldest request, waits at most
``max_wait_s`` for others to arrive while the taken tokens are below ``dynamic_batch_tokens``, then
scores everything taken in one ``Scorer.run`` call (one set of packed, prefix-shared forward passes)
and hands each request its own ``ScoreResult``. With ``dynamic=False`` every request gets its own
call: the baseline the benchmark compares against.

Why one worker: a CPU forward pass already uses every core, and a GPU one the whole device, so two
concurrent passes only contend; batching is where the speed is. Why FIFO and a token budget: a
request's wait is bounded by the requests ahead of it, and the budget bounds one call's memory.

Failure isolation: if a combined call raises, each of its requests is retried alone, so one bad
request fails only itself; the worker never exits on an error. A request whose caller gave up
(timeout, disconnect) before it was taken is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rewardkit.inference import Prepared, Scorer, ScoreResult

logger = logging.getLogger("rewardkit.serve")


class QueueFull(RuntimeError):
    """More requests are waiting than the server accepts (answered 503 with Retry-After)."""


class ShuttingDown(RuntimeError):
    """The server is stopping and takes no new requests."""


@dataclass
class _Job:
    prepared: Prepared
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    requests: int = 0
    calls: int = 0  # Scorer.run calls
    forward_passes: int = 0
    completions: int = 0
    tokens: int = 0
    errors: int = 0
    skipped: int = 0  # requests abandoned (timeout / disconnect) before scoring
    max_requests_per_call: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["mean_requests_per_call"] = self.requests / self.calls if self.calls else None
        return d


class Batcher:
    def __init__(self, scorer: Scorer, *, dynamic_batch_tokens: int = 16384, max_wait_s: float = 0.005,
                 max_queue: int = 1024, dynamic: bool = True):
        if dynamic_batch_tokens < 1 or max_wait_s < 0 or max_queue < 1:
            raise ValueError("dynamic_batch_tokens and max_queue must be positive and max_wait_s non-negative")
        self.scorer, self.dynamic_batch_tokens, self.max_wait_s = scorer, dynamic_batch_tokens, max_wait_s
        self.max_queue, self.dynamic = max_queue, dynamic
        self.stats = BatcherStats()  # server-lifetime counters (for /health), not per-request results
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="rewardkit-batcher", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def submit(self, prepared: Prepared) -> ScoreResult:
        """Queue one prepared request and wait for its result (cancel the await to abandon it)."""
        loop = asyncio.get_running_loop()
        job = _Job(prepared, loop.create_future(), loop)
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting (max_queue={self.max_queue})")
            self._queue.append(job)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            # The caller gave up (timeout, disconnect): free its place in the queue now, not when it is reached.
            with self._cond:
                if job in self._queue:
                    self._queue.remove(job)
                    self.stats.skipped += 1
            raise

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, finish the ones queued, stop the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ---- the worker thread

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if self.dynamic:
                deadline = self._queue[0].enqueued + self.max_wait_s
                while (not self._stopping and sum(j.prepared.tokens for j in self._queue) < self.dynamic_batch_tokens
                       and (left := deadline - time.monotonic()) > 0):
                    self._cond.wait(left)
            batch, used = [], 0
            while self._queue:
                job = self._queue[0]
                if batch and (not self.dynamic or used + job.prepared.tokens > self.dynamic_batch_tokens):
                    break
                batch.append(self._queue.popleft())
                used += job.prepared.tokens
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            live = [j for j in batch if not j.future.cancelled()]
            self.stats.skipped += len(batch) - len(live)
            if live:
                self._run(live)

    def _run(self, jobs: list[_Job]) -> None:
        try:
            results: list[ScoreResult | BaseException] = list(self.scorer.run([j.prepared for j in jobs]))
        except Exception as e:  # noqa: BLE001 - isolate the request that failed, keep the worker alive
            if len(jobs) > 1:
                for job in jobs:
                    self._run([job])
                return
            logger.exception("scoring failed")
            results = [e]
        self.stats.calls += 1
        self.stats.requests += len(jobs)
        self.stats.max_requests_per_call = max(self.stats.max_requests_per_call, len(jobs))
        for job, result in zip(jobs, results):
            if isinstance(result, BaseException):
                self.stats.errors += 1
            else:
                self.stats.forward_passes += result.forward_passes if job is jobs[0] else 0
                self.stats.completions += job.prepared.completions
                self.stats.tokens += job.prepared.tokens
            job.loop.call_soon_threadsafe(_resolve, job.future, result)


def _resolve(future: asyncio.Future, result: Any) -> None:
    if future.cancelled():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
