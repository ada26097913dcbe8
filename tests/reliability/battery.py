"""Helpers of the reliability battery: a CLI call that must fail with one `error:` line."""

from __future__ import annotations

from click.testing import CliRunner, Result

from llmft.cli import cli


def one_error(args: list[str], needle: str) -> Result:
    """Run `llmft args...` in-process: exit code 2, exactly one `error:` line holding `needle`, no traceback."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    label = " ".join(map(str, args))
    assert result.exit_code == 2, (label, result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (label, result.stderr)
    assert needle in lines[0], (label, lines[0])
    assert "Traceback" not in result.output
    return result
