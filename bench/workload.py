"""The benchmark workload every bench script shares: skewed prompt/completion data, a BPE tokenizer, a ~5M
Llama saved once (so every contender starts from the same weights), machine facts and table printing."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import subprocess
from pathlib import Path
from typing import Any

# A ~5.9M-parameter Llama: hidden 256, 6 layers, 4 heads of 64, FFN 704 (llama2.c rule), BPE vocabulary 2048.
HIDDEN, LAYERS, HEADS, FFN, VOCAB = 256, 6, 4, 704, 2048
# Example lengths in tokens: log-normal, median 70, clipped to [20, 400].
MEDIAN_TOKENS, SIGMA, MIN_TOKENS, MAX_TOKENS = 70, 0.6, 20, 400


def pseudo_words(rng: random.Random, n: int = 600) -> list[str]:
    """A fixed vocabulary of pronounceable made-up words (BPE learns most as single tokens)."""
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", ["", "n", "r", "s", "l", "k"]
    words: set[str] = set()
    while len(words) < n:
        syllables = rng.randint(1, 3)
        words.add(
            "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables))
        )
    return sorted(words)


def make_records(n: int, seed: int) -> list[dict[str, str]]:
    """Copy tasks, `copy: w1 .. wk` -> `w1 .. wk`, with words drawn Zipf-like and ~2k+4 tokens in all, so the
    total length (BOS, prompt, completion, EOS) follows the log-normal above."""
    rng = random.Random(seed)
    words = pseudo_words(random.Random(0))
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    records = []
    for _ in range(n):
        total = min(max(int(rng.lognormvariate(math.log(MEDIAN_TOKENS), SIGMA)), MIN_TOKENS), MAX_TOKENS)
        picked = rng.choices(words, weights, k=max((total - 4) // 2, 1))
        records.append({"prompt": "copy: " + " ".join(picked) + "\n", "completion": " ".join(picked)})
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def build_workload(folder: Path, n_train: int, n_eval: int, seed: int = 0) -> dict[str, Path]:
    """Data JSONL, a trained BPE tokenizer and the initial model, all saved under `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    from llmft.core.tokenizers import train_tokenizer

    records = make_records(n_train + n_eval, seed)
    train, held_out = records[:n_train], records[n_train:]
    paths = {
        "train": write_jsonl(folder / "train.jsonl", train),
        "eval": write_jsonl(folder / "eval.jsonl", held_out),
        "tokenizer": folder / "tokenizer",
        "model": folder / "model",
    }
    tokenizer = train_tokenizer([t for r in records for t in (r["prompt"], r["completion"])], "bpe", VOCAB)
    tokenizer.save_pretrained(paths["tokenizer"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(paths["model"])
    tokenizer.save_pretrained(paths["model"])
    return paths


def retuning_demo(out: str, steps: int, overrides: list[str]) -> tuple[Any, Any]:
    """The Re-Tuning demo preset (`recipes/retuning-addition-tiny.toml`, its data made first) as (config, recipe),
    writing to `out` for `steps` steps with no checkpoints, plus `overrides`."""
    from llmft.recipes.base import load_recipe_config

    preset = Path(__file__).resolve().parents[1] / "recipes" / "retuning-addition-tiny.toml"
    return load_recipe_config(preset, [f"train.output_dir={out}", f"train.max_steps={steps}", "train.save_steps=0",
                                       *overrides])


def parameter_counts(model: Any) -> tuple[int, int]:
    """(all parameters, parameters that take part in matmuls = all but the input embedding table)."""
    total = sum(p.numel() for p in model.parameters())
    return total, total - model.get_input_embeddings().weight.numel()


def machine() -> str:
    """`lscpu` model name and core count (or the GPU name), for RESULTS.md."""
    name = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return machine()


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (so RESULTS.md can take it as printed); returns the text."""

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "NO"
        if isinstance(value, float):
            return f"{value:,.4g}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_summary(path: str, summary: dict[str, Any]) -> None:
    """The script's headline figures as JSON, for bench/run_all.py."""
    if path:
        Path(path).write_text(json.dumps(summary, indent=1), encoding="utf-8")
