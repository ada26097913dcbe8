"""Evaluate a run folder with its recipe: build the generator, run, write metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.artifacts import base_model_path, is_adapter, load_for_inference, read_run_config
from llmft.core.config import Config, load_config
from llmft.core.errors import LlmftError


def default_eval_dir(folder: Path) -> Path:
    """runs/<name>/final -> runs/<name>/eval/final; any other folder -> <folder>/eval."""
    if folder.name == runs.FINAL_NAME or folder.name.startswith(runs.CHECKPOINT_PREFIX):
        return folder.parent / "eval" / folder.name
    return folder / "eval"


def build_generator(folder: Path, config: Config) -> Any:
    """The configured backend over a run folder: HF (default, CPU or GPU) or vLLM (GPU)."""
    if config.eval.backend == "vllm":
        from llmft.core.models import cuda_available
        from llmft.core.vllm_backend import VLLMGenerator, require_vllm

        require_vllm()
        if not cuda_available():
            raise LlmftError("eval.backend = 'vllm' needs a CUDA GPU; this machine has none (use eval.backend = 'hf')")
        if is_adapter(folder):
            return VLLMGenerator(base_model_path(folder, config), str(folder), max_lora_rank=config.adapter.r,
                                 tokenizer_path=str(folder))
        return VLLMGenerator(str(folder), None)
    from llmft.core.generation import HFGenerator

    _, tokenizer, model = load_for_inference(folder)
    return HFGenerator(model, tokenizer, batch_size=config.eval.batch_size)


def evaluate_folder(folder: str | Path, overrides: list[str], out: str | Path | None = None) -> tuple[dict, Path]:
    """Run the recipe's evaluation on one run folder; returns (metrics, eval_dir)."""
    from llmft.recipes.base import get_recipe

    folder = Path(folder)
    read_run_config(folder)  # a clear error for a missing or foreign folder
    config = load_config(folder / runs.CONFIG_NAME, overrides)
    recipe = get_recipe(config.recipe)
    if config.data.eval and not Path(config.data.eval).exists():
        raise LlmftError(f"data.eval: file not found: {config.data.eval} (override with data.eval=PATH)")
    eval_dir = Path(out) if out else default_eval_dir(folder)
    eval_dir.mkdir(parents=True, exist_ok=True)
    generator = build_generator(folder, config)
    metrics = recipe.evaluate(generator, config, eval_dir)
    metrics = {"run": str(folder), "recipe": recipe.name, "backend": config.eval.backend, **metrics}
    runs.atomic_write_json(eval_dir / "metrics.json", metrics)
    return metrics, eval_dir


def metrics_table(rows: dict[str, dict]) -> str:
    """A plain-text table of the scalar metrics, one column per run."""
    rows = {name: _flatten(metrics) for name, metrics in rows.items()}
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
