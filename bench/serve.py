"""`llmft serve` under load: N concurrent HTTP clients vs the same requests sent one at a time.

The server is the real CLI (`python -m llmft serve`, its own process, 127.0.0.1) over the benchmark's ~5.8M
Llama (bench/workload.py, random init, saved as an export-style folder with an llmft.toml); the clients are
threads in this process posting /v1/completions with httpx, greedy, max_tokens fixed. Throughput counts
requests and generated tokens per second of wall time; latency is per request. Every concurrent answer must
equal the one-at-a-time answer.

    flock /tmp/llmft-cpu.lock .venv/bin/python bench/serve.py [--clients 1,4,16] [--requests 64]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import workload

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="16", help="concurrent client counts to measure")
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="server torch threads (OMP_NUM_THREADS); 0 = default")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    import httpx

    with tempfile.TemporaryDirectory(prefix="llmft-bench-serve-") as tmp:
        folder, prompts = build_run_folder(Path(tmp), args.requests)
        server, url = start_server(folder, args.max_batch, args.threads)
        try:
            http = httpx.Client(timeout=600)

            def ask(prompt: str) -> tuple[float, str, int]:
                started = time.perf_counter()
                response = http.post(f"{url}/v1/completions", json={
                    "model": "bench", "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0})
                response.raise_for_status()
                body = response.json()
                return (time.perf_counter() - started, body["choices"][0]["text"],
                        body["usage"]["completion_tokens"])

            ask(prompts[0])  # warm-up: first-call allocations, static cache setup
            rows: list[list[Any]] = []
            ratios: dict[int, list[float]] = {}
            reference: list[str] = []
            # Rounds of (one at a time, then each client count): a load change on this shared machine
            # then hits both sides of a ratio instead of only one.
            for round_ in range(1, args.rounds + 1):
                load = os.getloadavg()[0]
                seconds, results = timed(lambda: [ask(p) for p in prompts])
                reference = reference or [text for _, text, _ in results]
                same = sum(text == ref for (_, text, _), ref in zip(results, reference))
                base = len(prompts) / seconds
                rows.append(row(f"round {round_}: one at a time", 1, seconds, results, base, same, len(prompts),
                                load))
                for clients in (int(c) for c in args.clients.split(",")):
                    load = os.getloadavg()[0]
                    with ThreadPoolExecutor(clients) as pool:
                        seconds, results = timed(lambda: list(pool.map(ask, prompts)))  # noqa: B023
                    same = sum(text == ref for (_, text, _), ref in zip(results, reference))
                    ratios.setdefault(clients, []).append(len(prompts) / seconds / base)
                    rows.append(row(f"round {round_}: {clients} concurrent clients", clients, seconds, results,
                                    base, same, len(prompts), load))
        finally:
            server.terminate()
            code = server.wait(60)
    print(f"{workload.machine()}; server torch threads: {args.threads or 'default'}; server exit code {code}")
    print(f"{len(prompts)} requests per row, greedy, max_tokens {args.max_tokens}, --max-batch {args.max_batch}")
    workload.print_table("llmft serve: concurrent clients vs one at a time",
                         ["mode", "clients", "req/s", "tok/s", "p50 s", "p95 s", "vs one at a time", "answers",
                          "load avg at start"], rows)
    top = max(ratios)
    median = statistics.median(ratios[top])
    print(f"{top} clients vs one at a time: median ratio {median:.2f} over {len(ratios[top])} rounds")
    workload.write_summary(args.json, {
        "ratios": ratios, "rows": [[f"serve {top} clients / one at a time", f"{median:.2f}", ">= 4",
                                    median >= 4]],
    })


def build_run_folder(root: Path, n: int) -> tuple[Path, list[str]]:
    """The workload model saved with an llmft.toml (recipe sft), as `llmft export` leaves a folder."""
    import json

    from llmft.core.config import config_from_dict, config_to_toml

    paths = workload.build_workload(root, 0, n)
    folder = paths["model"]
    config = config_from_dict({"recipe": "sft", "model": {"name": str(folder)}}, source="bench/serve.py")
    (folder / "llmft.toml").write_text(config_to_toml(config))
    prompts = [json.loads(line)["prompt"] for line in paths["eval"].read_text().splitlines()][:n]
    return folder, prompts


def start_server(folder: Path, max_batch: int, threads: int = 0) -> tuple[subprocess.Popen, str]:
    """`llmft serve` on a free port; returns the process and its base URL once it listens."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    server = subprocess.Popen([sys.executable, "-m", "llmft", "serve", "--adapter", f"bench={folder}", "--port", "0",
                               "--max-batch", str(max_batch)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env)
    for line in server.stderr:
        if match := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line):
            return server, match.group(1)
    raise SystemExit(f"llmft serve did not start (exit code {server.wait()})")


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def row(name: str, clients: int, seconds: float, results: list, base: float, same: int, n: int,
        load: float) -> list[Any]:
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[2] for r in results)
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    return [name, clients, len(results) / seconds, tokens / seconds, statistics.median(latencies), p95,
            len(results) / seconds / base, f"{same}/{n} identical", load]


if __name__ == "__main__":
    main()
