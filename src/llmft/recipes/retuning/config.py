"""The `[retuning]` section of a Re-Tuning run's TOML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from llmft.core.bounds import Range, at_least


@dataclass
class RetuningConfig:
    """[retuning]: the task and format the run trains on, and the recursion limit at evaluation."""

    BOUNDS: ClassVar[dict[str, Range]] = {"max_size": at_least(0), "max_depth": at_least(0)}

    task: Literal["addition", "parity", "dp"] = "addition"
    format: Literal["recursive", "scratchpad", "baseline"] = "recursive"
    # Largest training size (digits, list or array length), which splits "in range" from "beyond";
    # 0 = what make-data wrote into the eval records.
    max_size: int = 0
    # Recursion depth cap; 0 = the reference's: 2 x size for addition and parity, 35 for DP.
    max_depth: int = 0
