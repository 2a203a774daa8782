"""Data: the canonical preference record, readers for the formats users bring, built-in datasets."""

from rewardkit.data.readers import DataError, ReadReport, read_preferences
from rewardkit.data.record import PreferenceExample

__all__ = ["DataError", "PreferenceExample", "ReadReport", "read_preferences"]
