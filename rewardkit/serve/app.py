"""The HTTP reward server: FastAPI routes over one scorer and one dynamic batcher.

Routes (OpenAPI at ``/docs``, schema at ``/openapi.json``):

* ``POST /get_reward`` — OpenRLHF's remote reward model protocol: ``{"query": [rendered conversation,
  ...], "prompts": [rendered prompt, ...]}`` → ``{"rewards": [...], "scores": [...], "extra_logs": {...}}``
  (``rewards`` = ``scores`` = raw rewards, as OpenRLHF's own ``serve_rm``; normalised with
  ``--normalize-reward``), ``extra_logs`` one value per query (``--extra-logs none``: ``{}``, for OpenRLHF
  0.8.x). Each query is truncated on its own, so its reward does not depend on what is sent beside it;
  queries that share a prompt and fit share one pass over it. Judges and GenRMs are served here too.
* ``POST /classify`` (and ``/v1/classify``) — vLLM's classification body (``input`` or ``messages``) →
  ``data[i].probs`` (σ(r), or r itself with ``"activation": false``); SGLang's native ``{"text": ...}`` body
  → ``[{"embedding": [r]}]``. ``POST /pooling`` — vLLM's pooling body → ``data[i].data = [r]``.
  ``POST /rerank`` (``/v1/rerank``) — ``{"query", "documents"}`` → results sorted by reward.
  ``GET /v1/models`` — the served model, OpenAI style.
* ``POST /v1/score`` — one prompt and its completions (text or chat messages), or rendered ``texts`` →
  rewards, normalised rewards (when the checkpoint recorded reward statistics; ``normalization`` says
  which or why not), and ``pairwise`` P(i ≻ j) = σ(r_i − r_j) (eq. 2).
* ``GET /health``, ``GET /v1/model`` (template, pooling, max length, reward statistics, limits: what
  ``rewardkit.client`` splits large batches by).

Errors are JSON ``{"detail": ...}`` naming the field or limit: 413 for a body, item count or token count
over the limit; 422 for a malformed body (FastAPI's field errors); 400 for content that parses but cannot
be scored; 503 with ``Retry-After`` when the queue is full or the server is stopping; 504 when a request
is not scored within ``request_timeout_s``; 500 (JSON) for a fault inside the model. Over-length inputs are truncated the training way and reported
in ``truncated``, never dropped.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewardkit.config import ServeConfig
from rewardkit.errors import DataError, UserError
from rewardkit.inference import Group, Prepared, Scorer, ScoreResult
from rewardkit.inference.rows import jsonable, normaliser, normalization_note, parse_score_row, reward_value
from rewardkit.losses import sigmoid
from rewardkit.serve.batcher import Batcher, QueueFull, ShuttingDown

# ------------------------------------------------------------------------------------------ schemas


class ContentPart(BaseModel):
    """One part of an OpenAI-style content list; text parts are joined into the message's text."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """An OpenAI-style chat message, as TRL and vLLM produce them (also with tools and reasoning): fields beyond
    ``role`` and ``content`` are handed to the chat template, which renders them (or not) as in training."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    thinking: str | None = None


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
    extra_logs: dict[str, list[float | int | None]]


# Bodies of other servers' /v1/score, recognised so that a client pointed here by mistake learns where to go.
_FOREIGN_SCORE_FIELDS = {
    frozenset({"text_1", "text_2"}): "vLLM's cross-encoder /v1/score (text_1, text_2)",
    frozenset({"queries", "documents"}): "vLLM's cross-encoder /v1/score (queries, documents)",
    frozenset({"data_1", "data_2"}): "vLLM's cross-encoder /v1/score (data_1, data_2)",
    frozenset({"query", "items"}): "SGLang's /v1/score (query, items, label_token_ids)",
}


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _not_a_foreign_body(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for fields, what in _FOREIGN_SCORE_FIELDS.items():
                if fields <= set(data) and not {"prompt", "completions", "texts"} & set(data):
                    raise ValueError(
                        f"this is the body of {what}; rewardkit's /v1/score takes {{\"prompt\", \"completions\"}} "
                        "or {\"texts\"}. For vLLM-style bodies use POST /classify ({\"input\": [rendered "
                        "conversation, ...]}) or POST /rerank ({\"query\", \"documents\"})")
        return data
    prompt: Content | None = Field(None, description="The conversation so far: text (one user turn) or chat messages.")
    completions: list[Content] | None = Field(None, description="Candidate replies: text or chat messages.")
    texts: list[str] | None = Field(None, description="Instead of prompt + completions: whole conversations already "
                                                      "rendered with the model's template, scored as given.")
    prompt_text: str | None = Field(None, description="With texts: their rendered prompt (prompt-side truncation).")
    aspect_weights: dict[str, float] | None = Field(
        None, description="Aspect models only: this request's mixing weights, e.g. {\"helpful\": 1, \"harmless\": 0} "
                          "(steering); default: the server's --aspect-weights, else the model's gate.")
    steps: list[list[str]] | None = Field(
        None, description="Process reward models only: each completion's steps (default: its text split at the "
                          "model's step marker).")


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
    step_rewards: list[list[float | None]] | None = Field(
        None, description="Process reward models: per completion, P(step is right) of each step (null: a step past "
                          "max_length); 'rewards' is their aggregate by 'aggregate'.")
    aggregate: str | None = None


class ClassifyRequest(BaseModel):
    """vLLM's ``/classify`` (and ``/pooling``) body: ``input`` (rendered text or a list of them) or ``messages`` (one
    chat); SGLang's native ``/classify`` sends ``text`` instead. Other vLLM fields (``user``, ``priority``,
    ``request_id``, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]] | None = Field(
        None, description="Rendered conversation(s), scored as given (token ids are not accepted: send text).")
    messages: list[ChatMessage] | None = Field(None, description="One conversation as chat messages (vLLM's chat "
                                                                 "variant); its last turn is the reply scored.")
    text: str | list[str] | None = Field(None, description="SGLang's native /classify: rendered conversation(s).")
    activation: bool | None = None
    use_activation: bool | None = None
    softmax: bool | None = None
    truncate_prompt_tokens: int | None = None
    add_special_tokens: bool | None = None


class RerankRequest(BaseModel):
    """vLLM's and SGLang's ``/rerank`` body: a query and documents; here the query is the prompt and each
    document a candidate reply, ranked by reward."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    query: str
    documents: list[str] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = True


# ------------------------------------------------------------------------------------------ the app


def create_app(scorer: Scorer, cfg: ServeConfig) -> FastAPI:
    """The FastAPI app serving ``scorer``; the batcher starts and stops with the app's lifespan."""
    info = scorer.describe()
    normalization = normalization_note(info)
    norm = normaliser(info)
    if cfg.normalize_reward and norm is None:
        raise UserError(f"--normalize-reward: {scorer.name} cannot be normalised ({normalization}); serve raw "
                        "rewards (drop the flag) or serve a checkpoint that recorded its reward statistics")
    is_judge = info.get("type") == "judge"
    strip = pad_eos_stripper(scorer) if cfg.strip_pad_eos else None
    started = int(time.time())
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

    def check_items(n: int) -> None:
        if n > cfg.max_items:
            raise HTTPException(413, f"{n} completions in one request exceed max_items={cfg.max_items}; "
                                     "split the request")

    async def prepare(fn: Any, *args: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args)
        except UserError as e:
            raise HTTPException(400, str(e)) from None
        except Exception as e:  # noqa: BLE001 - a fault while tokenizing fails this request only, as JSON
            raise HTTPException(500, f"internal error while preparing the request: {type(e).__name__}: {e}") from None

    async def score_prepared(prepared: Prepared) -> ScoreResult:
        if prepared.tokens > cfg.max_request_tokens:
            raise HTTPException(413, f"the request costs {prepared.tokens} tokens after truncation, over "
                                     f"max_request_tokens={cfg.max_request_tokens}; split the request")
        try:
            return await asyncio.wait_for(state["batcher"].submit(prepared), cfg.request_timeout_s)
        except QueueFull as e:
            raise HTTPException(503, f"server busy: {e}; retry later", headers={"Retry-After": "1"}) from None
        except ShuttingDown as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "5"}) from None
        # On Python 3.10 asyncio.wait_for raises asyncio.TimeoutError, which is not yet the builtin TimeoutError.
        except (TimeoutError, asyncio.TimeoutError):
            raise HTTPException(504, f"not scored within request_timeout_s={cfg.request_timeout_s}") from None
        except UserError as e:
            raise HTTPException(400, str(e)) from None
        except Exception as e:  # noqa: BLE001 - a fault inside the model fails this request only, as JSON
            raise HTTPException(500, f"internal error while scoring: {type(e).__name__}: {e}") from None

    async def run(groups: list[Group]) -> tuple[ScoreResult, Prepared]:
        check_items(sum(len(g) for g in groups))
        prepared: Prepared = await prepare(scorer.prepare, groups)
        return await score_prepared(prepared), prepared

    @app.post("/get_reward", response_model=GetRewardResponse)
    async def get_reward(body: GetRewardRequest) -> dict[str, Any]:
        if body.prompts is not None and len(body.prompts) != len(body.query):
            raise HTTPException(422, f"'prompts' has {len(body.prompts)} entries but 'query' has {len(body.query)}; "
                                     "give one prompt per query, or none")
        if not body.query:
            return {"rewards": [], "scores": [], "extra_logs": {}}
        if any(not q for q in body.query):
            raise HTTPException(422, f"query[{next(i for i, q in enumerate(body.query) if not q)}] is empty")
        check_items(len(body.query))
        queries, prompts = list(body.query), body.prompts
        if strip is not None:
            queries = [strip(q) for q in queries]
            prompts = None if prompts is None else [strip(p, end=False) for p in prompts]
        if is_judge:
            groups, members = judge_query_groups(queries, prompts)
            prepared = await prepare(scorer.prepare, groups)
        else:
            prepared, members = await prepare(prepare_queries, scorer, queries, prompts)
        result = await score_prepared(prepared)
        n = len(queries)
        raw: list[float | None] = [None] * n
        cut_prompt, cut_completion, undecided = [0] * n, [0] * n, [0] * n
        for indices, r, t in zip(members, result.rewards, result.truncation):
            for i, v in zip(indices, r):
                raw[i] = reward_value(v)
                # a group of several queries is never truncated (prepare_queries splits it), so its counts are 0
                cut_prompt[i], cut_completion[i] = int(t.prompt_truncated > 0), int(t.completion_truncated > 0)
        for i, v in enumerate(raw):
            if v is None:  # a judge without a verdict (sampling mode): OpenRLHF's clients cannot take a null
                raw[i], undecided[i] = 0.0, 1
        rewards = [norm(v) for v in raw] if cfg.normalize_reward and norm else raw
        out: dict[str, Any] = {"rewards": rewards, "scores": rewards, "extra_logs": {}}
        if cfg.extra_logs == "per_query":
            logs: dict[str, list] = {"truncated_prompt": cut_prompt, "truncated_completion": cut_completion}
            if not is_judge:
                logs["end_of_turn_added"] = end_of_turn_flags(scorer, queries)
            if is_judge:
                logs["undecided"] = undecided
            if cfg.normalize_reward:
                logs["raw_reward"] = raw
            out["extra_logs"] = logs
        return out

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score_route(body: ScoreRequest) -> dict[str, Any]:
        result, _ = await run([score_request_group(body)])
        rewards = [reward_value(v) for v in result.rewards[0]]
        steered = body.aspect_weights is not None
        request_norm = normaliser(info, steered=steered)
        out: dict[str, Any] = {
            "model": scorer.name, "rewards": rewards, "normalization": normalization_note(info, steered=steered),
            "rewards_normalized": ([None if r is None else request_norm(r) for r in rewards] if request_norm
                                   else None),
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
        if result.step_rewards is not None:  # a PRM: scores are probabilities, σ(a − b) would mean nothing
            out["step_rewards"] = [[reward_value(v) for v in per] for per in result.step_rewards[0]]
            out["aggregate"] = getattr(scorer, "aggregate", None)
            out["pairwise"] = None
            out.pop("p_first_beats_second", None)
        return out

    async def classify_like(body: ClassifyRequest) -> tuple[list[float | None], int]:
        """Rewards of a vLLM / SGLang classification body, one per input, each scored on its own."""
        if body.messages is not None:
            if body.input is not None or body.text is not None:
                raise HTTPException(422, "give either 'messages' or 'input' (or SGLang's 'text'), not both")
            messages = [_message(m) for m in body.messages]
            if len(messages) < 2 or messages[-1]["role"] != "assistant":
                raise HTTPException(422, "'messages' must end with the assistant reply to score, after at least one "
                                         "turn of prompt")
            row = {"prompt": messages[:-1], "completions": [messages[-1:]]}
            try:
                groups = [parse_score_row(row, "request body", hint="")]
            except DataError as e:
                raise HTTPException(422, str(e)) from None
        else:
            given = body.input if body.input is not None else body.text
            if given is None:
                raise HTTPException(422, "give 'input' (vLLM: a rendered conversation or a list of them), 'messages', "
                                         "or SGLang's 'text'")
            texts = [given] if isinstance(given, str) else given
            if not texts or not all(isinstance(t, str) and t for t in texts):
                raise HTTPException(422, "'input' must be a non-empty string or list of non-empty strings: token ids "
                                         "are not accepted here, send the rendered text")
            if strip is not None:
                texts = [strip(t) for t in texts]
            groups = [Group(texts=[t]) for t in texts]  # one group each: no input's truncation depends on another
        result, prepared = await run(groups)
        return [reward_value(r[0]) if len(r) == 1 else None for r in result.rewards], prepared.tokens

    def usage(tokens: int) -> dict[str, int]:
        return {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}

    @app.post("/classify")
    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> Any:
        rewards, tokens = await classify_like(body)
        if body.text is not None:  # SGLang's native /classify: the raw score as a one-element "embedding"
            items = [{"embedding": [r], "meta_info": {"prompt_tokens": tokens}} for r in rewards]
            return items[0] if isinstance(body.text, str) else items
        activation = next((v for v in (body.use_activation, body.activation, body.softmax) if v is not None), True)
        return {"id": f"classify-{time.time_ns()}", "object": "list", "created": int(time.time()),
                "model": scorer.name, "usage": usage(tokens),
                "data": [{"index": i, "label": None, "num_classes": 1,
                          "probs": [None if r is None else (sigmoid(r) if activation else r)]}
                         for i, r in enumerate(rewards)]}

    @app.post("/pooling")
    async def pooling(body: ClassifyRequest) -> dict[str, Any]:
        rewards, tokens = await classify_like(body)
        return {"id": f"pool-{time.time_ns()}", "object": "list", "created": int(time.time()), "model": scorer.name,
                "usage": usage(tokens),
                "data": [{"index": i, "object": "pooling", "data": [r]} for i, r in enumerate(rewards)]}

    @app.post("/rerank")
    @app.post("/v1/rerank")
    async def rerank(body: RerankRequest) -> dict[str, Any]:
        try:
            group = parse_score_row({"prompt": body.query, "completions": list(body.documents)}, "request body", hint="")
        except DataError as e:
            raise HTTPException(422, str(e)) from None
        result, prepared = await run([group])
        rewards = [reward_value(v) for v in result.rewards[0]]
        order = sorted(range(len(rewards)), key=lambda i: (rewards[i] is None, -(rewards[i] or 0.0), i))
        results = [{"index": i, "relevance_score": rewards[i],
                    **({"document": {"text": body.documents[i]}} if body.return_documents else {})}
                   for i in order[:body.top_n or len(order)]]
        return {"id": f"rerank-{time.time_ns()}", "model": scorer.name, "usage": {"total_tokens": prepared.tokens},
                "results": results}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = state.get("batcher")
        return {"status": "ok", "model": scorer.name, "queue": batcher.waiting if batcher else 0,
                "dynamic_batching": cfg.dynamic_batching, "served": batcher.stats.to_dict() if batcher else None}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        return {**info, "normalization": normalization,
                "get_reward": {"normalize_reward": cfg.normalize_reward, "extra_logs": cfg.extra_logs,
                               "strip_pad_eos": cfg.strip_pad_eos},
                "limits": {k: getattr(cfg, k) for k in ("max_request_bytes", "max_items", "max_request_tokens",
                                                        "max_queue", "request_timeout_s", "dynamic_batch_tokens",
                                                        "max_batch_tokens", "max_wait_ms", "dynamic_batching")}}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": scorer.name, "object": "model", "created": started,
                                            "owned_by": "rewardkit", "root": scorer.name,
                                            "max_model_len": info.get("max_length")}]}

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


def prepare_queries(scorer: Scorer, query: list[str], prompts: list[str] | None
                    ) -> tuple[Prepared, list[list[int]]]:
    """``/get_reward``'s queries prepared so that each one's tokens depend on it alone.

    Queries of one prompt share a group (one pass over the prompt) only while none of them is truncated: the
    group rule of training — siblings lose the same prompt tokens, so they are compared in one context — would
    otherwise cut a short sample's prompt because a long one was sent beside it, and its reward would change
    with its batch mates. A group in which anything is cut is split into single queries, each cut on its own.
    """
    groups, members = query_groups(query, prompts)
    prepared = scorer.prepare(groups)
    split = {k for k, t in enumerate(prepared.truncation)
             if len(groups[k]) > 1 and (t.prompt_truncated or t.completion_truncated)}
    if not split:
        return prepared, members
    kept_groups, kept_members = [], []
    for k, (g, m) in enumerate(zip(groups, members)):
        if k in split:
            kept_groups += [Group(texts=[t], prompt_text=g.prompt_text) for t in g.texts or []]
            kept_members += [[i] for i in m]
        else:
            kept_groups.append(g)
            kept_members.append(m)
    return scorer.prepare(kept_groups), kept_members


# Rendered-chat markup a policy's prompt may carry (ChatML: SmolLM2, Qwen; Llama 3), for judges, which read turns.
_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?:<\|im_end\|>\n?|$)", re.S)
_LLAMA3 = re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n(.*?)(?:<\|eot_id\|>|$)", re.S)
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", "<|end|>", "<end_of_turn>")


def derender(text: str) -> list[dict[str, str]]:
    """A rendered prompt back as chat messages (ChatML or Llama 3 markup); other text is one user turn. A trailing
    generation cue (an empty assistant turn) is dropped."""
    for pattern in (_CHATML, _LLAMA3):
        turns = [{"role": r, "content": c.strip()} for r, c in pattern.findall(text)]
        if turns:
            if turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
                turns = turns[:-1]
            if turns:
                return turns
    return [{"role": "user", "content": text.strip()}]


def judge_query_groups(query: list[str], prompts: list[str] | None) -> tuple[list[Group], list[list[int]]]:
    """``/get_reward`` for a judge: each query becomes its prompt (read back into turns) and its reply (the text
    after the prompt, end-of-turn markup removed), one group per query."""
    if prompts is None:
        raise HTTPException(400, "a judge needs the prompt and the reply apart: send 'prompts' (OpenRLHF sends them) "
                                 "beside 'query'")
    groups = []
    for i, (q, p) in enumerate(zip(query, prompts)):
        if not p or not q.startswith(p):
            raise HTTPException(400, f"query[{i}] does not start with prompts[{i}]; a judge needs the reply as the "
                                     "text after the prompt")
        reply = q[len(p):]
        while (end := next((m for m in _END_MARKERS if reply.rstrip().endswith(m)), None)) is not None:
            reply = reply.rstrip()[:-len(end)]
        groups.append(Group(prompt=derender(p), completions=[[{"role": "assistant", "content": reply.strip()}]],
                            source=f"query[{i}]"))
    return groups, [[i] for i in range(len(query))]


def pad_eos_stripper(scorer: Scorer):
    """``--strip-pad-eos``: a function removing runs of the reward tokenizer's pad and EOS text from the start and
    the end of a query, as OpenRLHF's ``serve_rm`` did up to 0.8.0 (``strip_sequence``); the end-of-turn marker is
    then completed as for any rendered text."""
    tokenizer = getattr(getattr(scorer, "encoder", None), "tokenizer", None)
    if tokenizer is None:
        raise UserError("--strip-pad-eos needs a classifier reward model (its tokenizer's pad and EOS tokens); a "
                        "judge reads the reply after the prompt and drops end-of-turn markup by itself")
    tokens = "|".join(re.escape(t) for t in {tokenizer.pad_token, tokenizer.eos_token} if t)
    if not tokens:
        raise UserError("--strip-pad-eos: this tokenizer has neither a pad nor an EOS token")
    head, tail = re.compile(f"\\A(?:{tokens})+"), re.compile(f"(?:{tokens})+\\Z")  # \Z, not $: "$" also matches before a final newline

    def strip(text: str, end: bool = True) -> str:
        text = head.sub("", text)
        return tail.sub("", text) if end else text

    return strip


def end_of_turn_flags(scorer: Scorer, texts: list[str]) -> list[int]:
    """Per rendered text, 1 when the server completes its end-of-turn marker (``complete_turn``), else 0."""
    encoder = getattr(scorer, "encoder", None)
    if encoder is None or not getattr(scorer, "complete_turn", False):
        return [0] * len(texts)
    return [int(encoder.complete_turn(t)[1]) for t in texts]


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
    if body.steps is not None:
        row["steps"] = body.steps
    try:  # the same parsing as `rewardkit score` rows (text or messages, prompt stripped from completions)
        return parse_score_row(row, "request body", hint="")
    except DataError as e:
        raise HTTPException(422, str(e)) from None


def _plain(value: Content | None) -> Any:
    return value if value is None or isinstance(value, str) else [_message(m) for m in value]


def _message(m: ChatMessage) -> dict[str, Any]:
    """A message as the readers take it (``rewardkit.data.readers.parse_messages`` normalises content parts)."""
    return m.model_dump(exclude_none=True)


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
