"""A real uvicorn server on a free 127.0.0.1 port, in a thread, around any app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run `app` with uvicorn on 127.0.0.1 (port chosen by the OS); yield its base URL, then shut it down."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def client(base_url: str, api_key: str = "none", **kwargs: Any) -> Any:
    """The official OpenAI client pointed at a test server (no retries: every error shows at once)."""
    from openai import OpenAI

    return OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=60, **kwargs)


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny LoRA runs on ONE base: `shift` learns the Caesar shift, `flip` (on run one's saved base
    model) learns to reverse the same prompts. A few seconds of training each."""
    from llmft.core.jsonl import write_jsonl
    from llmft.recipes.sft.toys import toy_split

    from ..conftest import tiny_config, train_run

    root = tmp_path_factory.mktemp("serve-runs")
    records, _ = toy_split("caesar", 600, 0, seed=3)
    shift = write_jsonl(root / "shift.jsonl", records)
    flip = write_jsonl(root / "flip.jsonl", [{"prompt": r["prompt"], "completion": " " + r["prompt"][6:-2][::-1]}
                                             for r in records])
    common = {"adapter": LORA, "train": {"max_steps": 40, "learning_rate": 2e-2}, "eval": {"max_new_tokens": 10}}
    train_run(tiny_config(root / "a", shift, **common), progress=False)
    base = root / "a" / "run" / "base-model"
    train_run(tiny_config(root / "b", flip, model={"name": str(base)}, **common), progress=False)
    return root / "a" / "run" / "final", root / "b" / "run" / "final"


LORA = {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
