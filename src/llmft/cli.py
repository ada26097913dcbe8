"""The `llmft` command group: one verb per module under llmft.commands; nothing else lives here."""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from typing import Any

import click

from llmft.core.errors import LlmftError

ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class UserError(click.ClickException):
    """A LlmftError on its way out: `error: <one line>` on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class LlmftGroup(click.Group):
    """Turns LlmftError from any verb into a one-line error; real bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LlmftError as exc:
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _tell_launcher(f"error: {line}")
            if os.environ.get("RANK", "0") != "0":
                sys.exit(UserError.exit_code)  # under torchrun/accelerate: the error is printed once, by rank 0
            raise UserError(line) from None
        except OSError as exc:
            # The machine's limits, not a bug: a full disk, a read-only or forbidden path.
            if exc.errno not in ENVIRONMENT_ERRORS:
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            raise UserError(f"{exc.strerror or exc}{where}") from None
        except Exception as exc:
            code = _tensor_write_errno(exc)
            if code not in ENVIRONMENT_ERRORS:
                raise
            raise UserError(f"{os.strerror(code)} writing a tensor file") from None


def _tensor_write_errno(exc: Exception) -> int | None:
    """The OS error code inside safetensors' own error type (its writer's I/O errors are not OSError):
    `Error while serializing: IoError(Os { code: 28, kind: StorageFull, ... })`."""
    if type(exc).__name__ != "SafetensorError":
        return None
    match = re.search(r"Os \{ code: (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _tell_launcher(message: str) -> None:
    """Under torchrun (and accelerate's multi-process launch) the failure summary shows this line as the
    process's error instead of "To enable traceback see: ..." (torch elastic's error-file protocol)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path and not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"message": {"message": message, "extraInfo": {"py_callstack": message,
                                                                    "timestamp": str(int(time.time()))}}}, handle)


@click.group(cls=LlmftGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmft")
@click.option("--verbose", is_flag=True, help="Show third-party progress bars and warnings (hidden by default).")
def cli(verbose: bool) -> None:
    """Fine-tune language models the way five papers did.

    \b
    llmft make-data retuning --task addition --format recursive --min-size 3 --max-size 5 --n 20000 --no-resample
    llmft train recipes/retuning-addition-tiny.toml
    llmft eval --adapter runs/retuning-addition-tiny/final
    llmft export --adapter runs/retuning-addition-tiny/final --out exported/retuning-addition-tiny
    llmft recipes
    """
    from llmft.quiet import quiet_libraries

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries(verbose)


def _register() -> None:
    from llmft.commands.estimate import estimate_command
    from llmft.commands.eval import eval_command
    from llmft.commands.export import export_command
    from llmft.commands.make_data import make_data_group
    from llmft.commands.recipes import recipes_command
    from llmft.commands.reproduce import reproduce_command
    from llmft.commands.serve import serve_command
    from llmft.commands.train import train_command

    cli.add_command(make_data_group)
    cli.add_command(train_command)
    cli.add_command(eval_command)
    cli.add_command(export_command)
    cli.add_command(estimate_command)
    cli.add_command(recipes_command)
    cli.add_command(reproduce_command)
    cli.add_command(serve_command)
    for command in cli.commands.values():  # the whole first line in `llmft --help`, wrapped, not cut off
        command.short_help = command.short_help or (command.help or "").strip().splitlines()[0]


_register()


def main() -> None:
    """Console-script entry point."""
    # OpenMP's wait policy is read when torch loads, so it is set first: when the machine is idle at launch,
    # spinning (ACTIVE) for training and OpenMP's short default spin for a server (it idles between requests);
    # sleeping (PASSIVE) beside other jobs; the user's OMP_WAIT_POLICY if set (threads.py).
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    if command in ("train", "serve"):
        from llmft.threads import set_wait_policy

        set_wait_policy(idle="ACTIVE" if command == "train" else "")
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cli.main(prog_name="llmft", args=sys.argv[1:])
