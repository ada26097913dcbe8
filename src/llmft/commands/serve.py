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
def serve_command(specs: tuple[str, ...], host: str, port: int, api_key: str | None, backend: str,
                  max_batch: int, max_body: int) -> None:
    """Serve trained runs over the OpenAI API (/v1/models, /v1/completions, /v1/chat/completions).

    \b
    llmft serve --adapter runs/retuning-addition-tiny/final
    llmft serve --adapter a=runs/sft-a/final --adapter b=runs/sft-b/final --api-key secret
    """
    from llmft.core.server import create_app, require_serve_deps

    require_serve_deps()
    if host not in LOOPBACK and not api_key:
        click.echo(f"warning: serving on {host} without --api-key: anyone who can reach this port can use "
                   "the models", err=True)
    models = served_models(specs, backend, max_batch)
    app = create_app(models, api_key=api_key, max_batch=max_batch, max_body_bytes=max_body)
    names = ", ".join(m.name for m in models)
    click.echo(f"serving {names} on http://{host}:{port}/v1 (backend {backend}, max batch {max_batch})", err=True)
    run_server(app, host, port)


def served_models(specs: tuple[str, ...] | list[str], backend: str = "hf", max_batch: int = 32) -> list[Any]:
    """Load the run folders and wire each one's recipe `decode` into a ServedModel."""
    from llmft.core.generation import Sampling
    from llmft.core.server import ServedModel
    from llmft.core.serving import context_length, load_runs, load_vllm_runs
    from llmft.recipes.base import get_recipe

    if backend == "vllm":
        loaded = load_vllm_runs(list(specs), max_batch)
    else:
        loaded = load_runs(list(specs), batch_size=max_batch)
    models = []
    for run in loaded:
        recipe, config = get_recipe(run.config.recipe), run.config
        defaults = Sampling(max_new_tokens=config.eval.max_new_tokens, temperature=config.eval.temperature,
                            seed=config.eval.seed, num_beams=config.eval.num_beams)
        models.append(ServedModel(
            name=run.name,
            decode=recipe_decoder(recipe, run.generator, config),
            tokenizer=run.generator.tokenizer,
            context_length=context_length(getattr(run.generator, "model", None)),
            defaults=defaults,
            info={"recipe": recipe.name, "folder": str(run.folder), "base": run.base},
        ))
    return models


def recipe_decoder(recipe: Any, generator: Any, config: Any) -> Any:
    """decode(prompts, sampling, options) over the recipe's own `decode`; `llmft` options go only to a
    recipe whose decode takes `options`, and are a one-line error for any other."""
    import inspect

    from llmft.core.errors import LlmftError
    from llmft.core.generation import Decoded

    method = getattr(recipe, "decode", None)
    takes_options = method is not None and "options" in inspect.signature(method).parameters

    def decode(prompts: list[str], sampling: Any, options: dict) -> list[Any]:
        if options and not takes_options:
            raise LlmftError(f"the {recipe.name} recipe reads no llmft options, got: {', '.join(sorted(options))}")
        if method is None:  # TEMPORARY until the core contract gives every recipe a decode
            texts = generator.generate(prompts, max_new_tokens=sampling.max_new_tokens, stop=sampling.stop,
                                       num_beams=sampling.num_beams, temperature=sampling.temperature,
                                       seed=sampling.seed)
            return [Decoded(text) for text in texts]
        if takes_options:
            return method(generator, prompts, config, sampling, options=options)
        return method(generator, prompts, config, sampling)

    return decode


def run_server(app: Any, host: str, port: int) -> None:
    """uvicorn until SIGINT/SIGTERM; SIGTERM lets in-flight requests finish, then exits 0."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if sig == signal.SIGTERM and captured and captured[-1] == sig:
                captured.pop()  # a drained shutdown is a clean exit, not death by signal

    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30,
                            lifespan="on")
    Server(config).run()
