"""One attention layer over packed rows, forward + backward: SDPA over the whole row vs llmft's blocks.

Rows of 512 tokens packed with examples of the benchmark workload's lengths (log-normal, median 71, 21 to 401;
the row's tail is padding, its own segment, as llmft's collate makes it), 3 rows, 4 heads of 64. Contenders:
transformers' SDPA attention function with the block-diagonal causal mask (what `attn_implementation = "sdpa"`
runs) and `llmft.core.attention.blocked_attention_forward` (what "auto" runs for rows wider than 128 on CPU),
in fp32 and under bf16 autocast. Prints the median milliseconds of --repeats passes, the ratio, and the largest
difference of the outputs.

    .venv/bin/python bench/attention_blocks.py [--repeats 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from typing import Any

import workload


def packed_mask(rows: int, width: int, rng: random.Random) -> Any:
    """A (rows, 1, width, width) block-diagonal causal mask of examples drawn as the workload draws them."""
    import torch

    mask = torch.zeros(rows, 1, width, width, dtype=torch.bool)
    for row in range(rows):
        start = 0
        while start < width:
            n = min(max(int(rng.lognormvariate(math.log(workload.MEDIAN_TOKENS), workload.SIGMA)),
                        workload.MIN_TOKENS), workload.MAX_TOKENS, width - start)
            mask[row, 0, start:start + n, start:start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            start += n
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from llmft.core.attention import blocked_attention_forward

    torch.set_num_threads(args.threads)
    module = torch.nn.Module()
    module.num_key_value_groups = 1
    mask = packed_mask(3, 512, random.Random(0))
    torch.manual_seed(0)
    tensors = [torch.randn(3, 4, 512, 64, requires_grad=True) for _ in range(3)]

    def timed(attend, bf16: bool) -> tuple[float, Any]:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out, _ = attend(module, *tensors, mask, scaling=0.125)
            out.float().sum().backward()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e3, out.detach().float()

    rows = []
    for precision, bf16 in (("fp32", False), ("bf16 autocast", True)):
        whole_ms, whole = timed(sdpa_attention_forward, bf16)
        blocks_ms, blocks = timed(blocked_attention_forward, bf16)
        rows.append([precision, whole_ms, blocks_ms, f"{whole_ms / blocks_ms:.2f}x",
                     f"{(blocks - whole).abs().max().item():.1e}"])
    workload.print_table(
        f"One attention layer, forward + backward, 3 packed rows of 512 ({args.threads} threads, median of "
        f"{args.repeats})", ["precision", "SDPA whole row ms", "llmft blocks ms", "speed-up", "max |difference|"],
        rows)


if __name__ == "__main__":
    main()
