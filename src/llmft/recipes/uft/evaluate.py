"""What the model still knows: losses on the ID / Task / Complement / Adversarial sets, the generation
score (stories sampled for prompts that request the feature, judged), the recovery curve over reFT
checkpoints, and per-layer linear probes. Rows go to results.jsonl (resumable), plots to PNG.
"""

from __future__ import annotations

import gc
import itertools
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmft.core.errors import LlmftError, did_you_mean
from llmft.core.jsonl import iter_jsonl, read_jsonl
from llmft.core.plots import bar_plot, line_plot
from llmft.core.results import ResultsLog
from llmft.core.runs import CHECKPOINT_PREFIX, CONFIG_NAME, FINAL_NAME, RESULTS_NAME, atomic_write_text
from llmft.recipes.uft.checker import FEATURES
from llmft.recipes.uft.judge import EndpointJudge, Judge, RulesJudge, Shot, cached_shots
from llmft.recipes.uft.text import STOP_STRINGS, cut_story, instruction_value, split_text, story_prompt

SETS = ("id", "task", "complement", "adversarial")


# --------------------------------------------------------------------------------------------------
# Losses


def set_loss(model: Any, tokenizer: Any, records: Sequence[dict], batch_size: int = 8,
             max_length: int = 1024) -> float:
    """Mean next-token cross-entropy over every trained token of the text records (as training sees them)."""
    from llmft.core.data import tokenize_record
    from llmft.core.scoring import example_losses

    examples = [tokenize_record(record, tokenizer, max_length) for record in records]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sums = example_losses(model, examples, pad, batch_size=batch_size, reduction="sum")
    return sum(sums) / max(sum(example.trained for example in examples), 1)


# --------------------------------------------------------------------------------------------------
# Generation score


def story_prompts(records: Sequence[dict], feature: str, n: int) -> list[str]:
    """Prompts of the first `n` records that request the feature: their instruction lines, then `Story:`."""
    return [story_prompt(r["text"]) for r in records if feature in r.get("features", [])][:n]


def generation_rows(generator: Any, prompts: Sequence[str], feature: str, judge: Judge, log: ResultsLog, *,
                    step: int | None = None, batch_size: int = 16, max_new_tokens: int = 350,
                    temperature: float = 1.0, seed: int = 0) -> list[dict]:
    """Sample a story per prompt and judge it; rows already in the log (same step) are kept, not redone."""
    keys = [("generation", step, i) for i in range(len(prompts))]
    log.todo(keys, desc="stories" if step is None else f"stories (recovery step {step})")
    for start in range(0, len(prompts), batch_size):
        todo = [i for i in range(start, min(start + batch_size, len(prompts))) if keys[i] not in log]
        if not todo:
            continue
        # The seed depends on the chunk only, so a resumed evaluation samples what an uninterrupted one would.
        outputs = generator.generate([prompts[i] for i in todo], max_new_tokens=max_new_tokens,
                                     stop=STOP_STRINGS, temperature=temperature, seed=seed + start)
        stories = [cut_story(text) for text in outputs]
        for i, story, verdict in zip(todo, stories, judge(stories, feature), strict=True):
            log.add(keys[i], {"kind": "generation", "step": step, "feature": feature, "prompt": prompts[i],
                              "story": story, "has_feature": bool(verdict)})
    return log.rows(keys)


def make_judge(section: Any, task: Sequence[dict] = (), complement: Sequence[dict] = ()) -> Judge:
    """The configured judge; the endpoint's few-shot examples come from the Task (Yes) and Complement (No)
    sets, with the story's summary as the reasoning, as the reference builds its shots."""
    if section.judge == "rules":
        return RulesJudge()
    shots = []
    for records, answer in ((task, True), (complement, False)):
        for record in list(records)[:section.judge_shots]:
            shots.append(Shot(split_text(record["text"])[1], instruction_value(record["text"], "Summary"), answer))
    shots_text = ""
    if section.judge_shots_file:
        path = Path(section.judge_shots_file)
        if not path.is_file():
            raise LlmftError(f"[uft] judge_shots_file: file not found: {path}")
        shots_text = cached_shots(path.read_text(encoding="utf-8"), section.judge_shots)
    api_key = os.environ.get(section.judge_key_env, "") if section.judge_key_env else ""
    return EndpointJudge(section.judge_url, section.judge_model, api_key, shots, shots_text=shots_text)


# --------------------------------------------------------------------------------------------------
# Recovery curve


def recovery_folder(config: Any, step: int) -> Path:
    """The model after `step` reFT steps: step 0 is the run's starting model (model.name), others its
    checkpoint-<step>/ (final/ for the last step)."""
    if step == 0:
        folder = Path(config.model.name)
        if not (folder / CONFIG_NAME).is_file():
            raise LlmftError(f"[uft] recovery step 0 is the run's starting model, but model.name = "
                             f"'{config.model.name}' is not an llmft run folder")
        return folder
    output_dir = Path(config.train.output_dir)
    for folder in (output_dir / f"{CHECKPOINT_PREFIX}{step}",
                   output_dir / FINAL_NAME if step == config.train.max_steps else None):
        if folder is not None and (folder / CONFIG_NAME).is_file():
            return folder
    raise LlmftError(f"[uft] recovery_steps: no checkpoint for step {step} in {output_dir} (train with "
                     f"train.save_steps dividing {step} and a save_total_limit that keeps it)")


def recovery_table(scores_by_step: dict[int, dict[str, float]]) -> str:
    """The reference's table: a row per deletion run, a column per reFT step, scores to two decimals."""
    steps = sorted(scores_by_step)
    runs: list[str] = []
    for step in steps:
        runs += [run for run in scores_by_step[step] if run not in runs]
    lines = ["| deletion (LR) | " + " | ".join(str(s) for s in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for run in runs:
        cells = [f"{scores_by_step[s][run]:.2f}" if run in scores_by_step[s] else "-" for s in steps]
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recovery_scores(metrics: dict) -> dict[int, float]:
    """{step: generation score} from a metrics dict's `recovery/<step>` entries."""
    return {int(key.split("/", 1)[1]): value for key, value in metrics.items()
            if re.fullmatch(r"recovery/\d+", key)}


# --------------------------------------------------------------------------------------------------
# The recipe's evaluation


def eval_sets(config: Any, section: Any) -> dict[str, str]:
    """{set name: JSONL path} of the configured loss sets; the ID set defaults to data.eval."""
    paths = {"id": section.id_set or config.data.eval, "task": section.task_set,
             "complement": section.complement_set, "adversarial": section.adversarial_set}
    for name, path in paths.items():
        if path and not Path(path).is_file():
            raise LlmftError(f"[uft] {name}_set: file not found: {path}")
    return {name: path for name, path in paths.items() if path}


def evaluate_uft(generator: Any, config: Any, section: Any, eval_dir: Path) -> dict:
    """Losses, generation score, recovery curve and probes as configured in [uft]; writes rows and plots.

    Losses and probes read the model itself: the recipe declares it (needs_model), so a backend without
    one (vLLM) is refused before anything runs instead of silently skipping those metrics.
    """
    if section.feature not in FEATURES:
        raise LlmftError(f"[uft] feature: unknown feature '{section.feature}'"
                         f"{did_you_mean(section.feature, FEATURES)}; features are {', '.join(FEATURES)}")
    eval_dir = Path(eval_dir)
    sets = eval_sets(config, section)
    limit = section.loss_examples
    records = {name: read_jsonl(path, what=f"[uft] {name}_set")[:limit or None] for name, path in sets.items()}
    model, tokenizer = generator.model, generator.tokenizer
    metrics: dict[str, Any] = {"feature": section.feature}
    with ResultsLog(eval_dir / RESULTS_NAME) as log:
        for name, rows in records.items():
            metrics[f"loss/{name}"] = _loss_row(log, name, model, tokenizer, rows, config)["loss"]
        prompt_path = section.prompt_set or sets.get("adversarial") or sets.get("task") or sets.get("id", "")
        if section.n_generations and prompt_path:
            prompts = story_prompts(read_jsonl(prompt_path, what="[uft] prompt_set"), section.feature,
                                    section.n_generations)
            if not prompts:
                raise LlmftError(f"[uft] prompt_set {prompt_path}: no record requests {section.feature}")
            judge = make_judge(section, records.get("task", ()), records.get("complement", ()))
            options = {"batch_size": config.eval.batch_size, "max_new_tokens": section.story_tokens,
                       "temperature": section.temperature, "seed": config.eval.seed}
            rows = generation_rows(generator, prompts, section.feature, judge, log, **options)
            metrics["generation_score"] = _mean(r["has_feature"] for r in rows)
            for step in section.recovery_steps:
                rows = _recovery_rows(config, step, prompts, section.feature, judge, log, options)
                metrics[f"recovery/{step}"] = _mean(r["has_feature"] for r in rows)
        if section.probes:
            probe_records = _probe_records(section, sets)
            accuracy = _probe_rows(log, model, tokenizer, probe_records, section, config.eval.seed)
            metrics["probe_accuracy"] = {f: {str(layer): accuracy[layer][f] for layer in accuracy}
                                         for f in next(iter(accuracy.values()))}
            for layer, by_feature in accuracy.items():
                if section.feature in by_feature:
                    metrics[f"probe/{section.feature}/layer{layer}"] = by_feature[section.feature]
    _write_plots(metrics, eval_dir, Path(config.train.output_dir).name)
    return metrics


def _loss_row(log: ResultsLog, name: str, model: Any, tokenizer: Any, records: list[dict], config: Any) -> dict:
    key = ("loss", name)
    if key in log:
        return log.get(key)
    loss = set_loss(model, tokenizer, records, batch_size=max(1, min(config.eval.batch_size, 16)),
                    max_length=config.data.max_length)
    return log.add(key, {"kind": "loss", "set": name, "loss": loss, "records": len(records)})


def _recovery_rows(config: Any, step: int, prompts: list[str], feature: str, judge: Judge, log: ResultsLog,
                   options: dict) -> list[dict]:
    keys = [("generation", step, i) for i in range(len(prompts))]
    if all(key in log for key in keys):
        return log.rows(keys)
    from llmft.core.inference import build_generator

    generator = build_generator(recovery_folder(config, step), config)
    try:
        return generation_rows(generator, prompts, feature, judge, log, step=step, **options)
    finally:
        del generator
        gc.collect()
        _empty_cuda_cache()


def _probe_records(section: Any, sets: dict[str, str]) -> list[dict]:
    path = section.probe_set or sets.get("id", "")
    if not path:
        raise LlmftError("[uft] probes need records: set probe_set, id_set or data.eval")
    records = [r for r in read_jsonl(path, what="[uft] probe_set") if "story_features" in r or "features" in r]
    return records[:section.probe_examples or None]


def _probe_train_records(section: Any) -> list[dict]:
    """[uft] probe_train_set from its start: as many stories as the reference's training draws, at most."""
    if not section.probe_train_set:
        return []
    if not Path(section.probe_train_set).is_file():
        raise LlmftError(f"[uft] probe_train_set: file not found: {section.probe_train_set}")
    wanted = section.probe_steps * section.probe_batch if section.probe_training == "reference" \
        else section.probe_examples
    records = (r for r in iter_jsonl(section.probe_train_set, what="[uft] probe_train_set")
               if "story_features" in r or "features" in r)
    return list(itertools.islice(records, wanted or None))


def _probe_rows(log: ResultsLog, model: Any, tokenizer: Any, records: list[dict], section: Any,
                seed: int) -> dict:
    from llmft.recipes.uft.probes import probe_accuracy

    if ("probes-done",) not in log:
        print(f"probes: {len(section.probe_layers) or 'each'} layer(s), {section.probe_steps} steps each, "
              f"on {len(records)} stories", file=sys.stderr, flush=True)
        accuracy = probe_accuracy(model, tokenizer, records, section.probe_layers, steps=section.probe_steps,
                                  lr=section.probe_lr, seed=seed, training=section.probe_training,
                                  train_records=_probe_train_records(section), probe_batch=section.probe_batch)
        for layer, by_feature in accuracy.items():
            for feature, value in by_feature.items():
                log.add(("probe", layer, feature), {"kind": "probe", "layer": layer, "feature": feature,
                                                    "accuracy": value, "examples": len(records)})
        log.add(("probes-done",), {"kind": "probes-done"})
    done = [row for key, row in log.items() if key[0] == "probe"]
    accuracy: dict[int, dict[str, float]] = {}
    for row in done:
        accuracy.setdefault(row["layer"], {})[row["feature"]] = row["accuracy"]
    return accuracy


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------
# Plots and comparison


def _write_plots(metrics: dict, eval_dir: Path, run: str) -> None:
    losses = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("loss/")}
    if losses:
        bar_plot(eval_dir / "losses.png", list(losses), {run: list(losses.values())},
                 title=f"{run}: losses by set", ylabel="mean token cross-entropy")
    if "probe_accuracy" in metrics:
        series = {feature: ([int(layer) for layer in sorted(by_layer, key=int)],
                            [by_layer[layer] for layer in sorted(by_layer, key=int)])
                  for feature, by_layer in metrics["probe_accuracy"].items()}
        line_plot(eval_dir / "probes.png", series, title=f"{run}: linear probes", xlabel="layer (after block)",
                  ylabel="probe test accuracy", widths={metrics.get("feature", ""): 2.5})
    scores = recovery_scores(metrics)
    if scores:
        _plot_recovery({run: scores}, eval_dir / "recovery.png", metrics.get("feature", ""))
        atomic_write_text(eval_dir / "recovery_table.md",
                          recovery_table({step: {run: score} for step, score in scores.items()}))


def _plot_recovery(curves: dict[str, dict[int, float]], path: Path, feature: str) -> Path:
    """Generation score against reFT steps, log-like spacing for 0, 30, 270, 3000 with step 0 kept."""
    series = {run: (sorted(scores), [scores[s] for s in sorted(scores)]) for run, scores in curves.items()}
    return line_plot(path, series, title="recovery after deletion", xlabel="reFT steps",
                     ylabel=f"generation score ({feature or 'feature'})", ylim=(-0.02, 1.02), symlog_x=True)


def compare_runs(metrics_by_run: dict[str, dict], out_dir: Path) -> Path:
    """Recovery curves of several runs in one plot, plus their table (recovery_table.md).

    A run without `recovery/<step>` metrics counts as one point: its generation score at the step in its
    label (`run/checkpoint-270`), so `llmft eval --adapter .../checkpoint-30 --adapter ...` also draws a curve.
    """
    curves: dict[str, dict[int, float]] = {}
    feature = ""
    for label, metrics in metrics_by_run.items():
        feature = feature or metrics.get("feature", "")
        scores = recovery_scores(metrics)
        if scores:
            curves[label] = scores
            continue
        match = re.search(rf"(.*)/{CHECKPOINT_PREFIX}(\d+)$", label)
        if match and "generation_score" in metrics:
            curves.setdefault(match.group(1), {})[int(match.group(2))] = metrics["generation_score"]
    if not curves:
        raise LlmftError("uft compare: no run has recovery/<step> metrics or a checkpoint-<step> generation score")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_step: dict[int, dict[str, float]] = {}
    for run, scores in curves.items():
        for step, score in scores.items():
            by_step.setdefault(step, {})[run] = score
    atomic_write_text(out_dir / "recovery_table.md", recovery_table(by_step))
    return _plot_recovery(curves, out_dir / "recovery.png", feature)
