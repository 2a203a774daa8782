"""Record-level transforms applied after reading: flattening rankings into pairs, dropping ties.

Each returns the new records and a count of what it changed, so the training report can say so.
"""

from __future__ import annotations

from rewardkit.data.record import PreferenceExample


def flatten_rankings(examples: list[PreferenceExample]) -> tuple[list[PreferenceExample], int]:
    """Replace each K-wise ranking by its C(K,2) pairs as independent records (the baseline eq. 6 fixes).

    Pairs keep the prompt, subset, aspect, id and per-completion scores; a tied pair stays a tie. Returns the
    records and how many rankings (K > 2) were flattened.
    """
    out: list[PreferenceExample] = []
    flattened = 0
    for ex in examples:
        if len(ex.completions) == 2:
            out.append(ex)
            continue
        flattened += 1
        for better, worse, tied in ex.preference_pairs():
            out.append(PreferenceExample(
                prompt=ex.prompt,
                completions=[ex.completions[better], ex.completions[worse]],
                ranking=[0, 1],
                ties=[[0, 1]] if tied else None,
                scores=[ex.scores[better], ex.scores[worse]] if ex.scores else None,
                subset=ex.subset,
                id=ex.id,
                aspect=ex.aspect,
                source=f"{ex.source} (pair {better}>{worse})",
            ))
    return out, flattened


def drop_ties(examples: list[PreferenceExample]) -> tuple[list[PreferenceExample], int]:
    """Remove records that are entirely ties (e.g. a pair judged equal); returns (kept, dropped count).

    Partial ties inside a ranking are kept: the losses that cannot use them refuse with a clear error.
    """
    kept = [ex for ex in examples if not ex.is_tie]
    return kept, len(examples) - len(kept)
