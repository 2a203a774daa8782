"""Final answers of maths solutions: read one out of a solution's text, and compare two.

One reader for every place that needs "what did this solution answer?": majority voting in best-of-N
evaluation, the answer check of automatic step labels (Math-Shepherd), and outcome labels. The forms it reads,
in order of precedence (the last occurrence of the first form found wins, because a solution may restate
an intermediate result in the same form earlier):

* GSM8K's reference marker ``#### 72`` (Cobbe et al. 2021, ``openai/grade-school-math``);
* the ``A: 72`` line of GSM8K's released model solutions (``example_model_solutions.jsonl``);
* LaTeX ``\\boxed{...}`` (MATH, ProcessBench, PRM800K), with nested braces;
* "the answer is 72" / "answer: 72";
* otherwise the last number in the text (``fallback=True``, the usual lenient rule for free-form output).

Numbers are compared as numbers after removing thousands separators, ``$`` and a trailing unit-free ``.``:
``"1,000"`` = ``"1000.0"`` = ``"$1000"``; anything that is not a number is compared as normalised text
(whitespace and ``\\text{}``/``\\left``/``\\right``/``$`` wrappers removed), so ``\\frac{1}{2}`` matches only itself.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = r"-?\$?\s*\d[\d,]*(?:\.\d+)?|-?\$?\s*\.\d+"
_HASH = re.compile(r"####\s*(.+)")
_A_LINE = re.compile(r"(?im)^\s*A:\s*(.+?)\s*$")
_SAID = re.compile(r"(?i)(?:the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*:?\s*(.+)")
_ANY_NUMBER = re.compile(_NUMBER)


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces balanced), or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


def extract_answer(text: str, fallback: bool = True) -> str | None:
    """The final answer a solution states, as written (not normalised); None when it states none.

    ``fallback``: with no explicit answer form, take the last number in the text (lenient, as most
    GSM8K evaluations do); without it, such a solution has no answer.
    """
    found = _HASH.findall(text)
    if found:
        return found[-1].strip()
    found = _A_LINE.findall(text)
    if found:
        return found[-1].strip()
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    found = _SAID.findall(text)
    if found:
        said = found[-1].strip()
        number = _ANY_NUMBER.search(said)
        return number.group(0).strip() if number else said.rstrip(". ")
    if fallback:
        numbers = _ANY_NUMBER.findall(text)
        if numbers:
            return numbers[-1].strip()
    return None


def normalize_answer(answer: str) -> str:
    """A canonical spelling: numbers as exact decimals (``"1,000.50"`` → ``"1000.5"``), text without wrappers."""
    text = answer.strip()
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\\(?:left|right|!|,|;)", "", text)
    text = text.replace("$", "").replace("\\%", "").replace("%", "").strip().rstrip(".").strip()
    number = re.fullmatch(r"(-?)\s*(\d[\d,]*(?:\.\d+)?|\.\d+)", text)
    if number:
        digits = number.group(2).replace(",", "")
        value = Fraction(digits) * (-1 if number.group(1) else 1)
        if value.denominator == 1:
            return str(value.numerator)
        return format(float(value), ".12g")
    first_number = re.match(r"(-?\s*\d[\d,]*(?:\.\d+)?)\s*[a-zA-Z]+\s*$", text)  # "18 dollars", "5 eggs"
    if first_number:
        return normalize_answer(first_number.group(1))
    return re.sub(r"\s+", "", text)


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Whether two stated answers are the same (after :func:`normalize_answer`); a missing answer matches nothing."""
    if predicted is None or reference is None:
        return False
    return normalize_answer(predicted) == normalize_answer(reference)


def is_correct(solution: str, reference_answer: str, fallback: bool = True) -> bool:
    """Whether ``solution``'s final answer equals ``reference_answer`` (a bare answer or a reference solution)."""
    reference = extract_answer(reference_answer, fallback=True) if not _is_bare(reference_answer) else reference_answer
    return answers_match(extract_answer(solution, fallback=fallback), reference)


def _is_bare(text: str) -> bool:
    return "\n" not in text.strip() and len(text.strip()) <= 40 and not _HASH.search(text) and not _A_LINE.search(text)
