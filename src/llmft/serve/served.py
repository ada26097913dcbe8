"""What the app serves: one `ServedModel` per name, built by the command from a run folder and its recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmft.core.generation import Decoded, Sampling

# decode(prompts, sampling, options from the request's `llmft` object) -> one Decoded per prompt.
DecodeFn = Callable[[list[str], Sampling, dict], list[Decoded]]


@dataclass(eq=False)  # hashed by identity: a batch key holds the model itself, so a name is looked up once
class ServedModel:
    """One name clients can ask for: its decode function, tokenizer (counting, chat template) and limits."""

    name: str
    decode: DecodeFn
    tokenizer: Any
    context_length: int
    defaults: Sampling = field(default_factory=Sampling)  # max_new_tokens and temperature when a request omits them
    info: dict = field(default_factory=dict)  # shown under `llmft` in /v1/models (recipe, folder, base)
    # The model's continuous-batching engine (core/continuous/): then each request's decode runs on its own
    # thread and the engine batches their rows; None: requests go through the app's key-grouping Batcher.
    engine: Any = None
    generator: Any = None  # the engine's Generator for this name (token-id prompts, prompt scoring)
    streams: bool = False  # decode's text is generated token by token into the request's DecodeContext
