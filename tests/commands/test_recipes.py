"""`llmft recipes`: every preset with its description or its whole command, paths relative to where it runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmft.cli import cli
from llmft.commands.recipes import describe_preset

from ..conftest import REPO


def test_a_preset_with_several_command_lines(tmp_path: Path) -> None:
    preset = tmp_path / "two.toml"
    preset.write_text("# llmft make-data sft --toy reverse\n# llmft train two.toml && llmft eval --adapter x\n#\n"
                      "# What it is for. More detail\n# on a second line.\n\n# later\nrecipe = \"sft\"\n")
    assert describe_preset(preset) == (
        "sft", "llmft make-data sft --toy reverse && llmft train two.toml && llmft eval --adapter x", "What it is for.")


def test_listing_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("llmft.commands.recipes.preset_dir", lambda: REPO / "recipes")
    listing = CliRunner().invoke(cli, ["recipes"]).output.splitlines()
    commands = CliRunner().invoke(cli, ["recipes", "--commands"]).output.splitlines()
    rows = [line.split(maxsplit=1) for line in listing if line.startswith("  ")]
    assert len(rows) == len(list((REPO / "recipes").glob("*.toml")))
    assert all(not path.startswith("/") and Path(path).is_file() for path, _ in rows)
    memreason = dict(rows)[os.path.relpath(REPO / "recipes" / "memreason-tiny.toml")]
    assert memreason.startswith("The CPU miniature: a tiny Llama")
    command = next(line for line in commands if "memreason-tiny.toml " in line).split(maxsplit=1)[1]
    assert command == ("llmft make-data memreason --synthetic 4000 --num-prefix-tokens 2 --num-special-tokens 2 && "
                       "llmft train recipes/memreason-tiny.toml && llmft eval --adapter runs/memreason-tiny/final")
