"""Margins for the margin loss (eq. 5, Llama 2): how strongly the chosen completion is preferred.

Eq. 5 is L = −log σ(r_w − r_l − m(r)). The margin m(r) comes from one of three places, chosen by
``apply_margins(examples, source, scale)``:

* ``"none"``: no margins (eq. 3); margins present in the data are dropped.
* ``"field"``: the record's own ``margin``. In a data file it is a number, or a Likert category
  ("significantly better", "better", …) that the *reader* maps to a number with a configurable
  table (``read_preferences(..., likert=...)``; default ``LLAMA2_LARGE``). The mapping happens at
  read time because ``PreferenceExample.margin`` is a float: the category string has nowhere to
  live after reading, so there is exactly one place where categories become numbers.
* ``"scores"``: from per-completion ratings (e.g. UltraFeedback's 1–10), the scaled score
  difference ``scale · (s_better − s_worse)`` (``margin_from_scores``). For a pair that is the
  margin of chosen over rejected; for K-wise rankings ``pair_margins`` gives one margin per
  preference pair (eq. 6), in ``PreferenceExample.preference_pairs()`` order.

Llama 2 (Touvron et al. 2023, Table 28) used two discrete scales for its four answer categories;
both are here. "negligibly better" and "unsure" were one answer there and both map to 0.

Tied records (``is_tie``: no completion preferred) get no margin; a tied pair inside a K-wise
ranking has margin 0. Records that lack what the chosen source needs, and negative margins
(the "better" side rated lower), are errors naming the records, never a silent margin of 0.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

from rewardkit.data.record import PreferenceExample
from rewardkit.errors import DataError, UserError

LLAMA2_LARGE: dict[str, float] = {
    "significantly better": 3.0, "better": 2.0, "slightly better": 1.0, "negligibly better": 0.0, "unsure": 0.0,
}
LLAMA2_SMALL: dict[str, float] = {
    "significantly better": 1.0, "better": 2 / 3, "slightly better": 1 / 3, "negligibly better": 0.0, "unsure": 0.0,
}
LIKERT_PRESETS: dict[str, dict[str, float]] = {"llama2-large": LLAMA2_LARGE, "llama2-small": LLAMA2_SMALL}
MARGIN_SOURCES = ("none", "field", "scores")


def normalize_category(name: str) -> str:
    """'Significantly_Better ' → 'significantly better': categories match case- and separator-blind."""
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def parse_likert(spec: str | Mapping[str, float] | None) -> dict[str, float]:
    """A Likert → margin table from a preset name, a ``"category=value,…"`` string, or a mapping.

    ``None`` gives ``LLAMA2_LARGE``. Presets: ``llama2-large``, ``llama2-small``. Values may be
    numbers or fractions (``better=2/3``) and must be ≥ 0 (a margin is how much the chosen wins by).
    """
    if spec is None:
        return dict(LLAMA2_LARGE)
    if isinstance(spec, str):
        if spec.strip().lower() in LIKERT_PRESETS:
            return dict(LIKERT_PRESETS[spec.strip().lower()])
        items: list[tuple[str, object]] = []
        for part in spec.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise UserError(
                    f"Likert mapping {spec!r}: {part.strip()!r} has no '='; write 'category=value,…', "
                    f"e.g. 'significantly better=3,better=2,slightly better=1,negligibly better=0', "
                    f"or a preset: {', '.join(LIKERT_PRESETS)}."
                )
            key, value = part.split("=", 1)
            items.append((key, value))
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        raise UserError(f"Likert mapping must be a preset name, a 'category=value,…' string or a mapping, "
                         f"got {type(spec).__name__}.")
    table: dict[str, float] = {}
    for key, value in items:
        if not isinstance(key, str) or not normalize_category(key):
            raise UserError(f"Likert mapping: category {key!r} must be non-empty text.")
        name = normalize_category(key)
        if name in table:
            raise UserError(f"Likert mapping: category {name!r} is given twice.")
        table[name] = _category_value(name, value)
    if not table:
        raise UserError("Likert mapping is empty; give at least one 'category=value'.")
    return table


def _category_value(name: str, value: object) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                number = float(num) / float(den)
            else:
                number = float(text)
        except (ValueError, ZeroDivisionError):
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise UserError(f"Likert mapping: the margin of {name!r} must be a number ≥ 0 (e.g. 2 or 2/3), got {value!r}.")
    return number


def likert_margin(category: str, likert: Mapping[str, float]) -> float:
    """The margin of one Likert category; an unknown category is an error listing the known ones."""
    name = normalize_category(category)
    if name not in likert:
        raise UserError(f"unknown preference category {category!r}; known: {', '.join(repr(k) for k in likert)} "
                         "(or give the margin as a number, or configure the Likert mapping).")
    return float(likert[name])


def margin_from_scores(score_better: float, score_worse: float, scale: float = 1.0) -> float:
    """Eq. 5 margin from numeric ratings: ``scale · (score_better − score_worse)``.

    With 1–10 ratings and ``scale=1`` a 9-vs-6 pair must win by 3 reward units, as much as
    Llama 2's "significantly better" in the large scale; ``scale`` shrinks or widens that.
    """
    return scale * (score_better - score_worse)


def pair_margins(example: PreferenceExample, scale: float = 1.0) -> list[float]:
    """One margin per ``example.preference_pairs()`` entry (eq. 5 applied to the C(K,2) pairs of eq. 6).

    From ``scores`` when present (tied pairs get 0); a pair without scores uses its ``margin``.
    """
    pairs = example.preference_pairs()
    if example.scores is not None:
        return [0.0 if tied else margin_from_scores(example.scores[b], example.scores[w], scale)
                for b, w, tied in pairs]
    if len(example.completions) == 2 and example.margin is not None:
        return [0.0 if pairs[0][2] else example.margin]
    raise UserError(f"{example.source}: no scores (or, for a pair, no margin) to compute margins from.")


def apply_margins(examples: Sequence[PreferenceExample], source: str, scale: float = 1.0) -> list[PreferenceExample]:
    """Copies of ``examples`` with ``margin`` set from ``source`` (see the module docstring).

    ``scale`` multiplies score differences (source ``"scores"``); ``"field"`` margins are used as
    given (their scale is the Likert table's). Raises ``DataError`` naming the records that lack
    what the source needs or that would get a negative margin.
    """

    if source not in MARGIN_SOURCES:
        raise UserError(f"unknown margin source {source!r}; use one of {', '.join(MARGIN_SOURCES)}.")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise UserError(f"margin scale must be a finite number > 0, got {scale!r}.")
    out: list[PreferenceExample] = []
    missing: list[str] = []
    negative: list[str] = []
    for ex in examples:
        margin: float | None = None
        if source == "none" or ex.is_tie:
            pass
        elif source == "field":
            if ex.margin is None:
                missing.append(ex.source)
            margin = ex.margin
        else:
            if ex.scores is None:
                missing.append(ex.source)
            else:
                top_tied = ex.ranks[ex.ranking[0]] == ex.ranks[ex.ranking[1]]
                margin = 0.0 if top_tied else margin_from_scores(
                    ex.scores[ex.ranking[0]], ex.scores[ex.ranking[1]], scale)
        if margin is not None and margin < 0:
            negative.append(f"{ex.source} ({margin:g})")
        out.append(dataclasses.replace(ex, margin=margin))
    what = "a 'margin' field (a number or a Likert category)" if source == "field" else "per-completion 'scores'"
    if missing:
        raise DataError(
            f"margin source '{source}' needs {what}, but {len(missing)} of {len(out)} records have none "
            f"(e.g. {', '.join(missing[:3])}). Use data that has them, or another margin source "
            f"({', '.join(s for s in MARGIN_SOURCES if s != source)})."
        )
    if negative:
        raise DataError(
            f"margin source '{source}' gives {len(negative)} records a negative margin, i.e. the preferred "
            f"completion is rated lower (e.g. {', '.join(negative[:3])}). Fix those labels or ratings, "
            "or use margin source 'none'."
        )
    return out
