"""Generation throughput: llmft's HF backend (batched, left-padded, KV cache) vs a one-prompt-at-a-time
`model.generate` loop, same model, prompts and greedy settings; outputs must be identical.

The model is the benchmark's ~5.9M Llama (random init: every completion runs to max_new_tokens unless it
happens to emit EOS); the prompts are 64 of the workload's prompts (median ~35 tokens, skewed). Tokens/s
counts generated tokens up to EOS.

    flock /tmp/llmft-cpu.lock .venv/bin/python bench/generate.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import workload

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="",
                        help="model dtype (default: what llmft loads: float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.core.generation import HFGenerator

    torch.set_num_threads(args.threads)
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    with tempfile.TemporaryDirectory(prefix="llmft-bench-") as tmp:
        paths = workload.build_workload(Path(tmp), 0, args.prompts)
        tokenizer = AutoTokenizer.from_pretrained(paths["model"])
        model = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=getattr(torch, dtype))
        model.to(args.device)
        prompts = [json.loads(line)["prompt"] for line in paths["eval"].read_text().splitlines()]

    seconds, (reference, tokens) = _timed(lambda: sequential(model, tokenizer, prompts, args.max_new_tokens),
                                          args.device)
    base = tokens / seconds
    rows: list[list[Any]] = [["one prompt at a time (model.generate loop)", "-", base, 1.0, "reference"]]
    at: dict[int, float] = {}
    identical_all = True
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        generator = HFGenerator(model, tokenizer, batch_size=batch)
        seconds, outputs = _timed(partial(generator.generate, prompts, max_new_tokens=args.max_new_tokens),
                                  args.device)
        same = sum(a == b for a, b in zip(outputs, reference))
        identical_all &= same == len(prompts)
        at[batch] = tokens / seconds / base
        rows.append([f"llmft HFGenerator, batch {batch}", batch, tokens / seconds, at[batch],
                     f"{same}/{len(prompts)} identical"])
    print(f"device: {workload.device_name(args.device)}; threads {args.threads}; {dtype}; "
          f"{len(prompts)} prompts, "
          f"greedy, max_new_tokens {args.max_new_tokens}; {tokens:,} tokens generated")
    workload.print_table(f"Generation ({args.device})", ["decoder", "batch", "tok/s", "vs loop", "outputs"],
                         rows)
    top = max(at)
    workload.write_summary(args.json, {
        "device": args.device, "loop_tok_s": base, "ratios": at, "identical": identical_all,
        "rows": [[f"generate batch {top} / loop", f"{at[top]:.2f}", ">= 4", at[top] >= 4],
                 ["generate outputs identical", "yes" if identical_all else "no", "yes", identical_all]],
    })


def sequential(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int]:
    """What a user writes without a batching backend: one `generate` call per prompt, greedy. Returns the
    completions and how many tokens they hold (up to EOS)."""
    import torch

    from llmft.core.data import encode_prompt

    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    outputs, tokens = [], 0
    model.eval()
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device)
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=eos)[0, ids.shape[1]:].tolist()
            kept = generated[:generated.index(eos)] if eos in generated else generated
            outputs.append(tokenizer.decode(kept))
            tokens += len(kept)
    return outputs, tokens


def _timed(fn: Any, device: str) -> tuple[float, Any]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


if __name__ == "__main__":
    main()
