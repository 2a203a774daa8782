"""LLM-as-a-judge on any causal LM, scored from verdict-token probabilities (default) or sampled verdicts.

**Probability mode** (deterministic, graded, no sampling). The judge input is the chat-rendered
template with a generation prompt plus the template's ``answer_prefix``; the judge's verdict is the
next token(s). Each verdict string (plus ``verdict_suffix``) is tokenized *in that context*, exactly
as the model would emit it after the prompt, and cut to its shortest token prefix that no other
verdict shares: ``A``/``B`` and ``Yes``/``No`` are one token each on SmolLM2, while ``1`` vs ``10``
are told apart by the token after ``1`` (``]]`` vs ``0``). P(verdict) is the product of that
prefix's next-token probabilities (one extra cached forward step for multi-token prefixes), summed
over a verdict's spellings and renormalised over the verdict set. ``verdict_mass`` — the raw
probability on all verdicts together — is reported: a low mass means the model wanted to say
something else.

Rewards (so that σ(r1 − r2) is a probability, eq. 2):

* verifier: r = log P(Yes) − log P(No) = logit of the renormalised P(Yes) (GenRM-style);
* pointwise: r = expected rating Σ k·P(k);
* pairwise: per pair (i, j) the log-odds L_ij = log P(i better) − log P(j better). With both orders,
  L_ij = ½ [(log P(A) − log P(B) | i shown as A) + (log P(B) − log P(A) | i shown as B)]: the mean of
  the two log-odds, which cancels exactly a position bias that adds a constant to the log-odds of
  "A". Per completion, r_i = (1/K) Σ_j L_ij (the least-squares Bradley-Terry fit to the pairwise
  log-odds), so for a pair r = [L/2, −L/2] and r1 − r2 = L.

**Sampling mode**: n seeded samples per query, verdicts read by ``rewardkit.judges.parse`` (never
guessed; unparseable / ambiguous / invalid outputs are counted). Rewards are vote log-odds
log((v_yes + ½) / (v_no + ½)), (pairwise: votes for i across both orders), or the mean valid
rating; a query with no valid vote gives NaN ("undecided"), which evaluation counts as a tie.

Prompts longer than ``max_length`` tokens are cut field by field — the conversation from the left
(marked ``[…]``), then the responses from the end, shared equally — and every cut is counted.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rewardkit.batching import TruncationStats, length_sorted_batches, pad_batch
from rewardkit.data.record import PreferenceExample
from rewardkit.errors import UserError
from rewardkit.evaluate import metrics_from_rewards
from rewardkit.inference import Group, Prepared, ScoreResult, score
from rewardkit.judges.parse import majority, parse_verdict, vote
from rewardkit.judges.templates import (
    _UNSET,
    JudgeTemplate,
    conversation_text,
    load_template,
    render_chat,
    response_text,
)
from rewardkit.losses import sigmoid
from rewardkit.model import fit_max_length, load_causal_lm, resolve_backbone
from rewardkit.pooling import position_ids_from_mask

JUDGE_METADATA_FILE = "rewardkit_judge.json"
MODES = ("probability", "sample")
ORDERS = ("both", "random", "as_given")
_CUT = "[…]"


# ------------------------------------------------------------------------------------- verdict tokens


@dataclass(frozen=True)
class VerdictTokens:
    """Verdict labels and the token sequences whose probabilities make up each one."""

    labels: tuple[str, ...]
    candidates: tuple[tuple[int, ...], ...]  # shortest distinguishing token prefix of each spelling
    owners: tuple[int, ...]  # label index of each candidate
    spellings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "candidates": [list(c) for c in self.candidates],
                "owners": list(self.owners), "spellings": list(self.spellings)}


def resolve_verdict_tokens(tokenizer: PreTrainedTokenizerBase, template: JudgeTemplate) -> VerdictTokens:
    """Tokenize each verdict (+ suffix) right after a rendered judge prompt, then cut each to the shortest
    prefix no other label's verdict shares (what a reader of next-token probabilities needs)."""
    dummy = template.fill(prompt="Question?", response="Answer.", response_a="Answer one.", response_b="Answer two.")
    context = render_chat(tokenizer, template, dummy)
    ctx_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    full: list[tuple[int, str, tuple[int, ...]]] = []
    for owner, spellings in enumerate(template.verdicts.values()):
        for s in spellings:
            ids = tokenizer(context + s + template.verdict_suffix, add_special_tokens=False)["input_ids"]
            if ids[:len(ctx_ids)] != ctx_ids or len(ids) == len(ctx_ids):
                raise UserError(f"{template.source}: verdict {s!r} merges with the end of the judge prompt "
                                 f"(answer_prefix {template.answer_prefix!r}) into one token, so the model would not "
                                 "emit it as a separate token. End answer_prefix with a bracket or a newline, or move "
                                 "a trailing space into the verdict spellings (verdicts: {'Yes': [' Yes'], ...})")
            full.append((owner, s, tuple(ids[len(ctx_ids):])))
    chosen: list[tuple[int, str, tuple[int, ...]]] = []
    for owner, s, ids in full:
        others = [o_ids for o, _, o_ids in full if o != owner]
        n = next((k for k in range(1, len(ids) + 1) if all(o[:k] != ids[:k] for o in others)), None)
        if n is None:
            clash = next(t for o, t, o_ids in full if o != owner and o_ids[:len(ids)] == ids)
            raise UserError(f"{template.source}: verdicts {s!r} and {clash!r} are not distinguishable by their "
                             "tokens; set verdict_suffix (e.g. ']]') so that no verdict is a prefix of another")
        chosen.append((owner, s, ids[:n]))
    # Within one label, a spelling whose prefix extends another's is already counted by the shorter one.
    kept = [(o, s, ids) for o, s, ids in chosen
            if not any(o2 == o and ids2 != ids and ids[:len(ids2)] == ids2 for o2, _, ids2 in chosen)]
    seen, unique = set(), []
    for o, s, ids in kept:
        if (o, ids) not in seen:  # two spellings with the same prefix would count its mass twice
            seen.add((o, ids))
            unique.append((o, s, ids))
    return VerdictTokens(labels=tuple(template.verdicts), candidates=tuple(ids for _, _, ids in unique),
                         owners=tuple(o for o, _, _ in unique), spellings=tuple(s for _, s, _ in unique))


def _forward(model: PreTrainedModel, keep: int = 1, **kw: Any) -> Any:
    """Forward pass computing logits for the last ``keep`` positions only (0: all), where supported."""
    params = inspect.signature(getattr(model, "module", model).forward).parameters  # DDP wraps the model
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = keep
    if "cache" in kw and "cache" not in params:  # transformers < 5.24 spells it past_key_values
        kw["past_key_values"] = kw.pop("cache")
    return model(**kw)


def verdict_logprobs(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     verdicts: VerdictTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(label) per row, renormalised over the labels, and the raw log-mass of all verdicts.

    ``input_ids`` must be left-padded so the last column is every row's last real token. Positions
    count real tokens only, so padding changes nothing. Differentiable (used for GenRM training).
    Multi-token candidates continue from the prompt's KV cache: one short extra step, no re-encoding.
    """
    if bool((attention_mask[:, -1] == 0).any()):
        raise ValueError("verdict_logprobs needs left padding (the last column must be a real token)")
    cands = verdicts.candidates
    multi = [k for k, c in enumerate(cands) if len(c) > 1]
    out = _forward(model, input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask), use_cache=bool(multi))
    first = out.logits[:, -1].float().log_softmax(-1)
    cand_lp = first[:, [c[0] for c in cands]]
    if multi:
        b, m = input_ids.shape[0], len(multi)
        width = max(len(cands[k]) for k in multi) - 1
        pad = int(input_ids[0, 0]) if attention_mask[0, 0] == 0 else 0
        feed = torch.full((m, width), pad, dtype=torch.long, device=input_ids.device)
        target = torch.zeros((m, width), dtype=torch.long, device=input_ids.device)
        valid = torch.zeros((m, width), dtype=torch.bool, device=input_ids.device)
        for row, k in enumerate(multi):
            c = cands[k]
            feed[row, :len(c) - 1] = torch.tensor(c[:-1])
            target[row, :len(c) - 1] = torch.tensor(c[1:])
            valid[row, :len(c) - 1] = True
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        cache.batch_repeat_interleave(m)
        n_real = attention_mask.sum(-1).repeat_interleave(m)
        cont = _forward(
            model, keep=0, input_ids=feed.repeat(b, 1), cache=cache, use_cache=True,
            attention_mask=torch.cat([attention_mask.repeat_interleave(m, 0),
                                      torch.ones((b * m, width), dtype=attention_mask.dtype, device=input_ids.device)], 1),
            position_ids=n_real[:, None] + torch.arange(width, device=input_ids.device)[None])
        lp = cont.logits.float().log_softmax(-1).gather(-1, target.repeat(b, 1)[..., None]).squeeze(-1)
        extra = (lp * valid.repeat(b, 1)).sum(-1).view(b, m)
        cand_lp = cand_lp.index_add(1, torch.tensor(multi, device=cand_lp.device), extra)
    owners = torch.tensor(verdicts.owners, device=cand_lp.device)
    label_lp = torch.stack([cand_lp[:, owners == i].logsumexp(-1) for i in range(len(verdicts.labels))], -1)
    mass = label_lp.logsumexp(-1)
    return label_lp - mass[:, None], mass


# ------------------------------------------------------------------------------------- the judge


class Judge:
    """A causal LM with a judge template: builds judge prompts and reads verdicts.

    Use ``load_judge`` to build one from a model name; ``JudgeScorer`` turns it into a reward scorer.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: JudgeTemplate,
                 max_length: int = 1024, name: str = "judge"):
        if max_length < 32:
            raise UserError(f"judge max_length must be at least 32, got {max_length}")
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.max_length, self.name = max_length, name
        self.verdicts = resolve_verdict_tokens(tokenizer, template)
        self.reward_stats: dict[str, float] = {}  # a trained GenRM's held-out reward mean/std (rewardkit_judge.json)

    # ---- prompts

    def encode_queries(self, queries: list[dict[str, str]], with_answer_prefix: bool = True) -> list[list[int]]:
        """Token ids of judge prompts from field values (``prompt``, ``response``/``response_a``/``response_b``)."""
        return self.encode_queries_cut(queries, with_answer_prefix)[0]

    def encode_queries_cut(self, queries: list[dict[str, str]], with_answer_prefix: bool = True
                           ) -> tuple[list[list[int]], list[tuple[bool, bool]]]:
        """:meth:`encode_queries` and, per query, (conversation cut, a response cut) — all False if it fit."""
        texts = [render_chat(self.tokenizer, self.template, self.template.fill(**q), with_answer_prefix) for q in queries]
        ids = [list(s) for s in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        cuts = [(False, False)] * len(ids)
        for i, seq in enumerate(ids):
            if len(seq) > self.max_length:
                ids[i], cuts[i] = self._truncate(queries[i], len(seq), with_answer_prefix)
        return ids, cuts

    def _truncate(self, query: dict[str, str], length: int, with_answer_prefix: bool
                  ) -> tuple[list[int], tuple[bool, bool]]:
        tok = self.tokenizer
        used = [f for f in ("prompt", "response", "response_a", "response_b") if "{" + f + "}" in self.template.user]
        pieces = {f: tok(query[f], add_special_tokens=False)["input_ids"] for f in used}
        fixed = length - sum(len(p) for p in pieces.values())
        budget = self.max_length - fixed - 4 * len(used)  # room for the […] markers
        for _ in range(4):
            if budget < 8:
                raise UserError(f"the judge template alone takes {fixed} tokens; raise max_length "
                                 f"(now {self.max_length}) or shorten the template")
            keep = _allocate({f: len(p) for f, p in pieces.items()}, budget)
            values = dict(query)
            for f, n in keep.items():
                if n < len(pieces[f]):
                    text = tok.decode(pieces[f][len(pieces[f]) - n:] if f == "prompt" else pieces[f][:n])
                    values[f] = f"{_CUT} {text}" if f == "prompt" else f"{text} {_CUT}"
            text = render_chat(tok, self.template, self.template.fill(**values), with_answer_prefix)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= self.max_length:
                return list(ids), ("prompt" in keep and keep["prompt"] < len(pieces["prompt"]),
                                   any(keep[f] < len(pieces[f]) for f in keep if f != "prompt"))
            budget -= len(ids) - self.max_length
        raise UserError(f"could not fit a judge prompt into max_length={self.max_length}; raise it")

    # ---- probability mode

    @torch.inference_mode()
    def label_logprobs(self, sequences: list[list[int]], max_batch_tokens: int = 16384,
                       max_batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(N, labels) renormalised log P(label) and (N,) raw verdict mass, in input order."""
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        logp = np.zeros((len(sequences), len(self.verdicts.labels)))
        mass = np.zeros(len(sequences))
        batches = length_sorted_batches([len(s) for s in sequences], max_batch_tokens, max_batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"{self.template.kind} judge", unit="batch")
        for idx in batches:
            ids, mask = pad_batch([sequences[i] for i in idx], self.tokenizer.pad_token_id, "left")
            lp, m = verdict_logprobs(self.model, ids.to(device), mask.to(device), self.verdicts)
            logp[idx] = lp.double().cpu().numpy()
            mass[idx] = m.exp().double().cpu().numpy()
        self.model.train(was_training)
        return logp, mass

    # ---- sampling mode

    @torch.inference_mode()
    def sample(self, sequences: list[list[int]], n: int, *, temperature: float = 1.0, max_new_tokens: int = 64,
               seed: int = 0, max_batch_tokens: int = 16384, progress: bool = False) -> list[list[str]]:
        """n sampled replies per judge prompt. Each reply is drawn from its own random stream, seeded by ``seed``, the
        prompt's tokens and the reply's number: the same prompt gets the same replies whatever else is sampled in its
        batch (a server's batch mates, an eval's order), and the global RNG is left alone."""
        from transformers import LogitsProcessorList

        if n < 1 or temperature <= 0:
            raise UserError(f"sampling needs samples >= 1 and temperature > 0 (got {n}, {temperature})")
        device = next(self.model.parameters()).device
        out: list[list[str]] = [[] for _ in sequences]
        per_row = n * max_new_tokens
        batches = length_sorted_batches([(len(s) + max_new_tokens) * n for s in sequences], max_batch_tokens,
                                        max(1, max_batch_tokens // max(per_row, 1)))
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"{self.template.kind} judge (sampling)", unit="batch")
        for idx in batches:
            ids, mask = pad_batch([sequences[i] for i in idx], self.tokenizer.pad_token_id, "left")
            # each prompt n times in a row: row r is prompt idx[r // n], reply r % n
            ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
            generators = [torch.Generator(device=device).manual_seed(sample_seed(seed, sequences[i], j))
                          for i in idx for j in range(n)]
            gen = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                      logits_processor=LogitsProcessorList([GumbelSampler(generators, temperature)]),
                                      temperature=None, top_p=None, top_k=None, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id)
            texts = self.tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
            for row, i in enumerate(idx):
                out[i] = texts[row * n:(row + 1) * n]
        return out


def sample_seed(seed: int, prompt_ids: list[int], reply: int) -> int:
    """The seed of one sampled reply: a hash of the judge seed, the prompt's tokens and the reply's number."""
    import hashlib

    digest = hashlib.blake2b(np.asarray(prompt_ids, dtype=np.int64).tobytes(), digest_size=8,
                             key=f"{seed}:{reply}".encode()[:64]).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class GumbelSampler:
    """Temperature sampling with one random stream per row (a ``transformers`` logits processor, run under greedy
    decoding): argmax(logits / T + g) with g ~ Gumbel(0, 1) is a draw from softmax(logits / T) (the Gumbel-max
    trick), and each row's g comes from its own generator, so no row's draw depends on which rows share the batch
    (``torch.multinomial`` over the batch would consume one shared stream)."""

    def __init__(self, generators: list[torch.Generator], temperature: float):
        self.generators, self.temperature = generators, temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)))
        return scores.float() / self.temperature + gumbel


def _allocate(lengths: dict[str, int], budget: int) -> dict[str, int]:
    """Tokens to keep per field: the conversation gives way first (down to a quarter of the budget), then
    the responses share what is left equally (water-filling: short ones stay whole)."""
    responses = {f: n for f, n in lengths.items() if f != "prompt"}
    keep = dict(lengths)
    need = sum(lengths.values()) - budget
    if need <= 0:
        return keep
    if "prompt" in lengths:
        floor = min(lengths["prompt"], budget // 4)
        cut = min(need, lengths["prompt"] - floor)
        keep["prompt"] -= cut
        need -= cut
    if need > 0 and responses:
        room = sum(responses.values()) - need
        cap, left = 0, sorted(responses.values())
        for k, n in enumerate(left):  # the largest cap with Σ min(n_i, cap) <= room
            share = (room - sum(left[:k])) // (len(left) - k)
            if share < n:
                cap = share
                break
        else:
            cap = max(left)
        for f, n in responses.items():
            keep[f] = max(0, min(n, cap))
    return keep


def load_judge(model: str, kind: str | None = None, template: str | None = None,
               system_prompt: str | None = _UNSET, max_length: int | None = None, device: str = "cpu",
               dtype: str = "float32") -> Judge:
    """A judge on any causal LM: a hub id, local folder, ``.gguf`` file, built-in name (``smollm2-135m``),
    or a trained GenRM run folder (its ``rewardkit_judge.json`` supplies kind, template and max_length).
    ``dtype``: the weights' dtype (``rewardkit.model.DTYPES``: float32, bfloat16, float16)."""
    from rewardkit.checkpoint import check_finished_run

    check_finished_run(model, JUDGE_METADATA_FILE)
    source = resolve_backbone(model)
    meta_path = Path(source) / JUDGE_METADATA_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    kind = kind or meta.get("kind") or "pairwise"
    if meta and meta.get("kind") != kind:
        raise UserError(f"{model} was trained as a {meta['kind']} judge; run it as --judge {meta['kind']}")
    if meta and template is None:
        saved = dict(meta["template"])
        if system_prompt is not _UNSET:
            saved["system"] = system_prompt or None
        tpl = JudgeTemplate(**{**saved, "source": f"{model}/{JUDGE_METADATA_FILE}"})
    else:
        tpl = load_template(kind, template, system_prompt)
    hf, tokenizer = load_causal_lm(model, source, dtype)
    from rewardkit.inference import resolve_device

    length = fit_max_length(hf, max_length or meta.get("max_length", 1024), explicit=max_length is not None, name=model)
    judge = Judge(hf.to(resolve_device(device)).eval(), tokenizer, tpl, max_length=length, name=model)
    judge.reward_stats = {k: meta[k] for k in ("reward_mean", "reward_std") if meta.get(k) is not None}
    return judge


# ------------------------------------------------------------------------------------- scorer


@dataclass
class JudgeStats:
    queries: int = 0
    pairs_both_orders: int = 0
    flips: int = 0  # pairs whose preferred response changes when the order is swapped
    shown_a_wins: int = 0  # pairwise queries whose verdict is A (position bias: 0.5 is unbiased)
    pairwise_queries_decided: int = 0
    verdict_mass_sum: float = 0.0
    undecided: int = 0  # sampling: queries (pairwise: pairs) with no valid vote
    samples: Counter = field(default_factory=Counter)  # sampling: outcomes per status
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples"] = dict(self.samples)
        d["flip_rate"] = self.flips / self.pairs_both_orders if self.pairs_both_orders else None
        d["position_a_rate"] = (self.shown_a_wins / self.pairwise_queries_decided
                                if self.pairwise_queries_decided else None)
        d["mean_verdict_mass"] = self.verdict_mass_sum / self.queries if self.queries and not self.samples else None
        return d


class JudgeScorer:
    """A judge behind the scorer interface of ``rewardkit.inference`` (``prepare`` / ``run`` → ``ScoreResult``,
    ``name``, ``describe()``). Rewards are defined in this module's docstring.

    ``order`` (pairwise): ``both`` (each pair in both orders, combined), ``random`` (one seeded random order
    per pair), ``as_given`` (the record's first completion shown as A). Each result's ``details`` holds, per
    group, what the judge saw and said (P(A) per order, P(Yes), rating distribution, votes), and ``stats``
    the verdict statistics of that call (``JudgeStats``); the scorer itself keeps no per-call state.
    """

    def __init__(self, judge: Judge, *, mode: str = "probability", order: str = "both", samples: int = 5,
                 temperature: float = 1.0, max_new_tokens: int = 64, seed: int = 42, max_batch_tokens: int = 16384,
                 progress: bool = False, precision: Any = None):
        if mode not in MODES:
            raise UserError(f"judge mode must be one of {MODES}, got {mode!r}")
        if order not in ORDERS:
            raise UserError(f"judge order must be one of {ORDERS}, got {order!r}")
        self.judge, self.mode, self.order = judge, mode, order
        self.samples, self.temperature, self.max_new_tokens, self.seed = samples, temperature, max_new_tokens, seed
        self.max_batch_tokens, self.progress = max_batch_tokens, progress
        self.precision = precision  # rewardkit.precision.Precision the judge was loaded with (None: as given)

    @property
    def kind(self) -> str:
        return self.judge.template.kind

    @property
    def name(self) -> str:
        return f"judge:{self.kind}:{self.mode}:{self.judge.name}"

    def describe(self) -> dict[str, Any]:
        t = self.judge.template
        return {"type": "judge", "name": self.name, "kind": self.kind, "mode": self.mode,
                "order": self.order if self.kind == "pairwise" else None, "model": self.judge.name,
                "template": t.to_dict(), "verdict_tokens": self.judge.verdicts.to_dict(),
                "max_length": self.judge.max_length,
                **({"precision": self.precision.describe()} if self.precision is not None else {}),
                "sampling": ({"samples": self.samples, "temperature": self.temperature,
                              "max_new_tokens": self.max_new_tokens, "seed": self.seed} if self.mode == "sample" else None),
                **(self.judge.reward_stats if self.mode == "probability" else {})}

    # ---- the scorer interface

    def prepare(self, groups: list[Any]) -> Prepared:
        """Judge queries of ``groups`` (pointwise: one per completion; pairwise: one per pair and order), encoded."""
        # where each group came from, for errors (a preference example's source, e.g. "file.jsonl:3")
        where = [getattr(g, "source", None) or f"group {e}" for e, g in enumerate(groups)]
        groups = [Group.of(g) for g in groups]
        for e, g in enumerate(groups):
            if g.texts is not None:
                raise UserError(f"{where[e]}: a judge needs the prompt and completions as fields (messages or "
                                 "prompt/completion text), not an already-rendered conversation")
        jobs: list[tuple[int, int, int, bool]] = []  # (group, i, j, i shown as A); pointwise: (group, i, -1, True)
        queries = []
        if self.kind == "pairwise":
            rng = np.random.default_rng(self.seed)
            for e, g in enumerate(groups):
                if len(g.completions) < 2:
                    raise UserError(f"{where[e]}: a pairwise judge needs at least two completions per prompt; use "
                                     "--judge pointwise or verifier to score single completions")
                for i in range(len(g.completions)):
                    for j in range(i + 1, len(g.completions)):
                        shown = {"both": (True, False), "as_given": (True,), "random": (bool(rng.integers(2)),)}[self.order]
                        jobs += [(e, i, j, s) for s in shown]
            for e, i, j, i_first in jobs:
                g = groups[e]
                a, b = (i, j) if i_first else (j, i)
                queries.append({"prompt": conversation_text(g.prompt), "response_a": response_text(g.completions[a]),
                                "response_b": response_text(g.completions[b])})
        else:
            for e, g in enumerate(groups):
                for i, c in enumerate(g.completions):
                    jobs.append((e, i, -1, True))
                    queries.append({"prompt": conversation_text(g.prompt), "response": response_text(c)})
        ids, cuts = self.judge.encode_queries_cut(queries, with_answer_prefix=self.mode == "probability")
        truncation = [TruncationStats() for _ in groups]
        for (e, *_), (prompt_cut, response_cut) in zip(jobs, cuts):
            # one count per query, as for a classifier: a response cut (the conversation perhaps cut too) counts
            # as a completion cut, a conversation cut alone as a prompt cut — so "n of N truncated" adds up
            truncation[e].count("completion" if response_cut else "prompt" if prompt_cut else None)
        return Prepared(groups=groups, tokens=sum(map(len, ids)), truncation=truncation,
                        payload={"jobs": jobs, "ids": ids})

    def run(self, prepared: list[Prepared]) -> list[ScoreResult]:
        """All queries of all requests judged together (one set of length-sorted batches), then split back."""
        started = time.time()
        ids = [q for p in prepared for q in p.payload["ids"]]
        verdicts = self._verdicts(ids)
        seconds = time.time() - started
        out, k = [], 0
        for p in prepared:
            n = len(p.payload["ids"])
            stats = JudgeStats(seconds=seconds)
            rewards, details = self._assemble(p.groups, p.payload["jobs"], verdicts[k:k + n], stats)
            k += n
            out.append(ScoreResult(rewards=rewards, truncation=p.truncation, path=f"judge:{self.mode}",
                                   forward_passes=0, details=details, stats=stats.to_dict()))
        return out

    def score_examples(self, examples: list[Any]) -> list[np.ndarray]:
        """Rewards only (a shortcut of ``rewardkit.inference.score``)."""
        return score(self, examples).rewards

    # ---- judging queries

    def _verdicts(self, ids: list[list[int]]) -> list[dict[str, Any]]:
        """Per encoded query: ``logp`` (label → renormalised log-prob) and ``mass``, or ``votes`` and ``statuses``."""
        judge = self.judge
        labels = judge.verdicts.labels
        results: list[dict[str, Any]] = []
        if not ids:
            return results
        if self.mode == "probability":
            logp, mass = judge.label_logprobs(ids, self.max_batch_tokens, progress=self.progress)
            for lp, m in zip(logp, mass):
                results.append({"logp": dict(zip(labels, lp.tolist())), "mass": float(m)})
        else:
            texts = judge.sample(ids, self.samples, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
                                 seed=self.seed, max_batch_tokens=self.max_batch_tokens, progress=self.progress)
            for replies in texts:
                votes, statuses = vote([parse_verdict(t, list(labels)) for t in replies])
                results.append({"votes": {k: votes.get(k, 0) for k in labels}, "statuses": dict(statuses),
                                "replies": replies})
        return results

    def _assemble(self, groups: list[Group], jobs: list[tuple[int, int, int, bool]], results: list[dict[str, Any]],
                  stats: JudgeStats) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
        stats.queries += len(results)
        for res in results:
            if "mass" in res:
                stats.verdict_mass_sum += res["mass"]
            else:
                stats.samples.update(res["statuses"])
        if self.kind == "pairwise":
            return self._assemble_pairwise(groups, jobs, results, stats)
        rewards = [np.zeros(len(g.completions)) for g in groups]
        details: list[dict[str, Any]] = [{"completions": [None] * len(g.completions)} for g in groups]
        for (e, i, _, _), res in zip(jobs, results):
            r = self._pointwise_reward(res)
            rewards[e][i] = r
            details[e]["completions"][i] = {k: v for k, v in res.items() if k != "replies"} | {"reward": r}
            if math.isnan(r):
                stats.undecided += 1
        return rewards, details

    def _pointwise_reward(self, res: dict[str, Any]) -> float:
        if self.kind == "verifier":
            if "logp" in res:
                return res["logp"]["Yes"] - res["logp"]["No"]
            yes, no = res["votes"]["Yes"], res["votes"]["No"]
            return math.log((yes + 0.5) / (no + 0.5)) if yes + no else math.nan
        if "logp" in res:  # expected rating
            return float(sum(float(k) * math.exp(lp) for k, lp in res["logp"].items()))
        ratings = [float(k) for k, v in res["votes"].items() for _ in range(v)]
        return float(np.mean(ratings)) if ratings else math.nan

    def _assemble_pairwise(self, groups: list[Group], jobs: list[tuple[int, int, int, bool]],
                           results: list[dict[str, Any]], stats: JudgeStats
                           ) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
        per_pair: dict[tuple[int, int, int], dict[bool, dict[str, Any]]] = {}
        for (e, i, j, i_first), res in zip(jobs, results):
            per_pair.setdefault((e, i, j), {})[i_first] = res
        out = [np.zeros(len(g.completions)) for g in groups]
        details: list[dict[str, Any]] = [{"pairs": []} for _ in groups]
        for (e, i, j), by_order in per_pair.items():
            info = self._combine(by_order, stats)
            k = len(groups[e].completions)
            out[e][i] += info["log_odds"] / k
            out[e][j] -= info["log_odds"] / k
            details[e]["pairs"].append({"i": i, "j": j, **info})
        for e in range(len(groups)):
            if any(math.isnan(p["log_odds"]) for p in details[e]["pairs"]):
                out[e][:] = math.nan
        return out, details

    def _combine(self, by_order: dict[bool, dict[str, Any]], stats: JudgeStats) -> dict[str, Any]:
        """Log-odds that i beats j from one or both orders, and whether the two orders disagree."""
        info: dict[str, Any] = {}
        i_wins_by_order = {}
        if self.mode == "probability":
            parts = []
            for i_first, res in by_order.items():
                lo_a = res["logp"]["A"] - res["logp"]["B"]  # log-odds that the response shown as A is better
                suffix = "i_first" if i_first else "j_first"
                info[f"log_odds_a_{suffix}"] = lo_a
                info[f"p_a_{suffix}"] = sigmoid(lo_a)
                info[f"verdict_mass_{suffix}"] = res["mass"]
                lo_i = lo_a if i_first else -lo_a
                parts.append(lo_i)
                i_wins_by_order[i_first] = lo_i > 0
                stats.pairwise_queries_decided += 1
                stats.shown_a_wins += int(lo_a > 0)
            info["log_odds"] = float(np.mean(parts))
        else:
            v_i = v_j = 0
            for i_first, res in by_order.items():
                a, b = res["votes"]["A"], res["votes"]["B"]
                info["votes_i_first" if i_first else "votes_j_first"] = res["votes"]
                info["statuses_i_first" if i_first else "statuses_j_first"] = res["statuses"]
                v_i, v_j = (v_i + a, v_j + b) if i_first else (v_i + b, v_j + a)
                top = majority(Counter(res["votes"]))
                if top is not None:
                    i_wins_by_order[i_first] = (top == "A") == i_first
                    stats.pairwise_queries_decided += 1
                    stats.shown_a_wins += int(top == "A")
            info["log_odds"] = math.log((v_i + 0.5) / (v_j + 0.5)) if v_i + v_j else math.nan
            if v_i + v_j == 0:
                stats.undecided += 1
        if len(by_order) == 2:
            stats.pairs_both_orders += 1
            if len(i_wins_by_order) == 2:
                info["flip"] = i_wins_by_order[True] != i_wins_by_order[False]
                stats.flips += int(info["flip"])
        return info


# ------------------------------------------------------------------------------------- evaluation


def judge_metrics(scorer: JudgeScorer, examples: list[PreferenceExample], scored: ScoreResult,
                  wall_time_s: float) -> dict[str, Any]:
    """What only judges have: undecided examples, wall time per pair, verdict statistics (flip rate, position-A
    rate, verdict mass, sampling outcomes) and, for a pairwise judge run in both orders, the metrics of each
    single order, from the same forward passes."""
    out: dict[str, Any] = {
        "undecided_examples": sum(bool(np.isnan(r).any()) for r in scored.rewards),
        "wall_time_s": round(wall_time_s, 2),
        "seconds_per_pair": round(wall_time_s / len(examples), 4) if examples else None,
        **(scored.stats or {}),
    }
    if scorer.kind == "pairwise" and scorer.order == "both" and scorer.mode == "probability":
        out["single_order"] = _single_order_metrics(scorer, examples, scored.details or [])
    return out


def evaluate_judge(scorer: JudgeScorer, examples: list[PreferenceExample]) -> dict[str, Any]:
    """Pairwise metrics of a judge (``rewardkit.evaluate.metrics_from_rewards``) plus ``judge_metrics``.

    A completion with no verdict (sampling: no valid vote) makes its example a tie (Δr = 0, counted wrong,
    reported as ``undecided_examples``); nothing is guessed.
    """
    started = time.time()
    scored = score(scorer, examples)
    wall = time.time() - started
    clean = [np.zeros_like(r) if np.isnan(r).any() else r for r in scored.rewards]
    result = metrics_from_rewards(examples, clean)
    extras = judge_metrics(scorer, examples, scored, wall)
    result.update({k: extras[k] for k in ("undecided_examples", "wall_time_s", "seconds_per_pair")})
    if "single_order" in extras:
        result["single_order"] = extras["single_order"]
    result["judge"] = {**scorer.describe(), "stats": scored.stats, "truncation": scored.truncation_total().to_dict()}
    return result


def _single_order_metrics(scorer: JudgeScorer, examples: list[PreferenceExample],
                          details: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics as if each pair had been judged in one order only: the chosen response shown first (as A),
    shown second, or in a seeded random order (the honest one-order number; the first two bound it)."""
    pairs = [(k, ex) for k, ex in enumerate(examples) if len(ex.completions) == 2]
    rng = np.random.default_rng(scorer.seed)
    coin = rng.integers(2, size=len(pairs)).astype(bool)
    out = {}
    for label in ("chosen_first", "chosen_second", "random"):
        rewards = []
        for n, (k, ex) in enumerate(pairs):
            d = details[k]["pairs"][0]
            chosen_is_i = ex.ranking[0] == d["i"]
            chosen_first = {"chosen_first": True, "chosen_second": False, "random": bool(coin[n])}[label]
            i_first = chosen_first == chosen_is_i
            lo_a = d["log_odds_a_i_first" if i_first else "log_odds_a_j_first"]
            lo_i = lo_a if i_first else -lo_a
            r = np.zeros(2)
            r[d["i"]], r[d["j"]] = lo_i / 2, -lo_i / 2
            rewards.append(r)
        out[label] = metrics_from_rewards([ex for _, ex in pairs], rewards)
    return out
