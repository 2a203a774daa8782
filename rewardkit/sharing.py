"""Prefix sharing and packing: each prompt is computed once, and no token position is padding.

A *group* is one prompt's K completions (K = 2 for a pair), given as their full token sequences
(prompt + completion, exactly as ``rewardkit.batching.Encoder`` produces them). Its shared prefix
is the longest common token prefix of the K sequences, capped so every completion keeps at least
one token. A group is laid out as ``[prefix][completion 1]…[completion K]``: prefix positions are
0…P−1 and every completion continues from P; each completion attends to the prefix and causally
to itself, never to a sibling. Because attention is causal, the prefix's hidden states do not
depend on what follows it, so every completion's last hidden state — where the reward of eq. 1–2
is read — equals that of the model run on (prompt + completion) alone: the result is the plain
padded computation up to fp32 rounding (tested to 1e-4 relative on rewards and gradients,
``tests/test_sharing.py``). Siblings truncated differently just share a shorter prefix.

Groups are packed whole into rows of at most ``max_tokens_per_row`` tokens (first-fit decreasing;
a group longer than the budget gets a row of its own); by default everything is one row (on the
``flex`` route, rows of at most ``FLEX_MAX_ROW_TOKENS``), so no position is padding. Packing only
decides the tensor layout of one forward pass: the caller decides which groups are in it, so the
examples sharing an optimizer step do not change.

Attention routes (one interface; ``route="auto"`` picks by device):

- ``segments`` (CPU default): the model's own linear layers run over the packed rows, and attention
  runs per group and block — the prefix causally, then each completion over [prefix; itself] —
  varlen attention for CPU. Attention work is P²/2 + Σ C_k (P + C_k) per group (prefix P,
  completions C_k), not T² over the row nor G² over the group.
- ``flex`` (CUDA default): FlexAttention with a ``BlockMask`` over the whole row (group id,
  completion id, causal), compiled; fully masked blocks are skipped. The kernel is compiled for
  static shapes, so its inputs are padded to a power-of-two ladder of shapes (``flex_shape``):
  a handful of compilations per run instead of one per micro-batch. On CPU it runs uncompiled
  (a reference implementation that materialises scores); the tests run it there for exactness only.
- ``dense``: one SDPA call per row with a (T×T) boolean mask. Exact but pays T² per row; kept as a
  measurement baseline.

Measured on this CPU (1 thread, SDPA fwd+bwd of one SmolLM2 layer's attention: 9 heads × 64, GQA 3,
six groups of 200–420 tokens, 1,910 tokens in one row): dense block mask 0.41 s, per-group 0.075 s,
per-group with ``is_causal`` instead of a mask 0.072 s. The CPU SDPA kernel does not skip fully
masked blocks, so ``dense`` pays for every cross-group block; ``segments`` is 5.5× faster and
exact. Within a group, one call with the (G × G) prefix-sharing mask also pays for
the completion-to-sibling blocks; computing the prefix block and each completion's block separately
is 1.1–1.5× faster fwd+bwd (2 threads, groups of 150–500 prefix tokens and 2–4 completions of
50–200), and cut attention from 2.3 s to 1.5 s of self time in ``benchmarks/profile_step.py``.
Reusing the prefix as a KV cache (prompt pass, then K completions with the cached keys) does the
same useful work but needs two passes and pads the completions to their longest, so it cannot beat
``segments`` on CPU; it is not implemented.

Mechanics: the backbone's attention is dispatched by name through transformers'
``AttentionInterface``. On first use the model's attention implementation is renamed to
``rewardkit_shared:<original>``, a dispatcher that runs the original implementation unchanged
unless a packed layout is passed in the call's keyword arguments (which transformers forwards to
every attention call, also when gradient checkpointing recomputes a layer). The private name is
not saved with the model (transformers strips ``_attn_implementation_internal`` on save).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rewardkit.batching import pad_batch
from rewardkit.blocks import head_scores, transformer_blocks

logger = logging.getLogger("rewardkit")

ROUTES = ("auto", "segments", "flex", "dense", "padded")  # "padded": the plain path (shared=False)
_PREFIX = "rewardkit_shared:"
# Decoder-only families whose only cross-token operation is attention through the attention
# interface and whose positions come from position_ids (RoPE). Others fall back to the plain path.
# Sliding windows and logit soft-capping reach the attention call as its ``sliding_window`` / ``softcap`` arguments,
# which every route implements (Gemma 2/3 alternate sliding and full layers).
SHARING_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"})
# The flex route's shape ladder (``flex_shape``): the smallest padded row width, and the default
# row budget of that route. 16,384 is the GPU scoring budget (``inference.forward_token_budget``),
# so default training and scoring passes stay one row; the cap bounds the ladder's top and the
# (width × width) mask that ``create_block_mask`` evaluates.
FLEX_MIN_WIDTH = 1024
FLEX_MAX_ROW_TOKENS = 16384
# Compiled entries kept for the flex kernel: the ladder's shapes up to the cap (5 widths) times the
# autograd modes a run calls it in (grad for training, no_grad / inference_mode for evaluation),
# each a separate entry; dynamo's global default of 8 would send the later ones to the unfused path.
FLEX_RECOMPILE_LIMIT = 32


# ---------------------------------------------------------------------------------------------------
# Layout


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Longest common token prefix of the group, shorter than every sequence (each completion keeps ≥ 1 token)."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence of a group needs at least one token")
    cap = min(len(s) for s in sequences) - 1
    first = sequences[0]
    n = 0
    while n < cap and all(s[n] == first[n] for s in sequences[1:]):
        n += 1
    return n


@dataclass
class GroupSegment:
    """One group's place in a packed row and the lengths of its blocks."""

    row: int
    start: int
    length: int
    spans: tuple[int, ...]  # (prefix length, completion 1 length, …)

    @property
    def mask(self) -> torch.Tensor:
        """bool (G, G): True where the query may attend to the key (the pattern the segments route computes)."""
        owner = [k for k, n in enumerate(self.spans) for _ in range(n)]
        return group_mask(torch.tensor(owner))


@dataclass
class PackedLayout:
    """Tensors of one packed forward pass and where each completion's reward is read."""

    input_ids: torch.Tensor  # (rows, width)
    position_ids: torch.Tensor  # (rows, width)
    owner: torch.Tensor  # (rows, width): 0 prefix, k ≥ 1 completion k, −1 padding
    group_id: torch.Tensor  # (rows, width): index of the group, −1 padding
    end_row: torch.Tensor  # (completions,) row of each completion's last token, group-major order
    end_col: torch.Tensor  # (completions,) column of it
    counts: list[int]  # completions per group
    segments: list[GroupSegment]
    real_tokens: int  # Σ sequence lengths (the prompt counted once per completion)
    unique_tokens: int  # tokens actually computed (each prefix once)
    route: str = "segments"
    # Run the last block's MLP only at the positions whose reward is read (``packed_forward``); False runs it
    # at every position (the reference the exactness test compares with).
    prune_last_mlp: bool = True
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def to(self, device: torch.device | str) -> PackedLayout:
        for name in ("input_ids", "position_ids", "owner", "group_id", "end_row", "end_col"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def width(self) -> int:
        return self.input_ids.shape[1]

    @property
    def attention_calls(self) -> int:
        """Attention layer calls that computed this layout (``group_rewards`` checks that the packed path ran).
        Kept in ``_cache``, which a wrapper's shallow copy of the layout (``dataclasses.replace``) shares."""
        return self._cache.get("attention_calls", 0)

    @property
    def flex_shape(self) -> tuple[int, int]:
        """(rows, width) the flex route pads its attention inputs to (``flex_shape``)."""
        return flex_shape(self.input_ids.shape[0], self.width)


def layout_group(sequences: list[list[int]], reads: list[list[int]] | None = None
                 ) -> tuple[list[int], list[int], list[int], list[int]]:
    """(tokens, positions, owner, read offsets) of one group laid out as [prefix][c1]…[cK]. The read offsets are
    each completion's last token, or with ``reads`` the given offsets of each sequence (a process reward model's
    step ends; one inside the shared prefix is read there, where every sibling's hidden state is the same)."""
    p = shared_prefix_length(sequences)
    tokens, positions, owner = list(sequences[0][:p]), list(range(p)), [0] * p
    ends = []
    for k, seq in enumerate(sequences, start=1):
        start = len(tokens)
        tail = seq[p:]
        tokens += tail
        positions += range(p, len(seq))
        owner += [k] * len(tail)
        for offset in (reads[k - 1] if reads is not None else [len(seq) - 1]):
            if not 0 <= offset < len(seq):
                raise ValueError(f"read offset {offset} outside a sequence of {len(seq)} tokens")
            ends.append(offset if offset < p else start + offset - p)
    return tokens, positions, owner, ends


def group_mask(owner: torch.Tensor) -> torch.Tensor:
    """Causal, and a completion token sees only the prefix (owner 0) and its own completion."""
    n = owner.shape[0]
    causal = torch.ones(n, n, dtype=torch.bool, device=owner.device).tril()
    return causal & ((owner[None, :] == 0) | (owner[None, :] == owner[:, None]))


def pack_rows(lengths: list[int], max_tokens_per_row: int | None) -> list[list[int]]:
    """First-fit decreasing: indices of groups per row, each row ≤ budget (an over-long group alone)."""
    if max_tokens_per_row is None:
        return [list(range(len(lengths)))] if lengths else []
    if max_tokens_per_row < 1:
        raise ValueError(f"max_tokens_per_row must be at least 1, got {max_tokens_per_row}")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_tokens_per_row - lengths[i])
    return rows


def flex_shape(rows: int, width: int) -> tuple[int, int]:
    """(rows, width) the flex route computes attention at: each up to a power of two, width ≥ ``FLEX_MIN_WIDTH``.

    The kernel is compiled for static shapes (``dynamic=False``), and the packed width changes with
    every micro-batch: compiled at the exact shape, it recompiled per batch and, past dynamo's
    recompile limit, fell back to the unfused path that materialises every score (one epoch of HH
    helpful-base in 4-record micro-batches has 551 distinct widths, ``tests/test_sharing.py``; 4 on
    this ladder). Under the default row cap there are 5 widths, 1,024 … 16,384; rows change only
    past the cap. Only attention's inputs are padded, not the layout, so the model's other layers
    do no extra work. The added positions follow the layout's padding convention (each its own
    group, seeing only itself): they come after every real token of a row, or in rows of their
    own, so no real token can see them, and FlexAttention visits one 128 × 128 block per 128 of them.
    """
    if rows < 1 or width < 1:
        raise ValueError(f"a packed layout has at least one row and one column, got {rows} × {width}")
    return 1 << (rows - 1).bit_length(), max(FLEX_MIN_WIDTH, 1 << (width - 1).bit_length())


def row_budget(route: str, max_tokens_per_row: int | None) -> int | None:
    """Tokens per packed row for a route: the caller's budget, or for ``flex`` by default ``FLEX_MAX_ROW_TOKENS``."""
    if max_tokens_per_row is None and route == "flex":
        return FLEX_MAX_ROW_TOKENS
    return max_tokens_per_row


def build_layout(groups: list[list[list[int]]], pad_id: int, max_tokens_per_row: int | None = None,
                 padding_side: str = "right", reads: list[list[list[int]]] | None = None) -> PackedLayout:
    """Lay out groups into packed rows; rewards come back in the order of ``groups`` (with ``reads``: every read
    offset of every sequence, group-major, in the order given)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {padding_side!r}")
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("group_rewards needs at least one group, and every group at least one sequence")
    laid = [layout_group(g, reads[i] if reads is not None else None) for i, g in enumerate(groups)]
    rows = pack_rows([len(t) for t, *_ in laid], max_tokens_per_row)
    width = max(sum(len(laid[i][0]) for i in row) for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    pos = torch.zeros(shape, dtype=torch.long)
    own = torch.full(shape, -1, dtype=torch.long)
    gid = torch.full(shape, -1, dtype=torch.long)
    ends: list[tuple[int, int]] = [(0, 0)] * sum(len(t[3]) for t in laid)
    first_completion = [0]
    for t in laid:
        first_completion.append(first_completion[-1] + len(t[3]))
    segments = []
    for r, row in enumerate(rows):
        used = sum(len(laid[i][0]) for i in row)
        col = width - used if padding_side == "left" else 0
        for i in sorted(row):  # within a row, keep the callers' order (deterministic layout)
            tokens, positions, owner, local_ends = laid[i]
            span = slice(col, col + len(tokens))
            ids[r, span] = torch.tensor(tokens)
            pos[r, span] = torch.tensor(positions)
            own[r, span] = torch.tensor(owner)
            gid[r, span] = i
            for k, e in enumerate(local_ends):
                ends[first_completion[i] + k] = (r, col + e)
            spans = (owner.count(0), *(owner.count(k) for k in range(1, len(groups[i]) + 1)))
            segments.append(GroupSegment(r, col, len(tokens), spans))
            col += len(tokens)
    real = sum(len(s) for g in groups for s in g)
    return PackedLayout(ids, pos, own, gid, torch.tensor([e[0] for e in ends]), torch.tensor([e[1] for e in ends]),
                        [len(g) for g in groups], segments, real, sum(len(t) for t, *_ in laid))


# ---------------------------------------------------------------------------------------------------
# Attention routes


def _completion_mask(prefix: int, length: int, device: torch.device, window: int | None = None) -> torch.Tensor:
    """(length × prefix + length) bool: completion token i sees the whole prefix and its own tokens ≤ i; with a
    sliding ``window``, only keys whose position is within it (transformers' ``kv > q − window``). Columns are
    positions: the prefix is 0…P−1 and the completion continues at P, as in the plain sequence."""
    mask = torch.ones(length, prefix + length, dtype=torch.bool, device=device).tril(prefix)
    if window is not None:
        query_pos = torch.arange(prefix, prefix + length, device=device)[:, None]
        mask &= torch.arange(prefix + length, device=device)[None, :] > query_pos - window
    return mask


def _prefix_mask(prefix: int, device: torch.device, window: int | None) -> torch.Tensor | None:
    """The prefix block's mask: None for plain causal (SDPA's ``is_causal``), else causal within the window."""
    if window is None or window >= prefix:
        return None
    pos = torch.arange(prefix, device=device)
    return (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - window)


CPU_BF16_FP32_ATTENTION_BELOW = 512  # query-block length under which CPU bf16 training attention runs in fp32


def _attend(q, k, v, mask: torch.Tensor | None, causal: bool, scaling, dropout, enable_gqa: bool,
            softcap: float | None) -> torch.Tensor:
    """One block's attention: SDPA, or with logit soft-capping (Gemma 2) the eager computation transformers runs
    for it (scores·scale → cap·tanh(·/cap) → mask → softmax in fp32 → dropout → ·V).

    Under CPU bf16 autocast (training), a block with fewer than ``CPU_BF16_FP32_ATTENTION_BELOW`` queries runs SDPA
    in fp32 instead of on autocast's bf16 casts: there the bf16 flash-attention backward is slower than the fp32 one for the short
    blocks packing makes (SmolLM2 shapes, 2 threads, AMD EPYC with avx512_bf16: a 64-query completion over 300 keys
    3.1 vs 2.1 ms forward+backward, 32 over 200 1.2 vs 0.9; equal at 512 causal, bf16 ahead from 1,024), while
    the forward alone is equal either way (a 200-query block over 800 keys: equal fwd+bwd too; longer key
    spans and other CPUs, AMX among them, were not measured). Its inputs are taken as they arrive (fp32 after a Llama's rotary
    embedding; autocast would round them to bf16) and its output is rounded to bf16, as the bf16 kernel's is.
    """
    if (softcap is None and q.device.type == "cpu" and q.shape[-2] < CPU_BF16_FP32_ATTENTION_BELOW
            and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
        with torch.autocast("cpu", enabled=False):
            return _attend(q.float(), k.float(), v.float(), mask, causal, scaling, dropout, enable_gqa,
                           None).to(torch.bfloat16)
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                              dropout_p=dropout, scale=scaling, enable_gqa=enable_gqa)
    if enable_gqa:
        k, v = (t.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3) for t in (k, v))
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scaling is None else scaling)
    scores = torch.tanh(scores / softcap) * softcap
    if causal and mask is None:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(F.dropout(weights, p=dropout, training=dropout > 0), v)


def _group_attention(q, k, v, spans: tuple[int, ...], masks: list[torch.Tensor], prefix_mask: torch.Tensor | None,
                     scaling, dropout, enable_gqa: bool, softcap: float | None = None) -> torch.Tensor:
    """One group's attention, block by block: the prefix causally, then each completion over [prefix; itself].

    The same result as one SDPA call with the group's (G × G) mask, without computing the
    completion-to-sibling blocks the mask would zero out (the CPU kernel does not skip masked
    blocks): measured 1.1–1.5× faster fwd+bwd on SmolLM2 shapes, 2 threads. A sliding-window layer's
    masks also bound each query's keys to its window (``_completion_mask``, ``_prefix_mask``).
    """
    prefix = spans[0]
    qs, ks, vs = q.split(spans, 1), k.split(spans, 1), v.split(spans, 1)
    parts = []
    if prefix:
        parts.append(_attend(qs[0][None], ks[0][None], vs[0][None], prefix_mask, True, scaling, dropout, enable_gqa,
                             softcap)[0])
    for qc, kc, vc, mask in zip(qs[1:], ks[1:], vs[1:], masks):
        kk, vv = (torch.cat([ks[0], kc], 1), torch.cat([vs[0], vc], 1)) if prefix else (kc, vc)
        parts.append(_attend(qc[None], kk[None], vv[None], mask, False, scaling, dropout, enable_gqa, softcap)[0])
    return torch.cat(parts, 1)


def _segment_plan(layout: PackedLayout, device: torch.device, window: int | None = None
                  ) -> list[list[tuple[int, Any]]]:
    """Per row, its pieces along the sequence: (length, None) for padding, (length, (spans, completion
    masks, prefix mask)) for a group. Built on the first layer's call and reused by every other layer of the same
    sliding window (None: full attention)."""
    key = ("segments", window)
    if key not in layout._cache:
        plan = []
        for r in range(layout.input_ids.shape[0]):
            pieces, cursor = [], 0
            for seg in (s for s in layout.segments if s.row == r):  # in order, maybe after a left-padding gap
                if seg.start > cursor:
                    pieces.append((seg.start - cursor, None))
                masks = [_completion_mask(seg.spans[0], c, device, window) for c in seg.spans[1:]]
                pieces.append((seg.length, (seg.spans, masks, _prefix_mask(seg.spans[0], device, window))))
                cursor = seg.start + seg.length
            if cursor < layout.width:
                pieces.append((layout.width - cursor, None))
            plan.append(pieces)
        layout._cache[key] = plan
    return layout._cache[key]


def _segments_attention(layout: PackedLayout, query, key, value, scaling, dropout, window: int | None = None,
                        softcap: float | None = None) -> torch.Tensor:
    """Per-group attention on the packed rows (varlen attention for CPU); padding positions output 0.

    Rows are cut into their segments with ``split`` rather than one slice per group: the backward
    of a split is one ``cat``, while each slice's backward would zero-fill a full-size gradient and
    add it to the others.
    """
    enable_gqa = key.shape[1] != query.shape[1]
    out_rows = []
    for pieces, q_row, k_row, v_row in zip(_segment_plan(layout, query.device, window), query.unbind(0),
                                           key.unbind(0), value.unbind(0)):
        sizes = [n for n, _ in pieces]
        parts = [_group_attention(q, k, v, *group, scaling, dropout, enable_gqa, softcap) if group
                 else q.new_zeros(q.shape)
                 for q, k, v, (_, group) in zip(q_row.split(sizes, 1), k_row.split(sizes, 1), v_row.split(sizes, 1),
                                                pieces)]
        out_rows.append(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
    return torch.stack(out_rows)


def _row_mask(layout: PackedLayout, window: int | None = None) -> torch.Tensor:
    """(rows, 1, T, T) boolean mask of the whole row; a padding position attends to itself (no NaN)."""
    if ("dense", window) not in layout._cache:
        gid, own = layout.group_id, layout.owner
        t = gid.shape[1]
        idx = torch.arange(t, device=gid.device)
        causal = idx[None, :] <= idx[:, None]
        same_group = gid[:, :, None] == gid[:, None, :]
        sees = (own[:, None, :] == 0) | (own[:, None, :] == own[:, :, None])
        mask = causal[None] & same_group & sees & (gid[:, :, None] >= 0)
        if window is not None:
            pos = layout.position_ids
            mask &= pos[:, None, :] > pos[:, :, None] - window
        mask |= torch.eye(t, dtype=torch.bool, device=gid.device)[None] & (gid[:, :, None] < 0)
        layout._cache[("dense", window)] = mask[:, None]
    return layout._cache[("dense", window)]


def compile_options(compile_fn: Any = None) -> dict[str, Any]:
    """The keyword arguments the flex kernel is compiled with, as far as this torch's ``torch.compile`` takes them.

    Static shapes give the best kernels (``flex_shape`` keeps their number small). ``recompile_limit`` and
    ``isolate_recompiles`` (per-function budget, not spent by a model whose own attention is compiled) arrived in
    torch in spring 2026; passed to an older ``torch.compile`` they raise ``TypeError`` on every packed forward.
    Without them the global dynamo limit is raised instead (``_raise_global_recompile_limit``).
    """
    import inspect

    params = inspect.signature(compile_fn or torch.compile).parameters
    options: dict[str, Any] = {"dynamic": False}
    if "recompile_limit" in params:
        options["recompile_limit"] = FLEX_RECOMPILE_LIMIT
    if "isolate_recompiles" in params:
        options["isolate_recompiles"] = True
    return options


def _raise_global_recompile_limit() -> None:
    """Older torch: one process-wide recompile limit (``recompile_limit``, earlier ``cache_size_limit``), raised to
    the flex ladder's need so its later shapes do not fall to the unfused path."""
    import torch._dynamo

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), FLEX_RECOMPILE_LIMIT))
            return


# Where the flex kernel is compiled, and with which backend (the uncompiled reference elsewhere: exact, slow).
# Module settings so a test can compile on CPU with a backend that fails, as a GPU without a working compiler does.
COMPILE_DEVICES = ("cuda",)
COMPILE_BACKEND: Any = "inductor"
# Why compiling the flex kernel failed in this process (then the flex route runs as ``segments``), or None.
_flex_failed: list[str] = []


@functools.cache
def _compiled_flex(backend: Any):
    from torch.nn.attention.flex_attention import flex_attention

    options = compile_options()
    if "recompile_limit" not in options:
        _raise_global_recompile_limit()
    return torch.compile(flex_attention, backend=backend, **options)


def _root_cause(error: BaseException) -> str:
    """The innermost error of a chain (dynamo wraps a backend's own error), as one line."""
    while (inner := getattr(error, "inner_exception", None) or error.__cause__) is not None and inner is not error:
        error = inner
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _flex_kernel(device: torch.device):
    """Compiled where ``COMPILE_DEVICES`` says (GPU: the fast path); the uncompiled reference elsewhere."""
    if device.type in COMPILE_DEVICES:
        return _compiled_flex(COMPILE_BACKEND)
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def _block_mask(layout: PackedLayout, device: torch.device, window: int | None = None):
    """The BlockMask at ``layout.flex_shape``: the layout's own padding convention covers the added positions;
    a sliding ``window`` bounds each query to keys at positions within it."""
    if ("flex", window) not in layout._cache:
        from torch.nn.attention.flex_attention import create_block_mask

        rows, width = layout.flex_shape
        grow = (0, width - layout.width, 0, rows - layout.input_ids.shape[0])
        gid, own = F.pad(layout.group_id, grow, value=-1), F.pad(layout.owner, grow, value=-1)
        # Padding gets a group of its own per position (−2 − index) so every query row has a key.
        idx = torch.arange(gid.shape[1], device=gid.device)
        gid = torch.where(gid >= 0, gid, -2 - idx[None, :])
        pos = F.pad(layout.position_ids, grow, value=0)

        def mask_mod(b, h, q, kv):
            return (kv <= q) & (gid[b, q] == gid[b, kv]) & ((own[b, kv] <= 0) | (own[b, kv] == own[b, q]))

        def window_mod(b, h, q, kv):
            return mask_mod(b, h, q, kv) & ((pos[b, kv] > pos[b, q] - window) | (gid[b, q] < 0))

        layout._cache[("flex", window)] = create_block_mask(mask_mod if window is None else window_mod, gid.shape[0],
                                                            None, gid.shape[1], gid.shape[1], device=device)
    return layout._cache[("flex", window)]


def _flex_attention(layout: PackedLayout, query, key, value, scaling, window: int | None = None,
                    softcap: float | None = None) -> torch.Tensor:
    """FlexAttention at ``layout.flex_shape`` (inputs padded to it, output cut back to the layout)."""
    block_mask = _block_mask(layout, query.device, window)
    score_mod = None
    if softcap is not None:
        def score_mod(score, b, h, q, kv):
            return torch.tanh(score / softcap) * softcap
    enable_gqa = key.shape[1] != query.shape[1]
    rows, width = query.shape[0], query.shape[2]
    flex_rows, flex_width = layout.flex_shape
    if (flex_rows, flex_width) != (rows, width):
        # F.pad's pairs run from the last dimension: head dim, tokens, heads, rows.
        grow = (0, 0, 0, flex_width - width, 0, 0, 0, flex_rows - rows)
        query, key, value = F.pad(query, grow), F.pad(key, grow), F.pad(value, grow)
    out = _flex_kernel(query.device)(query, key, value, block_mask=block_mask, score_mod=score_mod, scale=scaling,
                                     enable_gqa=enable_gqa)
    return out[:rows, :, :width]


def _dispatch(base: str, module: nn.Module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    layout: PackedLayout | None = kwargs.pop("rewardkit_layout", None)
    if layout is None:  # a plain call: the model's own attention, untouched
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        if base == "eager":
            from importlib import import_module

            fn = import_module(type(module).__module__).eager_attention_forward
        else:
            fn = ALL_ATTENTION_FUNCTIONS[base]
        # Implementations may read their own name from the config (transformers' flash integration picks its
        # kernel by ``module.config._attn_implementation``): the plain call sees the name it was loaded with.
        config = getattr(module, "config", None)
        if config is None or config._attn_implementation == base:
            return fn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        routed, config._attn_implementation = config._attn_implementation, base
        try:
            return fn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        finally:
            config._attn_implementation = routed
    if kwargs.get("s_aux") is not None:
        raise RuntimeError("prefix sharing does not implement attention with sink logits (s_aux); use shared=False")
    # A sliding-window layer (Mistral, Qwen 2, Gemma 2/3) names its window; Gemma 2 soft-caps its logits.
    window, softcap = kwargs.get("sliding_window"), kwargs.get("softcap")
    layout._cache["attention_calls"] = layout.attention_calls + 1
    if layout.route == "flex" and not _flex_failed:
        if dropout:
            raise RuntimeError("the flex route does not implement attention dropout; use route='segments'")
        try:
            out = _flex_attention(layout, query, key, value, scaling, window, softcap)
        except Exception as e:  # compiling failed (old torch, no Triton, an inductor bug): segments is exact too
            if query.device.type not in COMPILE_DEVICES:
                raise  # the uncompiled reference failing is a bug, not a missing compiler
            _flex_failed.append(_root_cause(e))
            logger.warning("the flex attention kernel did not compile (%s); prefix sharing runs on the 'segments' "
                           "route instead for the rest of this process (exact, slower on long rows)", _flex_failed[0])
            out = _segments_attention(layout, query, key, value, scaling, dropout, window, softcap)
    elif layout.route in ("flex", "segments"):  # flex after a failed compile
        out = _segments_attention(layout, query, key, value, scaling, dropout, window, softcap)
    else:
        out = _attend(query, key, value, _row_mask(layout, window), False, scaling, dropout,
                      key.shape[1] != query.shape[1], softcap)
    return out.transpose(1, 2).contiguous(), None


def _install(config) -> None:
    """Route the model's attention through the dispatcher (idempotent; plain calls are unchanged)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    base = config._attn_implementation or "eager"
    if base.startswith(_PREFIX):
        return
    name = _PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(name, functools.partial(_dispatch, base))
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    config._attn_implementation = name


# ---------------------------------------------------------------------------------------------------
# Public API


def sharing_unsupported_reason(model: nn.Module) -> str | None:
    """Why prefix sharing would not be exact for this model, or None if it is."""
    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    hf = model.hf
    cfg = hf.config
    if cfg.model_type not in SHARING_MODEL_TYPES:
        return (f"model type '{cfg.model_type}' is not one whose attention is known to take custom layouts "
                f"(supported: {', '.join(sorted(SHARING_MODEL_TYPES))})")
    if not getattr(type(hf), "_supports_attention_backend", False):
        return f"{type(hf).__name__} does not dispatch attention through transformers' attention interface"
    if getattr(cfg, "use_bidirectional_attention", False):
        return "bidirectional attention is not implemented in the shared layout"
    if any(t not in ("full_attention", "sliding_attention") for t in getattr(cfg, "layer_types", None) or []):
        return "layers other than full and sliding-window attention are not implemented in the shared layout"
    return None


def supports_sharing(model: nn.Module) -> bool:
    """True when prefix sharing and packing compute exactly what the plain padded path computes."""
    return sharing_unsupported_reason(model) is None


def default_route(device: torch.device) -> str:
    return "flex" if device.type == "cuda" else "segments"


def rewards_at(model: nn.Module, hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Score head at the given (row, column) positions of the backbone's last hidden state → (n,) fp32 rewards."""
    model = getattr(model, "module", model)
    return head_scores(model.hf, hidden[rows, cols]).squeeze(-1)


def packed_forward(model: nn.Module, layout: PackedLayout) -> torch.Tensor:
    """Rewards of every completion of a layout, in group-major order (called by ``RewardModel.forward``)."""
    backbone = getattr(model.hf, model.hf.base_model_prefix)
    _install(model.hf.config)
    # A (rows, 1, 1, 1) placeholder 4D mask makes transformers skip building a T×T mask we would ignore.
    placeholder = torch.ones(layout.input_ids.shape[0], 1, 1, 1, dtype=torch.bool, device=layout.input_ids.device)
    with _last_mlp_at_read_positions(backbone, layout):
        out = backbone(input_ids=layout.input_ids, attention_mask=placeholder, position_ids=layout.position_ids,
                       use_cache=False, rewardkit_layout=layout)
    return rewards_at(model, out.last_hidden_state, layout.end_row, layout.end_col)


@contextlib.contextmanager
def _last_mlp_at_read_positions(backbone: nn.Module, layout: PackedLayout) -> Iterator[None]:
    """Run the last block's MLP only where a reward is read (each completion's last token).

    The reward reads one position per completion of the last hidden state, and after the last block's
    attention nothing mixes positions: its MLP (about three quarters of a Llama block's matmul work) at
    every other position computes values no reward reads. Hooks hand the MLP just the read positions and
    scatter its output back into a zero tensor, so the residual stream is exact where it is read and left
    unfinished elsewhere (the model's last hidden state at other positions is not meaningful on this path).
    The same positions' MLP input, weights and output are used, so rewards and gradients equal the full
    computation (tested). Off when the block is recomputed by gradient checkpointing (the recomputation
    would run without the hooks) or the model has no per-position ``mlp`` in its last block.
    """
    blocks = transformer_blocks(backbone)
    mlp = getattr(blocks[-1], "mlp", None) if blocks is not None and len(blocks) else None
    if (not layout.prune_last_mlp or mlp is None or getattr(backbone, "gradient_checkpointing", False)
            or getattr(blocks[-1], "gradient_checkpointing", False)):
        yield
        return
    # Each position once: a process reward model can read several rewards at one position (steps in the shared
    # prefix), and a repeated position would get its MLP output's gradient once per read.
    flat = torch.unique(layout.end_row * layout.width + layout.end_col)
    rows, cols = flat // layout.width, flat % layout.width
    shape: list[torch.Size] = []

    def gather(module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        shape.append(hidden.shape)
        return (hidden[rows, cols].unsqueeze(0), *args[1:])

    def scatter(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        full = out.new_zeros(shape.pop())
        return full.index_put((rows, cols), out[0])

    handles = [mlp.register_forward_pre_hook(gather), mlp.register_forward_hook(scatter)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


_warned: set[str] = set()


class GroupRewards(list):
    """What :func:`group_rewards` returns: the list of per-group reward tensors, and which path computed them.

    ``path`` is ``"shared"`` (prefix-shared, packed: set only after the model's attention layers consumed the
    packed layout, ``attention_calls``) or ``"padded"``; ``route`` the shared path's attention route; ``reason``
    why sharing was asked for but not taken (None otherwise). Callers record these (``ScoreResult.path``, a
    training report's ``prefix_sharing``), so a test can check the path it names really ran.
    """

    def __init__(self, rewards: list[torch.Tensor], path: str, route: str | None = None, reason: str | None = None):
        super().__init__(rewards)
        self.path, self.route, self.reason = path, route, reason


def group_rewards(model: nn.Module, groups: list[list[list[int]]], pad_id: int, *, shared: bool = True,
                  max_tokens_per_row: int | None = None, padding_side: str = "right",
                  route: str = "auto", all_heads: bool = False, reads: list[list[list[int]]] | None = None
                  ) -> GroupRewards:
    """Rewards r(x, y_k) (eq. 1–2) of each group's K completions, differentiable; one tensor of K per group.

    ``groups[g]`` holds the full token sequences (prompt + completion, already truncated) of one
    prompt's completions. ``shared=False`` is the plain path: all sequences padded into one batch.
    ``shared=True`` computes each group's common prefix once and packs groups into rows of at most
    ``max_tokens_per_row`` tokens (None: one row; ``FLEX_MAX_ROW_TOKENS`` on the flex route); it falls
    back to the plain path, with a one-line notice, for a model where it would not be exact
    (``supports_sharing``). ``route`` picks the attention implementation of the shared path (module
    docstring); "auto" picks by device. ``all_heads``: each group's tensor is (K, heads), every output of
    the score layer (ODIN's quality and length heads, ``rewardkit.heads``), instead of the reward alone.
    The result is a list that also says which path ran (:class:`GroupRewards`). ``reads[g][k]``: the offsets in
    sequence k of group g where rewards are read (a process reward model's step ends) instead of its last token;
    each group's tensor then holds every read of its sequences in order.
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    shared = shared and route != "padded"
    inner = getattr(model, "module", model)
    device = next(inner.parameters()).device
    reason = None
    if shared:
        reason = sharing_unsupported_reason(inner)
        if reason:
            if reason not in _warned:
                _warned.add(reason)
                logger.warning("prefix sharing off (plain padded batches instead): %s", reason)
            shared = False
    if shared:
        route = default_route(device) if route == "auto" else route
        layout = build_layout(groups, pad_id, row_budget(route, max_tokens_per_row), padding_side, reads).to(device)
        layout.route = route
        flat = model(None, None, packed=layout, all_heads=all_heads)
        if not layout.attention_calls:  # the rows would have been computed as plain causal sequences: wrong
            raise RuntimeError("the packed layout never reached the model's attention layers (transformers did not "
                               "forward it to the attention interface); use shared=False")
        ran = "segments" if route == "flex" and _flex_failed else route
        return GroupRewards(torch.split(flat, _reads_per_group(groups, reads)), "shared", route=ran,
                            reason=f"flex did not compile ({_flex_failed[0]})" if ran != route else None)
    seqs = [s for g in groups for s in g]
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("group_rewards needs at least one group, and every sequence at least one token")
    ids, mask = pad_batch(seqs, pad_id, padding_side)
    read = None
    if reads is not None:  # (row, column) of every read offset in the padded batch
        width = ids.shape[1]
        offsets = [(row, o + (width - len(seq) if padding_side == "left" else 0))
                   for row, (seq, seq_reads) in enumerate(zip(seqs, (r for g in reads for r in g)))
                   for o in seq_reads]
        read = (torch.tensor([r for r, _ in offsets], device=device), torch.tensor([c for _, c in offsets], device=device))
    flat = model(ids.to(device), mask.to(device), all_heads=all_heads, read=read)
    return GroupRewards(torch.split(flat, _reads_per_group(groups, reads)), "padded", reason=reason)


def _reads_per_group(groups: list[list[list[int]]], reads: list[list[list[int]]] | None) -> list[int]:
    return [len(g) for g in groups] if reads is None else [sum(map(len, r)) for r in reads]
