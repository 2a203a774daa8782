"""Final-answer reading and comparison (rewardkit.data.answers), by hand and against GSM8K's own labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.data.answers import answers_match, extract_answer, is_correct, normalize_answer

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"


@pytest.mark.parametrize("text, answer", [
    ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
    ("She makes 9 * 2 = $<<9*2=18>>18\nA: 18", "18"),
    ("so the result is \\boxed{\\frac{3}{4}} in total", "\\frac{3}{4}"),
    ("nested \\boxed{\\sqrt{2^{3}}} here", "\\sqrt{2^{3}}"),
    ("First 3, then 4. The answer is $1,250.", "$1,250"),
    ("It costs 3 and then 17 more", "17"),
    ("#### 5\nlater text #### 6", "6"),  # the last marker wins
    ("no number at all", None),
])
def test_extract_answer(text: str, answer: str | None) -> None:
    assert extract_answer(text) == answer


def test_fallback_off_needs_an_explicit_answer() -> None:
    assert extract_answer("It costs 3 and then 17 more", fallback=False) is None
    assert extract_answer("#### 17", fallback=False) == "17"


@pytest.mark.parametrize("a, b, same", [
    ("1,000", "1000", True), ("$18", "18", True), ("18.0", "18", True), ("0.50", ".5", True),
    ("-3", "3", False), ("18 dollars", "18", True), ("\\text{(B)}", "(B)", True),
    ("\\frac{1}{2}", "\\frac {1}{2}", True), ("\\frac{1}{2}", "0.5", False),
])
def test_answers_match(a: str, b: str, same: bool) -> None:
    assert answers_match(a, b) is same
    assert (normalize_answer(a) == normalize_answer(b)) is same


def test_missing_answer_matches_nothing() -> None:
    assert not answers_match(None, "3") and not answers_match("3", None)


@pytest.mark.skipif(not GSM8K.exists(), reason="needs ../shared/data/gsm8k")
def test_agrees_with_every_released_gsm8k_label() -> None:
    """GSM8K's 5,276 released model solutions carry is_correct; the checker must reproduce each one."""
    disagree, total = [], 0
    for line_no, line in enumerate((GSM8K / "example_model_solutions.jsonl").open(), 1):
        row = json.loads(line)
        for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
            total += 1
            if is_correct(row[key]["solution"], row["ground_truth"]) != row[key]["is_correct"]:
                disagree.append((line_no, key))
    assert total == 5276 and disagree == []
