"""`llmft serve` under load: N concurrent HTTP clients vs the same requests sent one at a time, or (--peer) vs
`transformers serve --continuous-batching` on the same model.

The server is the real CLI (`python -m llmft serve`, its own process, 127.0.0.1) over the benchmark's ~5.8M
Llama (bench/workload.py, random init, saved as an export-style folder with an llmft.toml); the clients are
threads in this process posting /v1/completions with httpx, greedy, max_tokens fixed. Throughput counts
requests and generated tokens per second of wall time; latency is per request. Every concurrent answer must
equal the one-at-a-time answer.

    flock /tmp/llmft-cpu.lock .venv/bin/python bench/serve.py [--clients 1,4,16] [--requests 64]

--peer: both servers up side by side, measured in turns (llmft, then the peer, the order swapped each round) at
each client count, plain and streamed, every answer max_tokens long ("fixed") or max_tokens cycling through
1/8..8/8 of it ("mixed"). Each request is a /v1/completions call, greedy; time to first token is the time to the
first streamed chunk that holds text (for a plain request: the whole answer). Reported as ratios llmft / peer of
the medians over rounds: throughput (completion tokens per second) and median time to first token.

    bench/serve.py --peer --clients 1,4,16,64 --rounds 3 --max-tokens 64
"""

from __future__ import annotations

import argparse
import functools
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
    parser.add_argument("--peer", action="store_true", help="compare with transformers serve --continuous-batching")
    parser.add_argument("--cb-num-blocks", type=int, default=512, help="the peer's KV cache blocks (bounded cache)")
    args = parser.parse_args()
    if args.peer:
        compare_with_peer(args)
        return

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


PEER = str(Path(sys.executable).with_name("transformers"))


def compare_with_peer(args: argparse.Namespace) -> None:
    """llmft serve vs transformers serve --continuous-batching, interleaved round by round (module docstring)."""
    import httpx
    from transformers import AutoTokenizer

    counts = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="llmft-bench-peer-") as tmp:
        folder, prompts = build_run_folder(Path(tmp), max(args.requests, 2 * max(counts)))
        ours, our_url = start_server(folder, max(args.max_batch, max(counts)), args.threads)
        peer, peer_url = start_peer(folder, args.cb_num_blocks)
        servers = {"llmft": (our_url, "bench"), "peer": (peer_url, str(folder))}
        tokenizer = AutoTokenizer.from_pretrained(folder)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        http = httpx.Client(timeout=600, limits=limits)
        results: dict[tuple, dict[str, list]] = {}
        agree: dict[tuple, list[int]] = {}
        try:
            for name in servers:  # warm-up
                ask_once(http, *servers[name], prompts[0], 8, True)
                ask_once(http, *servers[name], prompts[0], 8, False)
            for round_ in range(args.rounds):
                for clients in counts:
                    for lengths in ("fixed", "mixed"):
                        for stream in (False, True):
                            key = (clients, lengths, "streamed" if stream else "plain")
                            n = max(args.requests, 2 * clients)
                            jobs = [(prompts[i % len(prompts)], length(i, lengths, args.max_tokens)) for i in range(n)]
                            order = list(servers) if round_ % 2 == 0 else list(servers)[::-1]
                            texts = {}
                            for name in order:
                                url, model = servers[name]
                                # Fresh connections per measurement: a keep-alive connection idle past the
                                # server's timeout (5 s) would be closed under a request reusing it.
                                http.close()
                                http = httpx.Client(timeout=600, limits=limits)
                                with ThreadPoolExecutor(clients) as pool:
                                    started = time.perf_counter()
                                    answers = list(pool.map(functools.partial(ask_job, http, url, model, stream),
                                                            jobs))
                                    seconds = time.perf_counter() - started
                                tokens = sum(len(tokenizer(a[1], add_special_tokens=False)["input_ids"])
                                             for a in answers)  # counted alike for both servers
                                ttft = statistics.median(a[0] for a in answers)
                                results.setdefault(key, {}).setdefault(name, []).append((tokens / seconds, ttft))
                                texts[name] = [a[1] for a in answers]
                            agree.setdefault(key, []).append(
                                sum(a == b for a, b in zip(texts["llmft"], texts["peer"])))
                            print(f"round {round_ + 1} {key}: " + ", ".join(
                                f"{name} {results[key][name][-1][0]:.0f} tok/s ttft {results[key][name][-1][1]:.3f}s"
                                for name in servers), flush=True)
        finally:
            for process in (ours, peer):
                process.terminate()
                process.wait(60)
    rows = []
    for key, by_name in results.items():
        ours_tps = statistics.median(t for t, _ in by_name["llmft"])
        peer_tps = statistics.median(t for t, _ in by_name["peer"])
        ours_ttft = statistics.median(f for _, f in by_name["llmft"])
        peer_ttft = statistics.median(f for _, f in by_name["peer"])
        n = max(args.requests, 2 * key[0])
        rows.append([*key, f"{ours_tps:.0f}", f"{peer_tps:.0f}", f"{ours_tps / peer_tps:.2f}x",
                     f"{ours_ttft:.3f}", f"{peer_ttft:.3f}", f"{ours_ttft / peer_ttft:.2f}x",
                     f"{min(agree[key])}/{n}"])
    print(f"{workload.machine()}; {args.rounds} rounds; max_tokens {args.max_tokens}; "
          f"peer --cb-num-blocks {args.cb_num_blocks}")
    workload.print_table("llmft serve vs transformers serve --continuous-batching (ratios llmft / peer, medians)",
                         ["clients", "lengths", "mode", "llmft tok/s", "peer tok/s", "throughput",
                          "llmft ttft s", "peer ttft s", "ttft", "same text"], rows)
    workload.write_summary(args.json, {"rows": rows})


def length(i: int, lengths: str, max_tokens: int) -> int:
    """Request i's max_tokens: all the same, or cycling through 1/8..8/8 of max_tokens."""
    return max_tokens if lengths == "fixed" else max(1, max_tokens * (1 + i % 8) // 8)


def ask_job(http: Any, url: str, model: str, stream: bool, job: tuple[str, int]) -> tuple[float, str, int]:
    return ask_once(http, url, model, job[0], job[1], stream)


def ask_once(http: Any, url: str, model: str, prompt: str, max_tokens: int, stream: bool) -> tuple[float, str, int]:
    """(time to first text, text, completion tokens) of one greedy /v1/completions request."""
    import json

    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    started = time.perf_counter()
    if not stream:
        response = http.post(f"{url}/v1/completions", json=body)
        response.raise_for_status()
        reply = response.json()
        return time.perf_counter() - started, reply["choices"][0]["text"], reply["usage"]["completion_tokens"]
    first, pieces, chunks = None, [], 0
    with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            text = choices[0].get("text") or "" if choices else ""
            if text:
                first = first if first is not None else time.perf_counter() - started
                pieces.append(text)
                chunks += 1
    text = "".join(pieces)
    return (first if first is not None else time.perf_counter() - started), text, chunks


def start_peer(folder: Path, num_blocks: int) -> tuple[subprocess.Popen, str]:
    """`transformers serve --continuous-batching` over the same folder, on CPU, on a free port."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    peer = subprocess.Popen([PEER, "serve", "--continuous-batching", "--cb-num-blocks", str(num_blocks),
                             "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                             str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return peer, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            pass
        if peer.poll() is not None:
            raise SystemExit(f"transformers serve exited with {peer.returncode}")
        time.sleep(0.5)
    raise SystemExit("transformers serve did not start in 300 s")


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
