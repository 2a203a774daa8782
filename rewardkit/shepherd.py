"""Automatic step labels by rollouts (Math-Shepherd, Wang et al. 2024, arXiv:2312.08935).

For a step-split solution of a question with a known reference answer, step i is labelled by sampling ``k``
completions from the prefix (question + steps 0..i) with a causal LM policy and checking each completion's final
answer against the reference (``rewardkit.data.answers.is_correct``): the hard label (Math-Shepherd's HE) is
"any completion is correct", the soft label (SE) the fraction that are. ``rollouts_correct`` keeps the count.

Choices (docs/math_shepherd.md says more):

* **The last step is not sampled**: its prefix is the whole solution, so the label is the solution's own answer
  check (``rollouts_correct`` is null there, as for every step that was not sampled).
* **Seeds per sample**: sample j of step i of record r draws its tokens from a ``torch.Generator`` seeded with a
  hash of (seed, r's id, i, j) (the solution itself: i = -1), inside a logits processor that does the sampling
  (temperature and top-p by transformers' own warpers, then one uniform per token through the CDF) and hands
  ``generate`` a one-hot score to take greedily. So a sample does not depend on which other prefixes share its
  batch, their padding or their order.
* **Stopping**: at the end of the turn (eos), after a ``#### <answer>`` line, or at ``max_new_tokens``.
* **Resumable**: rows are appended in input order, a chunk at a time; a restart reads the done ids from the output,
  skips them and says how many. The summary beside the output keeps the config; a restart with different
  sampling settings is refused, naming the fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
)

from rewardkit.config import LabelStepsConfig, to_dict
from rewardkit.data.answers import extract_answer, is_correct
from rewardkit.data.readers import SKIP_HINT, ReadReport, sliced_records
from rewardkit.errors import ConfigError, DataError, RecordError

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_ANSWER_LINE = re.compile(r"^\s*####")
# A finished answer line: '####', something, then the line's end. Generation stops there.
_ANSWER_DONE = re.compile(r"####[^\n]*\S[^\n]*\n")
_TOP_P_CANDIDATES = 256
_REFERENCE_FIELDS = ("reference_answer", "answer", "ground_truth", "final_answer")
# Fields that change what is computed: a resume with any of them different would mix two runs in one file. The input
# may change (a longer slice continues a run): rows are keyed by id, which is the row's own or its file name and line.
RESUME_FIELDS = ("model", "k", "label_mode", "generate_solutions", "early_exit", "temperature", "top_p",
                 "max_new_tokens", "seed", "max_steps", "keep_annotations", "answer_field", "instruction")


# ------------------------------------------------------------------------------------- steps


def split_steps(text: str) -> list[str]:
    """A solution's steps: its non-blank lines, with a final answer-only line (``#### 72``) joined to the step
    before it (an answer line is not a step of reasoning; a PRM would score the step that reaches it)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > 1 and _ANSWER_LINE.match(lines[-1]):
        lines[-2:] = [lines[-2] + "\n" + lines[-1]]
    return lines


def gsm8k_steps(answer: str, keep_annotations: bool = False) -> list[str]:
    """Steps of a GSM8K reference solution; calculator annotations ``<<48/2=24>>`` removed unless kept."""
    if not keep_annotations:
        answer = _ANNOTATION.sub("", answer)
    return split_steps(answer)


@dataclass
class StepRecord:
    """One question with its reference answer, and the solution (steps) to label."""

    id: str
    location: str
    question: str
    reference_answer: str
    steps: list[str]


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{name} not text", f"'{name}' must be text, got {type(value).__name__}.")
    if not value.strip():
        raise RecordError(f"empty {name}", f"'{name}' is empty.")
    return value


def parse_step_record(obj: Any, location: str, *, answer_field: str = "auto",
                      keep_annotations: bool = False) -> StepRecord:
    """A GSM8K row ``{question, answer}`` or a step row ``{prompt, completions, <answer field>}``; RecordError if bad."""
    if not isinstance(obj, dict):
        raise RecordError("not an object", "expected a JSON object.")
    where = location.rsplit(":", 1)
    rid = obj.get("id")
    rid = f"{Path(where[0]).name}:{where[1]}" if rid is None and len(where) == 2 else rid
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise RecordError("bad id", f"'id' must be text or an integer, got {rid!r}.")
    if "completions" in obj:
        question = _text(obj.get("prompt"), "prompt")
        steps = obj["completions"]
        if not isinstance(steps, list) or not steps:
            raise RecordError("no steps", "'completions' must be a non-empty list of steps (text).")
        for i, s in enumerate(steps):
            if not isinstance(s, str) or not s.strip():
                raise RecordError("empty step", f"step {i} of 'completions' is empty or not text.")
        steps = [_ANNOTATION.sub("", s) if not keep_annotations else s for s in steps]
        names = _REFERENCE_FIELDS if answer_field == "auto" else (answer_field,)
        present = [n for n in names if obj.get(n) not in (None, "")]
        if not present:
            raise RecordError("no reference answer", f"no reference answer: the row needs one of {list(names)} "
                                                     "(or pass --answer-field NAME).")
        ref_value = obj[present[0]]
        if isinstance(ref_value, (int, float)) and not isinstance(ref_value, bool):
            ref_value = str(ref_value)
        ref_text = _text(ref_value, present[0])
    else:
        question = _text(obj.get("question"), "question")
        ref_text = _text(obj.get("answer"), "answer")
        steps = gsm8k_steps(ref_text, keep_annotations)
    # A one-line field is a bare answer; a solution states it in one of the forms extract_answer reads.
    reference = ref_text.strip() if "\n" not in ref_text.strip() and "####" not in ref_text else \
        extract_answer(ref_text, fallback=False)
    if not reference:
        raise RecordError("no reference answer", "no reference answer: the solution states no final answer "
                                                 "('#### n', 'The answer is n', \\boxed{}).")
    return StepRecord(id=str(rid), location=location, question=question, reference_answer=reference, steps=steps)


def read_step_records(spec: str, *, answer_field: str = "auto", keep_annotations: bool = False,
                      skip_bad: bool = False) -> tuple[list[StepRecord], ReadReport]:
    """Every record of ``spec`` (a file, optionally sliced); bad ones raise DataError with file:line, or with
    ``skip_bad`` are counted by reason in the report. Duplicate ids are an error (resume keys on them)."""
    report = ReadReport(source=spec)
    records: list[StepRecord] = []
    seen: dict[str, str] = {}
    for location, obj in sliced_records(spec, "train", "--split", streaming=False):
        report.records += 1
        try:
            if isinstance(obj, RecordError):
                raise obj
            rec = parse_step_record(obj, location, answer_field=answer_field, keep_annotations=keep_annotations)
            if rec.id in seen:
                raise RecordError("duplicate id", f"id {rec.id!r} was already used at {seen[rec.id]}; ids must be "
                                                  "unique (the output and resuming key on them).")
        except RecordError as e:
            if not skip_bad:
                raise DataError(f"{location}: {e} {SKIP_HINT}") from None
            report.skipped[e.reason] += 1
            if len(report.skipped_at) < 20:
                report.skipped_at.append(location)
            continue
        seen[rec.id] = location
        records.append(rec)
        report.loaded += 1
    if not records:
        raise DataError(f"{spec}: no usable records ({report.summary()})")
    return records, report


# ------------------------------------------------------------------------------------- the policy


def sample_seed(seed: int, record_id: str, step: int, sample: int) -> int:
    """The seed of one sample; a hash, so neighbouring ids or steps do not give related streams."""
    digest = hashlib.sha256(f"{seed}\x1f{record_id}\x1f{step}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class _SeededSampler(LogitsProcessor):
    """Samples each row's next token from its own generator and returns a one-hot score, so that ``generate`` in
    greedy mode emits exactly that token. transformers' sampling draws from one global RNG for the whole batch,
    which makes a sample depend on its batch-mates; this makes it depend on its own seed only.

    Temperature is transformers' warper. Top-p keeps the most likely tokens whose probabilities before them sum to
    less than ``top_p`` (the first always), found among the top ``_TOP_P_CANDIDATES`` when they hold ``top_p`` of the
    mass (a short ``topk``; sorting the whole vocabulary of every row took 17 % of a SmolLM2 run's time), else by a
    full sort: the same set either way."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device: torch.device):
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.temperature, self.top_p = TemperatureLogitsWarper(temperature), top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = self.temperature(input_ids, scores.float()).softmax(-1)
        u = torch.cat([torch.rand(1, generator=g, device=g.device) for g in self.generators]).to(probs.device)
        if self.top_p < 1:
            top, index = probs.topk(min(_TOP_P_CANDIDATES, probs.shape[-1]), dim=-1)
            if bool((top.sum(-1) < self.top_p).any()):
                top, index = probs.sort(dim=-1, descending=True)
            before = top.cumsum(-1) - top
            top = torch.where(before < self.top_p, top, torch.zeros_like(top))
            cdf = top.cumsum(-1)
            pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=cdf.shape[-1] - 1)
            token = index.gather(1, pick)
        else:
            cdf = probs.cumsum(-1)
            token = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=cdf.shape[-1] - 1)
        return torch.full_like(scores, -math.inf, dtype=torch.float).scatter_(1, token, 0.0)


class _AnswerLineStop(StoppingCriteria):
    """Stops a row once its new text holds a finished ``#### <answer>`` line (what a GSM8K-style solution ends with;
    a weak policy otherwise goes on writing more '####' lines)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_length: int):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([bool(_ANSWER_DONE.search(t)) for t in texts], device=input_ids.device)


@dataclass
class Sample:
    text: str
    tokens: int  # tokens generated (the eos included)
    finished: bool  # ended at eos or an answer line, not cut at max_new_tokens
    seconds: float  # its share of its generate call's time, by tokens


class Policy:
    """A causal LM that continues rendered prefixes, batched with left padding, each sample seeded on its own."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, temperature: float = 0.7,
                 top_p: float = 0.95, max_new_tokens: int = 256, batch_size: int = 32,
                 instruction: str = "", progress: Any = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.temperature, self.top_p, self.max_new_tokens, self.batch_size = temperature, top_p, max_new_tokens, batch_size
        self.instruction = instruction
        self.progress = progress  # a tqdm bar advanced by sequences generated, or None
        eos = tokenizer.eos_token_id
        self.eos_ids = sorted({eos, *(_as_list(getattr(model.generation_config, "eos_token_id", None)))} - {None})

    def prompt_text(self, question: str, steps: list[str]) -> str:
        """The question as the policy's user turn, its reply begun with ``steps`` (one per line)."""
        user = f"{question.strip()}\n\n{self.instruction}" if self.instruction else question.strip()
        if self.tokenizer.chat_template:
            head = self.tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                      add_generation_prompt=True)
        else:
            head = f"Question: {user}\nAnswer:\n"
        return head + "".join(s + "\n" for s in steps)

    @torch.inference_mode()
    def sample(self, prompts: list[str], seeds: list[int]) -> list[Sample]:
        """One sample per (prompt, seed), in input order; batches of ``batch_size`` rows, longest first."""
        tok = self.tokenizer
        ids = [list(x) for x in tok(prompts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[Sample | None] = [None] * len(ids)
        device = next(self.model.parameters()).device
        config = GenerationConfig(do_sample=False, max_new_tokens=self.max_new_tokens, eos_token_id=self.eos_ids,
                                  pad_token_id=tok.pad_token_id)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, width - len(ids[i]):] = torch.tensor(ids[i])
                mask[r, width - len(ids[i]):] = 1
            t0 = time.perf_counter()
            gen = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=config,
                logits_processor=LogitsProcessorList([_SeededSampler([seeds[i] for i in rows], self.temperature,
                                                                     self.top_p, device)]),
                stopping_criteria=StoppingCriteriaList([_AnswerLineStop(tok, width)]))
            seconds = time.perf_counter() - t0
            new = gen[:, width:].cpu()
            found = []
            for r in range(len(rows)):
                seq = new[r].tolist()
                end = next((j for j, t in enumerate(seq) if t in self.eos_ids), None)
                n = end + 1 if end is not None else len(seq)
                if end is None:  # a row stopped at its answer line is padded to the batch's end
                    while n and seq[n - 1] == tok.pad_token_id:
                        n -= 1
                text = tok.decode(seq[:end if end is not None else n], skip_special_tokens=True)
                done = _ANSWER_DONE.search(text)
                if done:
                    text = text[:done.end()]
                found.append((text, n, end is not None or done is not None))
            total = sum(n for _, n, _ in found) or 1
            for r, (text, n, finished) in enumerate(found):
                out[rows[r]] = Sample(text=text, tokens=n, finished=finished, seconds=seconds * n / total)
            if self.progress is not None:
                self.progress.update(len(rows))
        return out  # type: ignore[return-value]


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_policy(cfg: LabelStepsConfig, progress: Any = None) -> Policy:
    """The policy as a plain causal LM (``rewardkit.model.load_causal_lm``: built-in names, GGUF de-quantizing, the
    pad fix), on ``--device``."""
    from rewardkit.inference import resolve_device
    from rewardkit.model import load_causal_lm

    hf, tokenizer = load_causal_lm(cfg.model)
    return Policy(hf.to(resolve_device(cfg.device)), tokenizer, temperature=cfg.temperature, top_p=cfg.top_p,
                  max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, instruction=cfg.instruction,
                  progress=progress)


# ------------------------------------------------------------------------------------- labelling


@dataclass
class StepCost:
    prefixes: int = 0
    samples: int = 0
    tokens: int = 0
    seconds: float = 0.0
    correct: int = 0
    finished: int = 0

    def add(self, samples: list[Sample], correct: int) -> None:
        self.prefixes += 1
        self.samples += len(samples)
        self.tokens += sum(s.tokens for s in samples)
        self.seconds += sum(s.seconds for s in samples)
        self.correct += correct
        self.finished += sum(s.finished for s in samples)


@dataclass
class Costs:
    """What the labelling cost, per step index (0-based) and for the solutions the policy wrote."""

    per_step: dict[int, StepCost] = field(default_factory=dict)
    solutions: StepCost = field(default_factory=StepCost)
    not_sampled: Counter = field(default_factory=Counter)  # why steps were labelled without rollouts

    def step(self, i: int) -> StepCost:
        return self.per_step.setdefault(i, StepCost())


def _label(correct: int, k: int, mode: str) -> bool | float:
    return correct > 0 if mode == "hard" else correct / k


def label_records(policy: Policy, records: list[StepRecord], cfg: LabelStepsConfig, costs: Costs,
                  report: ReadReport) -> Iterator[dict[str, Any]]:
    """Labelled rows in input order, a chunk of records at a time (what resuming appends). Generated solutions
    that cannot be labelled (no steps, too many) are counted in ``report.skipped``."""
    k = cfg.k
    chunk = max(1, cfg.batch_size // k)
    for start in range(0, len(records), chunk):
        batch = records[start:start + chunk]
        steps_of: dict[str, list[str]] = {r.id: r.steps for r in batch}
        solution_texts: dict[str, str] = {}
        if cfg.generate_solutions:
            sols = policy.sample([policy.prompt_text(r.question, []) for r in batch],
                                 [sample_seed(cfg.seed, r.id, -1, 0) for r in batch])
            for r, s in zip(batch, sols):
                costs.solutions.add([s], int(is_correct(s.text, r.reference_answer)))
                steps_of[r.id] = split_steps(s.text)
                solution_texts[r.id] = s.text
        todo: list[StepRecord] = []
        for r in batch:
            why = None
            if not steps_of[r.id]:
                why = "generated solution empty"
            elif cfg.max_steps and len(steps_of[r.id]) > cfg.max_steps:
                why = f"more than {cfg.max_steps} steps (--max-steps)"
            if why:
                report.skipped[why] += 1
                if len(report.skipped_at) < 20:
                    report.skipped_at.append(r.location)
            else:
                todo.append(r)
        counts: dict[str, list[int | None]] = {r.id: [None] * len(steps_of[r.id]) for r in todo}
        labels: dict[str, list[bool | float | None]] = {r.id: [None] * len(steps_of[r.id]) for r in todo}
        for r in todo:  # the last step: the solution's own answer, no rollouts
            steps = steps_of[r.id]
            labels[r.id][-1] = _label(k * is_correct("\n".join(steps), r.reference_answer), k, cfg.label_mode)
            costs.not_sampled["last step (its own answer checked)"] += 1
        # Without early exit every step prefix of the chunk is sampled at once; with it, one step per record per round.
        next_step = {r.id: 0 for r in todo}
        while True:
            work = []
            for r in todo:
                n = len(steps_of[r.id]) - 1  # sampled steps: all but the last
                if cfg.early_exit:
                    if next_step[r.id] < n:
                        work.append((r, next_step[r.id]))
                else:
                    work += [(r, i) for i in range(next_step[r.id], n)]
                    next_step[r.id] = n
            if not work:
                break
            prompts, seeds = [], []
            for r, i in work:
                text = policy.prompt_text(r.question, steps_of[r.id][:i + 1])
                for j in range(k):
                    prompts.append(text)
                    seeds.append(sample_seed(cfg.seed, r.id, i, j))
            samples = policy.sample(prompts, seeds)
            for w, (r, i) in enumerate(work):
                mine = samples[w * k:(w + 1) * k]
                correct = sum(is_correct(s.text, r.reference_answer) for s in mine)
                costs.step(i).add(mine, correct)
                counts[r.id][i] = correct
                labels[r.id][i] = _label(correct, k, cfg.label_mode)
                if cfg.early_exit:
                    next_step[r.id] = i + 1
                    if correct == 0:  # the shortcut: later steps (not the last, checked above) get 0 unsampled
                        last = len(steps_of[r.id]) - 1
                        for later in range(i + 1, last):
                            labels[r.id][later] = _label(0, k, cfg.label_mode)
                            costs.not_sampled["after a step with 0 of k (--early-exit)"] += 1
                        next_step[r.id] = last
        for r in batch:
            if r.id not in labels:
                continue
            row = {"prompt": r.question, "completions": steps_of[r.id], "labels": labels[r.id], "id": r.id,
                   "reference_answer": r.reference_answer, "rollouts_correct": counts[r.id], "k": k}
            row["solution_source"] = "policy" if cfg.generate_solutions else "input"
            yield row


# ------------------------------------------------------------------------------------- the command


def summary_path(cfg: LabelStepsConfig) -> Path:
    if cfg.summary:
        return Path(cfg.summary)
    out = Path(cfg.output)
    stem = out.name[:-len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + ".summary.json")


def done_ids(output: Path) -> tuple[set[str], int]:
    """Ids already in ``output``, and how many bytes of it are whole lines. A line cut off by a kill is not
    counted (its record is redone) and the caller truncates it away."""
    ids: set[str] = set()
    good = 0
    if not output.exists():
        return ids, 0
    with open(output, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                break
            try:
                ids.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{output}:{lineno}: not a row this command wrote; pass a new --output, or remove "
                                "the file to start over") from None
            good += len(line)
    return ids, good


def _check_resume(cfg: LabelStepsConfig, path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"{cfg.output} exists but its summary {path} does not, so it cannot be told whether it "
                          "was labelled with these settings; pass another --output (or remove the file)")
    saved = json.loads(path.read_text()).get("config", {})
    mine = to_dict(cfg)
    changed = [f for f in RESUME_FIELDS if saved.get(f, mine[f]) != mine[f]]
    if changed:
        raise ConfigError(f"{cfg.output} was labelled with other settings ({', '.join(changed)} differ: "
                          + "; ".join(f"{f}: {saved[f]!r} then, {mine[f]!r} now" for f in changed)
                          + "); resuming would mix two runs in one file. Pass another --output, or the same settings")


def label_distribution(rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Counts of labels over every step of ``rows``, and of solutions by their first bad step."""
    steps = [lab for row in rows for lab in row["labels"]]
    out: dict[str, Any] = {"records": len(rows), "steps": len(steps)}
    if mode == "hard":
        out["positive_steps"] = sum(bool(x) for x in steps)
        out["negative_steps"] = len(steps) - out["positive_steps"]
    else:
        out["soft_histogram"] = dict(sorted(Counter(round(float(x), 4) for x in steps).items()))
        out["positive_steps"] = sum(float(x) > 0 for x in steps)
        out["negative_steps"] = len(steps) - out["positive_steps"]
    out["all_steps_positive"] = sum(all(float(x) > 0 for x in row["labels"]) for row in rows)
    out["final_answer_correct"] = sum(float(row["labels"][-1]) > 0 for row in rows)
    out["steps_per_solution"] = dict(sorted(Counter(len(row["completions"]) for row in rows).items()))
    return out


def label_steps(cfg: LabelStepsConfig) -> dict[str, Any]:
    """Label the steps of ``cfg.input``'s solutions into ``cfg.output`` (appending, resumable); returns the summary
    (also written to :func:`summary_path`): config, skips, label distribution, and costs per step and solution."""
    from tqdm.auto import tqdm

    if not cfg.input or not cfg.output:
        raise ConfigError("label-steps needs --input and --output")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    records, report = read_step_records(cfg.input, answer_field=cfg.answer_field,
                                        keep_annotations=cfg.keep_annotations, skip_bad=cfg.skip_bad_records)
    output, spath = Path(cfg.output), summary_path(cfg)
    done, good_bytes = done_ids(output)
    if output.exists() and output.stat().st_size:
        _check_resume(cfg, spath)
        if good_bytes < output.stat().st_size:
            with open(output, "r+b") as f:  # a row half-written by a kill: redo that record
                f.truncate(good_bytes)
            print(f"label-steps: {output}: removed a cut-off last line (its record is labelled again)", file=sys.stderr)
    todo = [r for r in records if r.id not in done]
    skipped_done = len(records) - len(todo)
    print(report.summary(), file=sys.stderr)
    if skipped_done:
        print(f"label-steps: resuming {output}: {skipped_done} of {len(records)} records already labelled, skipped",
              file=sys.stderr)
    output.parent.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"config": to_dict(cfg), "finished": False}
    previous = json.loads(spath.read_text()) if spath.exists() and skipped_done else {}
    spath.write_text(json.dumps({**previous, **summary}, indent=2) + "\n")

    # With policy-written solutions the number of steps is known only once they are written.
    bar = tqdm(total=None if cfg.generate_solutions else sum(cfg.k * (len(r.steps) - 1) for r in todo),
               desc="label-steps", unit="seq", file=sys.stderr)
    policy = load_policy(cfg, progress=bar)
    costs = Costs()
    t0 = time.perf_counter()
    written = 0
    with open(output, "a", encoding="utf-8") as f:
        for row in label_records(policy, todo, cfg, costs, report):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            written += 1
            bar.set_postfix(records=written)
    bar.close()
    wall = time.perf_counter() - t0
    if report.skipped:
        print(report.summary(), file=sys.stderr)
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    step_costs = {str(i): {**dataclasses.asdict(c), "tokens_per_sample": c.tokens / c.samples if c.samples else None,
                           "correct_rate": c.correct / c.samples if c.samples else None}
                  for i, c in sorted(costs.per_step.items())}
    sampled_tokens = sum(c.tokens for c in costs.per_step.values()) + costs.solutions.tokens
    # Each resumed segment reports its own work; what earlier segments reported is kept beside it (a segment that was
    # killed reported nothing, so its cost is missing, and the note says how many records came before).
    earlier = list(previous.get("earlier_segments", []))
    if previous.get("cost"):
        earlier.append({"records_written": previous.get("records_written_now"), "wall_s": previous["cost"]["wall_s"],
                        "tokens_generated": previous["cost"]["tokens_generated"]})
    summary.update({
        "finished": True,
        "earlier_segments": earlier,
        "data": report.to_dict(),
        "records_in_input": len(records),
        "records_resumed_skipped": skipped_done,
        "records_written_now": written,
        "labels": label_distribution(rows, cfg.label_mode),
        "cost": {
            "wall_s": round(wall, 2),
            "tokens_generated": sampled_tokens,
            "tokens_per_s": sampled_tokens / wall if wall else None,
            "solutions": {**dataclasses.asdict(costs.solutions), "note": "policy-written solutions (one per question)"},
            "per_step": step_costs,
            "steps_not_sampled": dict(costs.not_sampled),
            "per_solution": {"tokens": sampled_tokens / written if written else None,
                             "wall_s": wall / written if written else None},
            "note": "this process's work only" + (f"; {skipped_done} records were labelled before" if skipped_done else ""),
        },
        "machine": _machine(),
    })
    spath.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _machine() -> dict[str, Any]:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
