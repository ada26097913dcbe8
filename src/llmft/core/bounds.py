"""Ranges of numeric settings: one table per place a setting is declared (a config section, a verb's options),
checked in one pass that names every value out of range."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """low <= value <= high (each end open when its flag says so; None = unbounded); NaN is never in range."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return (f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.high_open else ']'}")


def at_least(low: float) -> Range:
    return Range(low=low)


def above(low: float) -> Range:
    return Range(low=low, low_open=True)


def between(low: float, high: float, high_open: bool = False) -> Range:
    return Range(low=low, high=high, high_open=high_open)


def out_of_range(values: Mapping[str, Any] | Callable[[str], Any], table: Mapping[str, Range],
                 name: Callable[[str], str]) -> list[str]:
    """One message per value outside its range, `name(key)` naming it (`key 'train.batch_size'`, `--n`)."""
    read = values if callable(values) else values.get
    errors = []
    for key, bound in table.items():
        value = read(key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not bound.holds(value):
            errors.append(f"{name(key)} must be {bound.describe()}, got {value!r}")
    return errors


def _number(value: float | None) -> str:
    return repr(int(value)) if isinstance(value, float) and value.is_integer() else repr(value)
