"""The one exception type for a user's mistake, so the CLI can tell it from a bug in rewardkit.

A :class:`UserError` (or a subclass: ``DataError``, ``ModelLoadError``, ``ConfigError``, ``TieError``)
means "what you gave cannot work, and here is what to do": the CLI prints its message on one line and
exits 2. Anything else that escapes is a defect of rewardkit; the CLI keeps its traceback and asks for
a report (exit 1), instead of disguising it as bad input. It subclasses ``ValueError`` so code that
caught ``ValueError`` before keeps working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A flag, config, file, record or model the user gave cannot be used; the message says what to do."""


class ConfigError(UserError):
    """A config field is out of its range or not one of its choices; the message names field and range."""


class DataError(UserError):
    """Bad input data; the message names the file and line and says what to do."""


class RecordError(UserError):
    """One record is bad; ``reason`` is a short category used for skip counts."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
