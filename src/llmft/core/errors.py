"""The one exception type for user mistakes: the CLI prints it as `error: <line>` and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmftError(Exception):
    """A user mistake (bad file, key, value, option): reported in one line, never with a traceback."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
