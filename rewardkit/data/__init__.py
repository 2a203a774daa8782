"""Data: the canonical preference record, readers for the formats users bring, margins, built-in datasets."""

from rewardkit.data.margins import apply_margins, pair_margins, parse_likert
from rewardkit.data.readers import DataError, ReadReport, read_preferences
from rewardkit.data.record import PreferenceExample

__all__ = [
    "DataError", "PreferenceExample", "ReadReport", "apply_margins", "pair_margins", "parse_likert", "read_preferences",
]
