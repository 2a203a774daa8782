"""Reading a verdict out of free text (sampling mode), and voting over several samples.

The parser never guesses. It collects every explicit verdict marker in the text:

* bracketed: ``[[A]]``, ``[[ 7 ]]``, ``[[7/10]]``;
* labelled: ``Verdict: B``, ``Final verdict: A``, ``Answer: Yes``, ``Rating: 7/10``, ``Score = 8``
  (markdown bold around the value is allowed);
* the whole reply being a bare verdict (``A``, ``Yes.``, ``7``).

Then: no marker → ``unparseable``; markers with two different values → ``ambiguous`` (``[[A]] … [[B]]``);
one value that is not a verdict of this judge → ``invalid`` (``[[C]]``, ``Rating: 11``); otherwise the
verdict (repeating the same verdict is fine). Each outcome is counted separately by the caller.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

OK, UNPARSEABLE, AMBIGUOUS, INVALID = "ok", "unparseable", "ambiguous", "invalid"
STATUSES = (OK, UNPARSEABLE, AMBIGUOUS, INVALID)

_BRACKET = re.compile(r"\[\[\s*([^\[\]\n]{1,24}?)\s*\]\]")
_LABELLED = re.compile(
    r"\b(?:final\s+)?(?:verdict|answer|rating|score|judgement|judgment)\s*(?:is)?\s*[:=]\s*\**\s*"
    r"([A-Za-z]+|\d+(?:\.\d+)?(?:\s*/\s*10)?)\b",
    re.IGNORECASE,
)
_OUT_OF_TEN = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*10$")


@dataclass(frozen=True)
class ParsedVerdict:
    status: str  # one of STATUSES
    verdict: str | None = None  # the label, when status == "ok"
    found: tuple[str, ...] = ()  # the raw values found, for reports


def _normalise(value: str, labels: dict[str, str]) -> str:
    value = value.strip().strip("*").strip()
    m = _OUT_OF_TEN.match(value)
    if m:
        value = m.group(1)
    if re.fullmatch(r"\d+\.0+", value):
        value = value.split(".")[0]
    return labels.get(value.lower(), value)


def parse_verdict(text: str, labels: list[str]) -> ParsedVerdict:
    """The verdict in ``text`` among ``labels`` (matched case-insensitively), or why there is none."""
    by_lower = {label.lower(): label for label in labels}
    raw = [m.group(1) for m in _BRACKET.finditer(text)] + [m.group(1) for m in _LABELLED.finditer(text)]
    if not raw:
        bare = text.strip().strip(".!*\"'`").strip()
        if bare and len(bare) <= 24 and ("\n" not in bare) and _normalise(bare, by_lower) in labels:
            raw = [bare]
    if not raw:
        return ParsedVerdict(UNPARSEABLE)
    values = {_normalise(v, by_lower) for v in raw}
    if len(values) > 1:
        return ParsedVerdict(AMBIGUOUS, found=tuple(raw))
    (value,) = values
    if value not in labels:
        return ParsedVerdict(INVALID, found=tuple(raw))
    return ParsedVerdict(OK, value, tuple(raw))


def vote(parsed: list[ParsedVerdict]) -> tuple[Counter, Counter]:
    """(votes per verdict label, outcome counts per status) over several samples."""
    votes = Counter(p.verdict for p in parsed if p.status == OK)
    statuses = Counter({s: 0 for s in STATUSES})
    statuses.update(p.status for p in parsed)
    return votes, statuses


def majority(votes: Counter) -> str | None:
    """The label with strictly the most votes; None when there are none or the top is tied."""
    top = votes.most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return top[0][0]
