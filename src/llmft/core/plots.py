"""The plots every evaluation draws: lines (a metric against a size or step) and grouped bars.

Matplotlib's object API (`Figure`), not pyplot: no global state, safe from threads (the server) and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def line_plot(path: str | Path, series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
              xlabel: str, ylabel: str, shade: tuple[float, float] | None = None, shade_label: str = "",
              ylim: tuple[float, float] | None = None, symlog_x: bool = False, log_y: bool = False,
              widths: dict[str, float] | None = None,
              right: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None, right_label: str = "") -> Path:
    """One line per series (xs, ys); `shade` marks an x range (e.g. the trained sizes); `right` series are
    drawn dashed against a second y axis (e.g. the learning rate beside the loss); `log_y` for values that
    shrink by orders of magnitude (losses)."""
    figure, axes = _figure((7, 4))
    if shade is not None:
        axes.axvspan(shade[0], shade[1], color="0.9", label=shade_label or None, zorder=0)
    for label, (xs, ys) in series.items():
        axes.plot(list(xs), list(ys), marker="o", markersize=3, label=label,
                  linewidth=(widths or {}).get(label, 1.5))
    steps = sorted({x for xs, _ in series.values() for x in xs})
    if symlog_x and steps:
        axes.set_xscale("symlog", linthresh=min([s for s in steps if s > 0], default=1))
        axes.set_xticks(steps, [f"{s:g}" for s in steps])
        axes.xaxis.set_minor_locator(_null_locator())
    elif steps and all(float(s).is_integer() for s in steps):
        axes.xaxis.get_major_locator().set_params(integer=True)
    if log_y and all(y > 0 for _, ys in series.values() for y in ys):
        axes.set_yscale("log")
    if ylim is not None:
        axes.set_ylim(*ylim)
    if right:
        twin = axes.twinx()
        for label, (xs, ys) in right.items():
            twin.plot(list(xs), list(ys), linestyle="--", color="0.5")
            axes.plot([], [], linestyle="--", color="0.5", label=label)  # one legend for both axes
        twin.set_ylabel(right_label)
    return _finish(figure, axes, path, title, xlabel, ylabel, legend=bool(series))


def bar_plot(path: str | Path, groups: Sequence[str], bars: dict[str, Sequence[float]], *, title: str,
             ylabel: str, ylim: tuple[float, float] | None = None) -> Path:
    """Grouped bars: one group per entry of `groups`, one bar per key of `bars` (its values by group)."""
    figure, axes = _figure((max(5, 1.2 * len(groups) + 2), 4))
    width = 0.8 / max(len(bars), 1)
    for i, (label, values) in enumerate(bars.items()):
        axes.bar([g + i * width for g in range(len(groups))], list(values), width, label=label)
    axes.set_xticks([g + width * (len(bars) - 1) / 2 for g in range(len(groups))])
    axes.set_xticklabels(list(groups), rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    if ylim is not None:
        axes.set_ylim(*ylim)
    return _finish(figure, axes, path, title, "", ylabel, legend=len(bars) > 1)


def score_bars(path: str | Path, metrics_by_run: dict[str, dict], scores: dict[str, str], *, title: str) -> Path:
    """Shares in [0, 1] as bars: one group per score (metric key -> label), one bar per run."""
    return bar_plot(path, list(scores.values()),
                    {run: [float(metrics.get(key) or 0.0) for key in scores] for run, metrics in metrics_by_run.items()},
                    title=title, ylabel="share of examples", ylim=(0, 1))


def eval_sets(metrics_by_run: dict[str, dict]) -> str:
    """What several runs were scored on, for a comparison's title: the one eval file, or how many differ."""
    files = sorted({str(metrics.get("data_eval") or "?") for metrics in metrics_by_run.values()})
    return files[0] if len(files) == 1 else f"{len(files)} different eval sets ({', '.join(files)})"


def _figure(size: tuple[float, float]) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    return figure, figure.subplots()


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _finish(figure: Any, axes: Any, path: str | Path, title: str, xlabel: str, ylabel: str, legend: bool) -> Path:
    axes.set_title(title)
    if xlabel:
        axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if legend:
        axes.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
