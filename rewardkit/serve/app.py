"""The HTTP reward server: FastAPI routes over one scorer and one dynamic batcher.

Routes (OpenAPI at ``/docs``, schema at ``/openapi.json``):

* ``POST /get_reward`` — OpenRLHF's remote reward model protocol: ``{"query": [rendered conversation,
  ...], "prompts": [rendered prompt, ...]}`` → ``{"rewards": [...], "scores": [...], "extra_logs": {...}}``
  (``rewards`` = ``scores`` = raw rewards, as OpenRLHF's own ``serve_rm``). Queries that share a prompt are
  scored as one group: the prompt is computed once and they are truncated together.
* ``POST /v1/score`` — one prompt and its completions (text or chat messages), or rendered ``texts`` →
  rewards, normalised rewards (when the checkpoint recorded reward statistics; ``normalization`` says
  which or why not), and ``pairwise`` P(i ≻ j) = σ(r_i − r_j) (eq. 2).
* ``GET /health``, ``GET /v1/model`` (template, pooling, max length, reward statistics, limits).

Errors are JSON ``{"detail": ...}`` naming the field or limit: 413 for a body, item count or token count
over the limit; 422 for a malformed body (FastAPI's field errors); 400 for content that parses but cannot
be scored; 503 with ``Retry-After`` when the queue is full or the server is stopping; 504 when a request
is not scored within ``request_timeout_s``. Over-length inputs are truncated the training way and reported
in ``truncated``, never dropped.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from rewardkit.config import ServeConfig
from rewardkit.errors import DataError, UserError
from rewardkit.inference import Group, Prepared, Scorer, ScoreResult
from rewardkit.inference.rows import jsonable, normaliser, parse_score_row, reward_value
from rewardkit.losses import sigmoid
from rewardkit.serve.batcher import Batcher, QueueFull, ShuttingDown

# ------------------------------------------------------------------------------------------ schemas


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str


Content = str | list[ChatMessage]


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote RM body. Extra fields (``labels``, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    query: list[str] = Field(description="Whole conversations, already rendered with the chat template "
                                         "(prompt + response), one per sample.")
    prompts: list[str] | None = Field(None, description="The rendered prompt of each query (same length as query); "
                                                        "queries with the same prompt share one pass over it.")


class GetRewardResponse(BaseModel):
    rewards: list[float | None]
    scores: list[float | None]
    extra_logs: dict[str, Any]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: Content | None = Field(None, description="The conversation so far: text (one user turn) or chat messages.")
    completions: list[Content] | None = Field(None, description="Candidate replies: text or chat messages.")
    texts: list[str] | None = Field(None, description="Instead of prompt + completions: whole conversations already "
                                                      "rendered with the model's template, scored as given.")
    prompt_text: str | None = Field(None, description="With texts: their rendered prompt (prompt-side truncation).")
    aspect_weights: dict[str, float] | None = Field(
        None, description="Aspect models only: this request's mixing weights, e.g. {\"helpful\": 1, \"harmless\": 0} "
                          "(steering); default: the server's --aspect-weights, else the model's gate.")


class ScoreResponse(BaseModel):
    model: str
    rewards: list[float | None]
    rewards_normalized: list[float | None] | None
    normalization: str
    pairwise: list[list[float | None]] | None = Field(
        None, description="pairwise[i][j] = P(completion i ≻ completion j) = σ(r_i − r_j) (eq. 2).")
    p_first_beats_second: float | None = None
    truncated: dict[str, int]
    end_of_turn_added: int
    judge: list[dict[str, Any]] | None = None
    aspects: dict[str, Any] | None = Field(
        None, description="Aspect models: the mixing weights used and each aspect's rewards.")


# ------------------------------------------------------------------------------------------ the app


def create_app(scorer: Scorer, cfg: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``scorer``; the batcher starts and stops with the app's lifespan."""
    info = scorer.describe()
    mean, std = info.get("reward_mean"), info.get("reward_std")
    normalization = (f"(r - {mean:.6g}) / {std:.6g}: the checkpoint's reward statistics"
                     f" ({info.get('reward_stats_source', 'recorded')})" if mean is not None and std else
                     "none: this model records no reward statistics (mean/std), so rewards are not normalised")
    norm = normaliser(info)
    state: dict[str, Batcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["batcher"] = Batcher(scorer, dynamic_batch_tokens=cfg.dynamic_batch_tokens,
                                   max_wait_s=cfg.max_wait_ms / 1000, max_queue=cfg.max_queue,
                                   dynamic=cfg.dynamic_batching)
        try:
            yield
        finally:
            await run_in_threadpool(state["batcher"].close)

    app = FastAPI(title="rewardkit reward server", version="1", lifespan=lifespan,
                  description=f"Rewards from {scorer.name}. " + (__doc__ or "").split("\n\n")[1])
    app.add_middleware(BodyLimit, max_bytes=cfg.max_request_bytes)

    async def run(groups: list[Group]) -> ScoreResult:
        n = sum(len(g) for g in groups)
        if n > cfg.max_items:
            raise HTTPException(413, f"{n} completions in one request exceed max_items={cfg.max_items}; "
                                     "split the request")
        try:
            prepared: Prepared = await run_in_threadpool(scorer.prepare, groups)
        except UserError as e:
            raise HTTPException(400, str(e)) from None
        if prepared.tokens > cfg.max_request_tokens:
            raise HTTPException(413, f"the request costs {prepared.tokens} tokens after truncation, over "
                                     f"max_request_tokens={cfg.max_request_tokens}; split the request")
        try:
            return await asyncio.wait_for(state["batcher"].submit(prepared), cfg.request_timeout_s)
        except QueueFull as e:
            raise HTTPException(503, f"server busy: {e}; retry later", headers={"Retry-After": "1"}) from None
        except ShuttingDown as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "5"}) from None
        except TimeoutError:
            raise HTTPException(504, f"not scored within request_timeout_s={cfg.request_timeout_s}") from None
        except UserError as e:
            raise HTTPException(400, str(e)) from None
        except Exception as e:  # noqa: BLE001 - a fault inside the model fails this request only, as JSON
            raise HTTPException(500, f"internal error while scoring: {type(e).__name__}: {e}") from None

    @app.post("/get_reward", response_model=GetRewardResponse)
    async def get_reward(body: GetRewardRequest) -> dict[str, Any]:
        if body.prompts is not None and len(body.prompts) != len(body.query):
            raise HTTPException(422, f"'prompts' has {len(body.prompts)} entries but 'query' has {len(body.query)}; "
                                     "give one prompt per query, or none")
        if not body.query:
            return {"rewards": [], "scores": [], "extra_logs": {}}
        if any(not q for q in body.query):
            raise HTTPException(422, f"query[{next(i for i, q in enumerate(body.query) if not q)}] is empty")
        groups, members = query_groups(body.query, body.prompts)
        result = await run(groups)
        rewards: list[float | None] = [None] * len(body.query)
        for indices, r in zip(members, result.rewards):
            for i, v in zip(indices, r):
                rewards[i] = reward_value(v)
        t = result.truncation_total()
        return {"rewards": rewards, "scores": rewards,
                "extra_logs": {"truncated_prompt": t.prompt_truncated, "truncated_completion": t.completion_truncated,
                               "end_of_turn_added": result.end_of_turn_added}}

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score_route(body: ScoreRequest) -> dict[str, Any]:
        result = await run([score_request_group(body)])
        rewards = [reward_value(v) for v in result.rewards[0]]
        out: dict[str, Any] = {
            "model": scorer.name, "rewards": rewards, "normalization": normalization,
            "rewards_normalized": [None if r is None else norm(r) for r in rewards] if norm else None,
            "pairwise": [[None if a is None or b is None else sigmoid(a - b) for b in rewards] for a in rewards],
            "truncated": {"prompt": result.truncation[0].prompt_truncated,
                          "completion": result.truncation[0].completion_truncated},
            "end_of_turn_added": result.end_of_turn_added,
        }
        if len(rewards) == 2:
            out["p_first_beats_second"] = out["pairwise"][0][1]
        if result.details is not None:
            out["judge"] = jsonable(result.details)
        if result.aspects is not None:
            out["aspects"] = result.aspects[0]
        return out

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = state.get("batcher")
        return {"status": "ok", "model": scorer.name, "queue": batcher.waiting if batcher else 0,
                "dynamic_batching": cfg.dynamic_batching, "served": batcher.stats.to_dict() if batcher else None}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        return {**info, "normalization": normalization,
                "limits": {k: getattr(cfg, k) for k in ("max_request_bytes", "max_items", "max_request_tokens",
                                                        "max_queue", "request_timeout_s", "dynamic_batch_tokens",
                                                        "max_batch_tokens", "max_wait_ms", "dynamic_batching")}}

    return app


def query_groups(query: list[str], prompts: list[str] | None) -> tuple[list[Group], list[list[int]]]:
    """``/get_reward``'s queries as groups: queries with the same prompt form one group (one pass over the
    prompt); with each group, the positions of its queries in the request, so the order can be restored."""
    by_prompt: OrderedDict[str, list[int]] = OrderedDict()
    for i, q in enumerate(query):
        p = prompts[i] if prompts is not None else None
        by_prompt.setdefault(p if p and q.startswith(p) else f"\0{i}", []).append(i)
    groups = [Group(texts=[query[i] for i in members], prompt_text=None if key.startswith("\0") else key)
              for key, members in by_prompt.items()]
    return groups, list(by_prompt.values())


def score_request_group(body: ScoreRequest) -> Group:
    """The group a ``/v1/score`` body asks to score (422 for a malformed one)."""
    if (body.texts is None) == (body.completions is None):
        raise HTTPException(422, "give either 'completions' (with an optional 'prompt') or 'texts', not both")
    if body.texts is not None:
        if not body.texts or any(not t for t in body.texts):
            raise HTTPException(422, "'texts' must be a non-empty list of non-empty strings")
        return Group(texts=list(body.texts), prompt_text=body.prompt_text, aspect_weights=body.aspect_weights)
    if not body.completions:
        raise HTTPException(422, "'completions' must hold at least one completion")
    row = {"prompt": _plain(body.prompt), "completions": [_plain(c) for c in body.completions]}
    if body.aspect_weights is not None:
        row["aspect_weights"] = body.aspect_weights
    try:  # the same parsing as `rewardkit score` rows (text or messages, prompt stripped from completions)
        return parse_score_row(row, "request body", hint="")
    except DataError as e:
        raise HTTPException(422, str(e)) from None


def _plain(value: Content | None) -> Any:
    return value if value is None or isinstance(value, str) else [m.model_dump() for m in value]


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 — by its Content-Length before reading, or
    while streaming when it has none — so an oversized body is never held in memory."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._reject(send, int(length))
        seen, too_big, rejected = 0, False, False

        async def limited() -> dict:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_big = True
                    raise _TooBig()
            return message

        async def guarded_send(message: dict) -> None:
            # The app may turn the read error into its own 400; the client gets the 413 instead.
            nonlocal rejected
            if not too_big:
                return await send(message)
            if not rejected:
                rejected = True
                await self._reject(send, seen)

        try:
            await self.app(scope, limited, guarded_send)
        except _TooBig:
            if not rejected:
                await self._reject(send, seen)

    async def _reject(self, send: Any, size: int) -> None:
        response = JSONResponse({"detail": f"request body of {size} bytes exceeds max_request_bytes={self.max_bytes}"},
                                status_code=413)
        await response({"type": "http"}, None, send)


class _TooBig(Exception):
    pass
