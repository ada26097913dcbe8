"""Evaluate a run folder with its recipe: build the generator, run, write metrics.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from llmft.core import runs
from llmft.core.config import Config
from llmft.core.errors import LlmftError
from llmft.core.inference import build_generator
from llmft.core.jsonl import iter_jsonl
from llmft.core.positions import position_settings
from llmft.core.results import discard_if_changed


def default_eval_dir(folder: Path) -> Path:
    """runs/<name>/final -> runs/<name>/eval/final; any other folder -> <folder>/eval."""
    if folder.name == runs.FINAL_NAME or folder.name.startswith(runs.CHECKPOINT_PREFIX):
        return folder.parent / runs.EVAL_DIR / folder.name
    return folder / runs.EVAL_DIR


class Evaluates(Protocol):
    """What evaluation needs of a recipe (the command passes the registry's recipe object)."""

    name: str

    def needs_model(self, config: Config) -> bool: ...

    def evaluate(self, generator: Any, config: Config, eval_dir: Path, **options: Any) -> dict: ...


def evaluate_folder(folder: str | Path, config: Config, recipe: Evaluates, out: str | Path | None = None, *,
                    overwrite: bool = False) -> tuple[dict, Path]:
    """Run the recipe's evaluation on one run folder with its (overridden) config; returns (metrics, eval_dir).

    Results made from other weights, eval data or decoding settings are discarded, never reported.
    """
    folder = Path(folder)
    if config.data.eval and not Path(config.data.eval).exists():
        raise LlmftError(f"data.eval: file not found: {config.data.eval} (override with data.eval=PATH)")
    if config.data.eval:
        for _ in iter_jsonl(config.data.eval, what="data.eval"):
            pass  # a malformed file fails here, before earlier results are touched
    if recipe.needs_model(config) and config.eval.backend != "hf":
        raise LlmftError(f"recipe '{recipe.name}' scores the model itself (losses, probes); "
                         f"eval.backend = '{config.eval.backend}' does not expose it: use eval.backend = 'hf'")
    eval_dir = Path(out) if out else default_eval_dir(folder)
    eval_dir.mkdir(parents=True, exist_ok=True)
    results = eval_dir / runs.RESULTS_NAME
    if overwrite:
        results.unlink(missing_ok=True)
    settings = eval_settings(folder, config)
    discard_if_changed(results, settings)
    generator = build_generator(folder, config)
    metrics = recipe.evaluate(generator, config, eval_dir)
    metrics = {"run": str(folder), "recipe": recipe.name, "backend": config.eval.backend, **metrics,
               "settings": settings}
    runs.atomic_write_json(eval_dir / runs.EVAL_METRICS_NAME, metrics)
    return metrics, eval_dir


def eval_settings(folder: Path, config: Config) -> dict[str, Any]:
    """What evaluation results depend on: the weights' files, the eval data file, decoding, the recipe section."""
    decoding = {k: v for k, v in dataclasses.asdict(config.eval).items() if k not in ("batch_size", "backend")}
    section = config.section if isinstance(config.section, dict) else (
        dataclasses.asdict(config.section) if config.section is not None else {})
    settings = {"weights": _files_fingerprint(folder), "data": _files_fingerprint(Path(config.data.eval))
                if config.data.eval else "", "eval": decoding, "section": section}
    positions = position_settings(config)
    if positions is not None:  # the position ids decoding feeds the model
        settings["positions"] = positions
    return settings


def _files_fingerprint(path: Path) -> list[list]:
    """(name, size, mtime) of a file or of a folder's files: changes when a retrain rewrites them."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return [[str(f.relative_to(path) if f != path else f.name), f.stat().st_size, f.stat().st_mtime_ns]
            for f in files]


def metrics_table(rows: dict[str, dict], nested: bool = True) -> str:
    """A plain-text table of the scalar metrics, one column per run; `nested=False` leaves out the rows of
    nested metrics (e.g. accuracy by size) when the recipe prints its own table of them."""
    rows = {name: _flatten(metrics) if nested else {k: v for k, v in metrics.items() if not isinstance(v, dict)}
            for name, metrics in rows.items()}
    keys: list[str] = []
    for metrics in rows.values():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in keys:
                keys.append(key)
    names = list(rows)
    width = max([len(k) for k in keys] + [6])
    cols = [max(len(n), 10) for n in names]
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>{c}}" for n, c in zip(names, cols))]
    for key in keys:
        cells = []
        for name, c in zip(names, cols):
            value = rows[name].get(key, "")
            cells.append(f"{value:>{c}.4f}" if isinstance(value, float) else f"{value!s:>{c}}")
        lines.append(f"{key:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _flatten(metrics: dict) -> dict:
    """Nested scalar metrics (e.g. accuracy by size) as `name[key]` rows."""
    flat: dict = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, (int, float)) and not isinstance(inner, bool):
                    flat[f"{key}[{sub}]"] = inner
        else:
            flat[key] = value
    return flat
