"""`llmft serve` over real tiny trained runs, through the official openai client on a real 127.0.0.1 server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llmft.commands.serve import served_models
from llmft.core.errors import LlmftError
from llmft.core.generation import HFGenerator
from llmft.core.inference import load_for_inference
from llmft.serve.app import create_app
from llmft.serve.backends import load_runs

from .conftest import client, serving

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["shift abc =", "shift hgf =", "shift lk =", "shift badcfe =", "shift aaaa =", "shift jil =",
           "shift ebdgc =", "shift kjihgfed ="]


def alone(folder: Path, prompts: list[str], max_new_tokens: int = 10) -> list[str]:
    """What the run says when loaded by itself (no server, no other adapter), one prompt at a time."""
    _, tokenizer, model = load_for_inference(folder)
    generator = HFGenerator(model, tokenizer)
    return [generator.generate([p], max_new_tokens=max_new_tokens)[0] for p in prompts]


@pytest.fixture(scope="module")
def app(two_runs):
    shift, flip = two_runs
    return create_app(served_models([f"shift={shift}", f"flip={flip}"], max_batch=32), max_batch=32)


def test_two_adapters_on_one_base_answer_as_each_run_alone(two_runs, app):
    shift, flip = two_runs
    with serving(app) as url:
        api = client(url)
        cards = api.models.list().data
        assert [m.id for m in cards] == ["shift", "flip"]
        assert cards[0].model_extra["llmft"]["recipe"] == "sft"
        assert cards[0].model_extra["llmft"]["base"] == cards[1].model_extra["llmft"]["base"]
        served = {name: [api.completions.create(model=name, prompt=p, max_tokens=10, temperature=0).choices[0].text
                         for p in PROMPTS] for name in ("shift", "flip")}
    assert served["shift"] == alone(shift, PROMPTS) and served["flip"] == alone(flip, PROMPTS)
    assert served["shift"] != served["flip"]


def test_each_base_loads_once_and_bad_sets_are_one_line_errors(two_runs, tmp_path):
    shift, flip = two_runs
    loaded = load_runs([f"a={shift}", f"b={flip}"])
    assert loaded[0].generator.model is loaded[1].generator.model
    assert sorted(loaded[0].generator.model.peft_config) == ["adapter0", "adapter1"]
    with pytest.raises(LlmftError, match="the name 'run' is taken"):
        load_runs([str(shift), str(flip)])
    # A run on another base (a copy of the run with its own base-model/): its base loads beside the first.
    shutil.copytree(shift.parent, tmp_path / "copy", ignore=shutil.ignore_patterns("checkpoint-*"))
    two = load_runs([f"a={shift}", f"b={tmp_path / 'copy' / 'final'}", f"c={flip}"])
    assert two[0].base != two[1].base and two[0].generator.model is two[2].generator.model
    assert two[1].generator.model is not two[0].generator.model
    assert two[0].generator.generate(PROMPTS, max_new_tokens=8) == two[1].generator.generate(PROMPTS, max_new_tokens=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlmftError, match="neither llmft.toml nor adapter_config.json"):
        load_runs([str(tmp_path / "empty")])
    # A plain PEFT adapter folder (no llmft.toml) on the same base: the same weights answer the same.
    plain = tmp_path / "plain"
    shutil.copytree(shift, plain)
    (plain / "llmft.toml").unlink()
    adapter_config = json.loads((plain / "adapter_config.json").read_text())
    (plain / "adapter_config.json").write_text(json.dumps(
        {**adapter_config, "base_model_name_or_path": str(shift.parent / "base-model")}))
    both = load_runs([f"a={shift}", str(plain)])
    assert [run.name for run in both] == ["a", "plain"] and both[1].config.recipe == "sft"
    assert both[0].generator.generate(PROMPTS, max_new_tokens=8) == both[1].generator.generate(PROMPTS, max_new_tokens=8)


def test_chat_uses_the_saved_template_and_streaming_equals_plain(two_runs, app):
    shift, _ = two_runs
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "shift abc ="}]
    _, tokenizer, model = load_for_inference(shift)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<s><|system|>\nbe brief</s>\n")  # the run's saved template
    expected = HFGenerator(model, tokenizer).generate([prompt], max_new_tokens=12)[0]
    with serving(app) as url:
        api = client(url)
        chat = api.chat.completions.create(model="shift", messages=messages, max_tokens=12)
        assert chat.choices[0].message.content == expected
        assert chat.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        streamed = api.chat.completions.create(model="shift", messages=messages, max_tokens=12, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected
        plain = api.completions.create(model="flip", prompt="shift abcdefgh =", max_tokens=16).choices[0].text
        pieces = api.completions.create(model="flip", prompt="shift abcdefgh =", max_tokens=16, stream=True)
        assert "".join(c.choices[0].text for c in pieces) == plain
        too_long = httpx.post(f"{url}/v1/completions", json={"model": "shift", "prompt": "a" * 1100})
        assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
        over = httpx.post(f"{url}/v1/completions", json={"model": "shift", "prompt": "a", "max_tokens": 1024})
        assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"


def test_load_32_clients_by_4_requests(two_runs, app):
    """Every answer under load equals the single-request answer; requests of both adapters really share decode
    steps (rows join the running batch)."""
    with serving(app) as url:
        api = client(url)
        single = {(m, p): api.completions.create(model=m, prompt=p, max_tokens=10).choices[0].text
                  for m in ("shift", "flip") for p in PROMPTS}
        engine = app.state.models["shift"].engine
        assert engine is app.state.models["flip"].engine  # one base, one engine
        steps_before, mixed_before = engine.steps, engine.mixed_steps

        def one_client(index: int) -> list[bool]:
            results = []
            for k in range(4):
                model, prompt = ("shift", "flip")[(index + k) % 2], PROMPTS[(index * 4 + k) % len(PROMPTS)]
                text = api.completions.create(model=model, prompt=prompt, max_tokens=10).choices[0].text
                results.append(text == single[(model, prompt)])
            return results

        start = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            outcomes = [ok for results in pool.map(one_client, range(32)) for ok in results]
        elapsed = time.perf_counter() - start
        sizes = list(engine.batch_sizes)[-(engine.steps - steps_before):]
    assert len(outcomes) == 128 and all(outcomes)
    assert max(sizes) > 4 and engine.mixed_steps > mixed_before, sizes
    assert elapsed < 60


def test_cli_serves_and_drains_on_sigterm(two_runs, tmp_path):
    """`llmft serve` in its own process: the 0.0.0.0 warning, a request in flight at SIGTERM still answered
    in full, exit code 0."""
    shift, _ = two_runs
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "llmft", "serve", "--adapter", f"shift={shift}", "--port", "0",
                             "--max-batch", "4", "--max-request-rows", "2048"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = None
        lines = []
        deadline = time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if match := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        assert port, "".join(lines)
        answers: list = []
        # 128 prompts x 16 = 2,048 rows of up to 40 tokens, 4 at a time: seconds of generation even on an idle
        # machine (rows end early at EOS; 512 rows once finished within uvicorn's shutdown tick), so still running
        # at SIGTERM.
        thread = threading.Thread(target=lambda: answers.append(httpx.post(
            f"http://127.0.0.1:{port}/v1/completions", timeout=600,
            json={"model": "shift", "prompt": PROMPTS * 16, "max_tokens": 40, "n": 16})))
        thread.start()
        while httpx.get(f"http://127.0.0.1:{port}/health").json()["running"] == 0 and thread.is_alive():
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        thread.join(600)
        assert proc.wait(120) == 0
        log = proc.stderr.read()
    finally:
        proc.kill()
    assert answers and answers[0].status_code == 200, answers and answers[0].text[:300]
    assert "Waiting for connections to close" in log  # the request was still in flight at SIGTERM
    assert answers[0].status_code == 200 and len(answers[0].json()["choices"]) == 2048


def test_cli_warnings_and_one_line_errors(monkeypatch, two_runs):
    from click.testing import CliRunner

    from llmft.cli import cli
    from llmft.commands import serve

    calls = []
    monkeypatch.setattr(serve, "served_models", lambda specs, backend, max_batch: [])
    monkeypatch.setattr(serve, "run_server", lambda app, host, port: calls.append((host, port)))
    out = CliRunner().invoke(cli, ["serve", "--adapter", "x", "--host", "0.0.0.0", "--port", "9"])
    assert out.exit_code == 0 and "warning: serving on 0.0.0.0 without --api-key" in out.output
    assert calls == [("0.0.0.0", 9)]
    quiet = CliRunner().invoke(cli, ["serve", "--adapter", "x", "--api-key", "k", "--host", "0.0.0.0"])
    assert "warning" not in quiet.output
    monkeypatch.undo()

    monkeypatch.setitem(sys.modules, "fastapi", None)
    missing = CliRunner().invoke(cli, ["serve", "--adapter", str(two_runs[0])])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1
    assert missing.output.startswith("error: llmft serve needs FastAPI and uvicorn")
    monkeypatch.undo()

    monkeypatch.setitem(sys.modules, "vllm", None)
    vllm = CliRunner().invoke(cli, ["serve", "--backend", "vllm", "--adapter", str(two_runs[0])])
    assert vllm.exit_code == 2 and vllm.output.count("\n") == 1
    assert vllm.output.startswith("error: --backend vllm needs vLLM")
