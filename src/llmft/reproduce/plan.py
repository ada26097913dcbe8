"""What a paper's plan is made of: stages (commands), tables of per-seed figures, claims, plots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    """One command of the plan: `llmft <argv>`; `weight` is its expected cost relative to the others; `after`
    names the stages whose output it reads (it starts only once they finished)."""

    name: str
    argv: tuple[str, ...]
    weight: float = 1.0
    after: tuple[str, ...] = ()


@dataclass
class Table:
    """Per-seed figures: `cells[row][column]` is one value per seed (in seed order); `paper[row]` the
    reference's figures for that row as text."""

    name: str
    title: str
    columns: list[str]
    cells: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    paper: dict[str, str] = field(default_factory=dict)
    paper_header: str = "paper"
    digits: int = 2
    note: str = ""
    seeds: int = 0

    def values(self, row: str, column: str) -> list[float]:
        """The per-seed values of one cell; [] unless every seed's value is there (when `seeds` is set)."""
        values = self.cells.get(row, {}).get(column, [])
        return values if not self.seeds or len(values) == self.seeds else []

    def add(self, row: str, column: str, value: float | None) -> None:
        """Append one seed's value (None: the figure is missing, nothing is added)."""
        if value is not None:
            self.cells.setdefault(row, {}).setdefault(column, []).append(float(value))


@dataclass(frozen=True)
class Claim:
    """A sentence about the tables and the test that decides it (None: the tables lack the figures)."""

    text: str
    check: Callable[[dict[str, Table]], bool | None]


@dataclass
class Settings:
    """How the plan is asked for: seeds, quick or full, which presets, extra `key=value` for every training, and
    how many stages run at once."""

    out: Path
    seeds: Sequence[int] = (0, 1, 2)
    quick: bool = False
    preset: str = "tiny"
    overrides: Sequence[str] = ()
    jobs: int = 1


@dataclass
class Plan:
    """A paper's miniature: stages (listed so that each comes after the ones it needs), then `collect` reads
    the tables and `draw` plots them."""

    paper: str
    title: str
    summary: str
    stages: list[Stage]
    collect: Callable[[Path], list[Table]]
    claims: list[Claim]
    draw: Callable[[list[Table], Path], list[Path]] = lambda tables, out: []
    notes: str = ""
