"""Which claims the figures show: a pure function of the tables, so the report's wording cannot drift."""

from __future__ import annotations

from collections.abc import Sequence

from llmft.reproduce.plan import Claim, Table


def judge(claims: Sequence[Claim], tables: Sequence[Table]) -> tuple[list[str], list[str], list[str]]:
    """(shown, not shown, not measured) claim texts; a claim whose figures are missing is not measured."""
    by_name = {table.name: table for table in tables}
    shown, not_shown, missing = [], [], []
    for claim in claims:
        verdict = claim.check(by_name)
        (missing if verdict is None else shown if verdict else not_shown).append(claim.text)
    return shown, not_shown, missing


def claim_lines(claims: Sequence[Claim], tables: Sequence[Table]) -> list[str]:
    """The report's lines: "Claims shown: ...", "Claims not shown: ..." (and "Not measured: ..." if any)."""
    shown, not_shown, missing = judge(claims, tables)
    lines = [f"**Claims shown:** {'; '.join(shown) if shown else 'none'}.",
             f"**Claims not shown:** {'; '.join(not_shown) if not_shown else 'none'}."]
    if missing:
        lines.append(f"**Not measured (a run is missing):** {'; '.join(missing)}.")
    return lines


def every_seed(table: Table, better: tuple[str, str], worse: tuple[str, str], margin: float = 0.0) -> bool | None:
    """Whether cell `better` (row, column) beats cell `worse` by more than `margin` on every seed."""
    high, low = table.values(*better), table.values(*worse)
    if not high or len(high) != len(low):
        return None
    return all(h > lo + margin for h, lo in zip(high, low))


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean (nan for no values)."""
    return sum(values) / len(values) if values else float("nan")
