"""Verifier data: solutions with step labels (process reward models) or outcome labels (outcome reward models).

The canonical record is a :class:`VerifierExample`: one problem (the prompt) and its K ≥ 1 solutions, each a list
of steps with, per step, a label (process supervision) and/or one label for the whole solution (outcome
supervision). Labels are kept as given: ``True``/``False`` become 1.0/0.0, a soft label such as Math-Shepherd's
0.75 (3 of 4 rollouts reached the answer) stays 0.75, and a step the data says nothing about is ``None``
(left out of the loss, ``rewardkit.losses.step_bce_loss``). Solutions of one problem are one record, so their
prompt is computed once (``rewardkit.sharing``).

Formats read (by their fields; one reader for files, slices, saved datasets and hub ids, as preferences are read):

* **TRL stepwise** (``trl`` PRM datasets): ``{"prompt", "completions": [step, …], "labels": [bool|float per step]}``;
  ``prompt`` text or chat messages.
* **ProcessBench** (Zheng et al. 2024, ``QwenLM/ProcessBench``): ``{"id", "problem", "steps", "label",
  "final_answer_correct"}`` — ``label`` is the 0-based index of the **first wrong step**, −1 when every step is
  right. Steps before it are 1.0, the step itself 0.0, the steps after it ``None`` (the annotation stops at the
  first error), ``correct`` = ``label == -1``.
* **PRMBench** (Song et al. 2025, ``ssmisya/PRMBench``): ``{"question", "modified_process", "error_steps",
  "classification", "original_process"}`` — ``error_steps`` are **1-based** indices of the wrong steps; each is
  validated (an index past the last step is a bad record, which the released data has). The modified process
  gives labels 0.0 at the error steps and 1.0 elsewhere, ``subset`` = the error type; with ``originals=True``
  (default) the record also holds the original, all-correct process as a second solution.
* **Outcome-labelled**: ``{"prompt", "completion", "correct": bool|float}`` (or ``"completions"`` + a list of
  ``"correct"``); the steps are the completion's lines (``line_steps``).
* **GSM8K model solutions** (``openai/grade-school-math`` ``example_model_solutions.jsonl``): ``{"question",
  "ground_truth", "<model>": {"solution", "is_correct"}, …}`` — one record per question with every model's
  solution, outcome-labelled, steps = lines.

Bad records (labels ≠ steps, an index past the last step, an empty step, a label outside [0, 1]) raise a
``DataError`` naming file and line, or with ``skip_bad`` are skipped, counted and reported (``ReadReport``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rewardkit.data.answers import extract_answer
from rewardkit.data.readers import ReadReport, iter_records, parse_messages
from rewardkit.data.record import Message
from rewardkit.errors import DataError, RecordError

GSM8K_SOLUTION_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


@dataclass
class VerifierExample:
    """One problem and its solutions, with step and/or outcome labels.

    Attributes:
        prompt: the problem as chat messages (a plain-text problem is one user turn).
        steps: per solution, its steps (non-empty strings).
        step_labels: per solution, a label per step in [0, 1] or None (unlabelled), or None for the whole solution
            (outcome-labelled data).
        correct: per solution, its outcome label in [0, 1], or None when the data gives none.
        answers: per solution, the final answer it states (``rewardkit.data.answers.extract_answer``), or None.
        reference: the problem's reference answer, when the data gives one.
        ids: per solution, an identifier (the data's ``id``, else ``file:line`` and the solution's name).
        subset: the record's subset (ProcessBench's file, PRMBench's error type), for per-subset metrics.
        source: where the record came from ("file:line").
    """

    prompt: list[Message]
    steps: list[list[str]]
    step_labels: list[list[float | None] | None]
    correct: list[float | None]
    answers: list[str | None] = field(default_factory=list)
    reference: str | None = None
    ids: list[str] = field(default_factory=list)
    subset: str | None = None
    source: str = ""
    # What the rest of the pipeline asks every record (a verifier record states no preference among its solutions).
    ranking: list[int] = field(default_factory=list)
    ties: None = None
    unordered: None = None
    margin: None = None
    aspect: None = None
    scores: None = None
    id: str | None = None

    def __post_init__(self) -> None:
        k = len(self.steps)
        if not self.ranking:
            self.ranking = list(range(k))
        if not self.answers:
            self.answers = [extract_answer("\n".join(s)) for s in self.steps]
        if not self.ids:
            self.ids = [f"{self.source}#{i}" for i in range(k)]

    @property
    def completions(self) -> list[list[Message]]:
        """Each solution as one assistant turn, its steps joined by newlines (for outcome models and the templates)."""
        return [[{"role": "assistant", "content": "\n".join(s)}] for s in self.steps]

    @property
    def is_tie(self) -> bool:
        return False

    def preference_pairs(self) -> list[tuple[int, int, bool]]:
        return []

    def first_error(self, k: int) -> int | None:
        """The 0-based index of solution ``k``'s first step labelled < 0.5, −1 when every labelled step is ≥ 0.5 and
        the labels cover it to the end or its outcome is correct; None when the labels cannot say."""
        labels = self.step_labels[k]
        if labels is None:
            return None
        for i, label in enumerate(labels):
            if label is None:
                return None
            if label < 0.5:
                return i
        return -1


# ------------------------------------------------------------------------------ labels and steps


def line_steps(text: str) -> list[str]:
    """A solution's steps when the data gives text: its non-empty lines (GSM8K writes one step per line). A final
    ``#### n`` / ``A: n`` answer line is kept as a step of its own: it is where the answer is stated."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _label(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        if math.isnan(v):
            return None
        if not 0.0 <= v <= 1.0:
            raise RecordError("label outside [0, 1]", f"{where} is {value!r}; a label is a bool or a number in [0, 1] "
                                                      "(soft labels: the probability that the step is right).")
        return v
    raise RecordError("bad label", f"{where} is {value!r}; a label is a bool or a number in [0, 1].")


def _steps(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise RecordError(f"bad '{name}'", f"field '{name}' must be a non-empty list of step strings, got "
                                           f"{type(value).__name__ if not isinstance(value, list) else 'an empty list'}.")
    out = []
    for i, step in enumerate(value):
        if not isinstance(step, str):
            raise RecordError(f"bad '{name}'", f"{name}[{i}] must be a string, got {type(step).__name__}.")
        if not step.strip():
            raise RecordError("empty step", f"{name}[{i}] is empty; every step needs text (drop it from the list).")
        out.append(step)
    return out


def _prompt(obj: dict, *names: str) -> list[Message]:
    for name in names:
        if name in obj:
            prompt = parse_messages(obj[name], name, "user")
            if not any(m["content"].strip() for m in prompt):
                raise RecordError(f"empty '{name}'", f"field '{name}' is empty.")
            return prompt
    raise RecordError("no problem", f"no problem text: expected one of the fields {', '.join(names)}.")


# ------------------------------------------------------------------------------ one raw record per format


def parse_verifier_record(obj: Any, location: str = "", *, originals: bool = True) -> VerifierExample:
    """One raw record (any format of the module docstring) → a :class:`VerifierExample`; bad → ``RecordError``."""
    if not isinstance(obj, dict):
        raise RecordError("not an object", f"expected a JSON object, got {type(obj).__name__}.")
    subset = obj.get("subset") if isinstance(obj.get("subset"), str) else None
    rid = str(obj["id"]) if isinstance(obj.get("id"), (str, int)) and not isinstance(obj.get("id"), bool) else None
    if "modified_process" in obj:
        return _prmbench(obj, location, originals)
    if "steps" in obj and "label" in obj:
        return _processbench(obj, location, rid, subset)
    if "ground_truth" in obj and any(k in obj for k in GSM8K_SOLUTION_KEYS):
        return _gsm8k_solutions(obj, location)
    if "completions" in obj and "labels" in obj:
        steps = _steps(obj["completions"], "completions")
        labels = obj["labels"]
        if not isinstance(labels, list) or len(labels) != len(steps):
            n = len(labels) if isinstance(labels, list) else type(labels).__name__
            raise RecordError("labels ≠ steps", f"'labels' has {n} entries for {len(steps)} steps; give one label "
                                                "per step (null for an unlabelled step).")
        step_labels = [_label(v, f"labels[{i}]") for i, v in enumerate(labels)]
        if all(v is None for v in step_labels):
            raise RecordError("no labelled step", "every label is null; a record needs at least one labelled step.")
        correct = _label(obj.get("correct"), "'correct'") if "correct" in obj else None
        return VerifierExample(_prompt(obj, "prompt"), [steps], [step_labels], [correct], reference=_reference(obj),
                               ids=[rid or location], subset=subset, source=location, id=rid)
    if "completion" in obj or ("completions" in obj and "correct" in obj):
        return _outcome(obj, location, rid, subset)
    raise RecordError("unknown verifier format",
                      "not a verifier record: expected {prompt, completions: [steps], labels} (step labels), "
                      "{problem, steps, label} (ProcessBench), {question, modified_process, error_steps} (PRMBench), "
                      "{prompt, completion, correct} (outcome) or GSM8K's model solutions.")


def _reference(obj: dict) -> str | None:
    for name in ("reference_answer", "answer", "ground_truth"):
        value = obj.get(name)
        if isinstance(value, str) and value.strip():
            return extract_answer(value) or value.strip()
    return None


def _outcome(obj: dict, location: str, rid: str | None, subset: str | None) -> VerifierExample:
    if "completion" in obj:
        texts, labels = [obj["completion"]], [obj.get("correct")]
    else:
        texts, labels = obj["completions"], obj["correct"]
        if not isinstance(texts, list) or not isinstance(labels, list) or len(texts) != len(labels):
            raise RecordError("labels ≠ completions", "'completions' and 'correct' must be lists of the same length.")
    steps = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not line_steps(text):
            raise RecordError("empty completion", f"completion {i} is empty or not text.")
        steps.append(line_steps(text))
    if "correct" not in obj:
        raise RecordError("no label", "an outcome record needs 'correct' (bool or a number in [0, 1]).")
    correct = [_label(v, f"'correct'[{i}]") for i, v in enumerate(labels)]
    if all(c is None for c in correct):
        raise RecordError("no label", "'correct' is null; an outcome record needs a label.")
    ids = [rid or location] if len(steps) == 1 else [f"{rid or location}#{i}" for i in range(len(steps))]
    return VerifierExample(_prompt(obj, "prompt", "question", "problem"), steps, [None] * len(steps), correct,
                           reference=_reference(obj), ids=ids, subset=subset, source=location, id=rid)


def _processbench(obj: dict, location: str, rid: str | None, subset: str | None) -> VerifierExample:
    steps = _steps(obj["steps"], "steps")
    first = obj["label"]
    if isinstance(first, bool) or not isinstance(first, int) or not -1 <= first < len(steps):
        raise RecordError("label past the last step",
                          f"'label' (the 0-based first wrong step, or -1 when all are right) is {first!r} for "
                          f"{len(steps)} steps.")
    labels: list[float | None] = ([1.0] * len(steps) if first == -1 else
                                  [1.0] * first + [0.0] + [None] * (len(steps) - first - 1))
    subset = subset or (rid.rsplit("-", 1)[0] if rid and "-" in rid else None)
    return VerifierExample(_prompt(obj, "problem", "prompt", "question"), [steps], [labels], [float(first == -1)],
                           ids=[rid or location], subset=subset, source=location, id=rid)


def _prmbench(obj: dict, location: str, originals: bool) -> VerifierExample:
    steps = _steps(obj["modified_process"], "modified_process")
    errors = obj.get("error_steps")
    if not isinstance(errors, list) or not errors or not all(isinstance(e, int) and not isinstance(e, bool)
                                                             for e in errors):
        raise RecordError("bad 'error_steps'", f"'error_steps' must be a non-empty list of 1-based step numbers, "
                                               f"got {errors!r:.80}.")
    past = [e for e in errors if not 1 <= e <= len(steps)]
    if past:
        raise RecordError("error step past the last step",
                          f"'error_steps' {past} (1-based) point outside the {len(steps)} steps of 'modified_process'.")
    wrong = set(errors)
    solutions, labels, correct = [steps], [[0.0 if i + 1 in wrong else 1.0 for i in range(len(steps))]], [0.0]
    rid = str(obj.get("idx") or obj.get("id") or location)
    ids = [f"{rid}:modified"]
    if originals and obj.get("original_process"):
        solutions.append(_steps(obj["original_process"], "original_process"))
        labels.append([1.0] * len(solutions[-1]))
        correct.append(1.0)
        ids.append(f"{rid}:original")
    subset = obj.get("classification") if isinstance(obj.get("classification"), str) else None
    return VerifierExample(_prompt(obj, "modified_question", "question", "original_question"), solutions, labels,
                           correct, ids=ids, subset=subset, source=location, id=rid)


def _gsm8k_solutions(obj: dict, location: str) -> VerifierExample:
    steps, correct, ids = [], [], []
    for key in GSM8K_SOLUTION_KEYS:
        entry = obj.get(key)
        if entry is None:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("solution"), str):
            raise RecordError("bad solution", f"'{key}' must be {{solution: text, is_correct: bool}}.")
        if not line_steps(entry["solution"]):
            raise RecordError("empty completion", f"'{key}'.solution is empty.")
        steps.append(line_steps(entry["solution"]))
        correct.append(_label(entry.get("is_correct"), f"'{key}'.is_correct"))
        ids.append(f"{location}:{key}")
    return VerifierExample(_prompt(obj, "question"), steps, [None] * len(steps), correct,
                           reference=_reference(obj), ids=ids, source=location)


# ------------------------------------------------------------------------------ reading


def iter_verifier_examples(spec: str, report: ReadReport, *, skip_bad: bool = False, split: str = "train",
                           split_flag: str = "--split", streaming: bool = False,
                           keep: Callable[[int], bool] | None = None, positions: bool = False,
                           originals: bool = True) -> Iterator[Any]:
    """:func:`read_verifier_examples` one record at a time (same contract as ``rewardkit.data.readers.iter_preferences``:
    ``keep`` selects raw records by position, ``positions`` yields ``(position, example or None)``)."""
    def parse(obj: Any, location: str) -> list[tuple[str, VerifierExample | RecordError]]:
        try:
            return [(location, parse_verifier_record(obj, location, originals=originals))]
        except RecordError as e:
            return [(location, e)]

    def kept(example: VerifierExample) -> None:
        report.k_counts[len(example.steps)] += 1
        if any(labels is not None for labels in example.step_labels):
            report.notes["solutions with step labels"] += sum(labels is not None for labels in example.step_labels)
        soft = sum(1 for labels in example.step_labels for v in (labels or []) if v is not None and 0 < v < 1)
        soft += sum(1 for c in example.correct if c is not None and 0 < c < 1)
        if soft:
            report.notes["soft labels (kept as given)"] += soft

    yield from iter_records(spec, report, parse, VerifierExample, kept, skip_bad=skip_bad, split=split,
                            split_flag=split_flag, streaming=streaming, keep=keep, positions=positions)


def read_verifier_examples(spec: str, *, skip_bad: bool = False, split: str = "train", split_flag: str = "--split",
                           originals: bool = True) -> tuple[list[VerifierExample], ReadReport]:
    """Read verifier records (module docstring) from a file path or hub id (optionally sliced, ``f.jsonl[:100]``)."""
    report = ReadReport(source=spec)
    examples = list(iter_verifier_examples(spec, report, skip_bad=skip_bad, split=split, split_flag=split_flag,
                                           originals=originals))
    if not examples:
        raise DataError(f"{spec}: no usable verifier records ({report.summary()})")
    return examples, report
