"""The report's plots: accuracy by size with the seeds' spread and the trained sizes shaded, per-method bars
with seed spread. Matplotlib's object API, as core/plots.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmft.core.plots import _figure, _finish


def spread_lines(path: Path, series: dict[str, tuple[Sequence[float], Sequence[Sequence[float]]]], *, title: str,
                 xlabel: str, ylabel: str, shade: tuple[float, float] | None = None, shade_label: str = "",
                 ylim: tuple[float, float] | None = (0, 1.02)) -> Path:
    """One line per series: xs and, per x, the seeds' values; the mean drawn, min-max shaded around it."""
    figure, axes = _figure((7, 4))
    if shade is not None:
        axes.axvspan(shade[0], shade[1], color="0.9", label=shade_label or None, zorder=0)
    for label, (xs, per_x) in series.items():
        means = [sum(v) / len(v) for v in per_x]
        line, = axes.plot(list(xs), means, marker="o", markersize=3, label=label)
        axes.fill_between(list(xs), [min(v) for v in per_x], [max(v) for v in per_x], color=line.get_color(),
                          alpha=0.2, linewidth=0)
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.xaxis.get_major_locator().set_params(integer=True)
    return _finish(figure, axes, path, title, xlabel, ylabel, legend=True)


def spread_bars(path: Path, groups: Sequence[str], bars: dict[str, Sequence[Sequence[float]]], *, title: str,
                ylabel: str, ylim: tuple[float, float] | None = (0, 1.02)) -> Path:
    """Grouped bars of the seeds' mean, whiskers from the lowest to the highest seed, each seed a dot."""
    figure, axes = _figure((max(5, 1.6 * len(groups) + 2), 4))
    width = 0.8 / max(len(bars), 1)
    for i, (label, per_group) in enumerate(bars.items()):
        xs = [g + i * width for g in range(len(groups))]
        means = [sum(v) / len(v) if v else 0.0 for v in per_group]
        low = [m - min(v) if v else 0.0 for m, v in zip(means, per_group)]
        high = [max(v) - m if v else 0.0 for m, v in zip(means, per_group)]
        axes.bar(xs, means, width, label=label, yerr=[low, high], capsize=3)
        for x, values in zip(xs, per_group):
            axes.plot([x] * len(values), list(values), "k.", markersize=3)
    axes.set_xticks([g + width * (len(bars) - 1) / 2 for g in range(len(groups))])
    axes.set_xticklabels(list(groups))
    if ylim is not None:
        axes.set_ylim(*ylim)
    return _finish(figure, axes, path, title, "", ylabel, legend=len(bars) > 1)
