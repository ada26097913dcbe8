"""`llmft serve --adapter [NAME=]DIR [--adapter ...] [--host] [--port] [--api-key] [--backend] [--max-batch]`."""

from __future__ import annotations

import signal
from typing import Any

import click

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("serve")
@click.option("--adapter", "specs", multiple=True, required=True, metavar="[NAME=]DIR",
              help="A run's final/ or checkpoint-N/ folder, an export or a PEFT adapter folder, served as NAME "
                   "(default: the run's name); repeat for several adapters on one base.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0 = any free).")
@click.option("--api-key", envvar="LLMFT_API_KEY", default=None,
              help="Require `Authorization: Bearer KEY` on /v1 (also from $LLMFT_API_KEY).")
@click.option("--backend", type=click.Choice(["hf", "vllm"]), default="hf", show_default=True,
              help="hf (CPU or GPU) or vllm (CUDA GPU, adapters as LoRA requests).")
@click.option("--max-batch", type=click.IntRange(1), default=32, show_default=True,
              help="Most prompts one batch window takes.")
@click.option("--max-body", type=click.IntRange(1), default=1 << 20, show_default=True,
              help="Largest request body in bytes (413 above).")
@click.option("--max-request-rows", type=click.IntRange(1), default=512, show_default=True,
              help="Most completions (prompts x n) one request may ask for (400 above).")
@click.option("--body-timeout", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              metavar="SECONDS", help="Time a request's body may take to arrive (408 after); idle keep-alive "
                                      "connections close after 5 s.")
def serve_command(specs: tuple[str, ...], host: str, port: int, api_key: str | None, backend: str,
                  max_batch: int, max_body: int, max_request_rows: int, body_timeout: float) -> None:
    """Serve trained runs over the OpenAI API (/v1/models, /v1/completions, /v1/chat/completions).

    \b
    llmft serve --adapter runs/retuning-addition-tiny/final
    llmft serve --adapter a=runs/sft-a/final --adapter b=runs/sft-b/final --api-key secret
    """
    from llmft.serve.app import create_app, require_serve_deps

    require_serve_deps()
    if host not in LOOPBACK and not api_key:
        click.echo(f"warning: serving on {host} without --api-key: anyone who can reach this port can use "
                   "the models", err=True)
    models = served_models(specs, backend, max_batch)
    app = create_app(models, api_key=api_key, max_batch=max_batch, max_body_bytes=max_body,
                     max_request_rows=max_request_rows, body_timeout_s=body_timeout)
    names = ", ".join(m.name for m in models)
    click.echo(f"serving {names} on http://{host}:{port}/v1 (backend {backend}, max batch {max_batch})", err=True)
    run_server(app, host, port)


def served_models(specs: tuple[str, ...] | list[str], backend: str = "hf", max_batch: int = 32) -> list[Any]:
    """Load the run folders and wire each one's recipe `decode` into a ServedModel."""
    from llmft.core.continuous.row_text import skipped_ids
    from llmft.core.generation import Sampling
    from llmft.core.model_setup import extra_tokens
    from llmft.recipes.base import get_recipe, section_types
    from llmft.serve.backends import context_length, load_runs, load_vllm_runs
    from llmft.serve.served import ServedModel

    load = load_vllm_runs if backend == "vllm" else load_runs
    models = []
    for run in load(list(specs), max_batch, section_types=section_types()):
        recipe, config = get_recipe(run.config.recipe), run.config
        engine = getattr(run.generator, "engine", None)
        if engine is not None:
            run.generator.skip_ids = skipped_ids(run.generator.tokenizer, extra_tokens(config, recipe))
        models.append(ServedModel(
            name=run.name,
            decode=recipe_decoder(recipe, run.generator, config),
            tokenizer=run.generator.tokenizer,
            context_length=context_length(getattr(run.generator, "model", None)),
            defaults=Sampling.from_eval(config.eval),
            info={"recipe": recipe.name, "folder": str(run.folder), "base": run.base},
            engine=engine,
            generator=run.generator if engine is not None else None,
            streams=engine is not None and recipe.decode_streams,
        ))
    return models


def recipe_decoder(recipe: Any, generator: Any, config: Any) -> Any:
    """decode(prompts, sampling, options) over the recipe's `decode`; an `llmft` options object sent to a
    recipe whose decode reads none is a one-line error."""
    from llmft.core.errors import LlmftError

    def decode(prompts: list[str], sampling: Any, options: dict) -> list[Any]:
        if options and not recipe.decode_options:
            raise LlmftError(f"the {recipe.name} recipe reads no llmft options, got: {', '.join(sorted(options))}")
        return recipe.decode(generator, prompts, config, sampling, **options)

    return decode


def run_server(app: Any, host: str, port: int) -> None:
    """uvicorn until SIGINT/SIGTERM; SIGTERM lets the batch being generated finish, answers every queued
    request 503 in OpenAI's shape, then exits 0."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            refuse_queued = getattr(app.state, "refuse_queued", None)
            if refuse_queued is not None:
                refuse_queued()
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and captured and captured[-1] == sig:
                captured.pop()  # a drained shutdown is a clean exit, not death by signal

    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30,
                            timeout_keep_alive=5, lifespan="on")
    Server(config).run()
