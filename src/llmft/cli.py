"""The `llmft` command group: one verb per module under llmft.commands; nothing else lives here."""

from __future__ import annotations

import errno
import os
import sys
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
            raise UserError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except OSError as exc:
            # The machine's limits, not a bug: a full disk, a read-only or forbidden path.
            if exc.errno not in ENVIRONMENT_ERRORS:
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            raise UserError(f"{exc.strerror or exc}{where}") from None


@click.group(cls=LlmftGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmft")
def cli() -> None:
    """Fine-tune language models the way five papers did.

    \b
    llmft make-data retuning --task addition --format recursive
    llmft train recipes/retuning-addition-tiny.toml
    llmft eval --adapter runs/retuning-addition-tiny/final
    llmft export --adapter runs/retuning-addition-tiny/final --out merged/
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _register() -> None:
    from llmft.commands.estimate import estimate_command
    from llmft.commands.eval import eval_command
    from llmft.commands.export import export_command
    from llmft.commands.make_data import make_data_group
    from llmft.commands.serve import serve_command
    from llmft.commands.train import train_command

    cli.add_command(make_data_group)
    cli.add_command(train_command)
    cli.add_command(eval_command)
    cli.add_command(export_command)
    cli.add_command(estimate_command)
    cli.add_command(serve_command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="llmft", args=sys.argv[1:])
