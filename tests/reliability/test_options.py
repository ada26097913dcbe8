"""Every option of every verb, and every config key of every section, given one bad value: never a traceback.

Options get a value of their own type that is out of place (a negative number, an unknown choice, a missing
path, a nonsense string); config keys get a value of the wrong type and must be named in the one error line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from llmft.cli import cli
from llmft.core.config import SECTIONS
from llmft.core.jsonl import write_jsonl
from llmft.recipes.base import RECIPES, load_all
from llmft.recipes.sft.toys import toy_split
from tests.reliability.battery import one_error
from tests.test_reliability import TOML

CHEAP = {  # a make-data call per recipe that is quick and offline
    "sft": ["--toy", "caesar", "--n", "20", "--eval-n", "5"],
    "retuning": ["--n", "20", "--min-size", "1", "--max-size", "2", "--eval-n", "2"],
    "uft": ["--n-stories", "20", "--n-eval", "5"],
    "squad": ["--synthetic", "10"],
    "memreason": ["--synthetic", "10", "--synthetic-test", "4"],
    "cot-teacher": ["--task", "coin_flip", "--n", "20", "--format", "ft_token"],
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("options")
    train, held_out = toy_split("caesar", 40, 8, seed=3)
    data = {"train": write_jsonl(root / "train.jsonl", train), "eval": write_jsonl(root / "eval.jsonl", held_out)}
    good = root / "good.toml"
    good.write_text(TOML.format(train=data["train"], eval=data["eval"], out=root / "run"))
    assert CliRunner().invoke(cli, ["train", str(good), "--no-progress"]).exit_code == 0
    return {"root": root, "good": good, "final": root / "run" / "final"}


def bad_value(param: click.Parameter, root: Path) -> str | None:
    if isinstance(param, click.Option) and (param.is_flag or param.count):
        return None
    kind = param.type
    if isinstance(kind, click.Choice):
        return "nope"
    if isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)):
        return "-7"
    if isinstance(kind, click.Path):
        return str(root / "missing" / "x")
    return "%%bad%%"


def calls(command: click.Command, base: list[str], root: Path) -> list[list[str]]:
    """`base` with each option replaced (or joined) by one bad value."""
    out = []
    for param in command.params:
        value = bad_value(param, root)
        if value is None or not isinstance(param, click.Option):
            continue
        flag = param.opts[0]
        args = list(base)
        if flag in args:
            del args[args.index(flag):args.index(flag) + 2]
        out.append([*args, flag, value])
    return out


def verb_calls(world: dict[str, Path]) -> list[list[str]]:
    root, final = world["root"], str(world["final"])
    load_all()
    out = []
    for name in RECIPES:
        command = cli.commands["make-data"].get_command(click.Context(cli), name)
        out += [["make-data", name, *c] for c in calls(command, [*CHEAP[name], "--out", str(root / "md" / name)],
                                                        root)]
    out += [["train", *c] for c in calls(cli.commands["train"], [str(world["good"]), "--dry-run"], root)]
    out.append(["train", str(root / "missing.toml")])
    out += [["eval", *c] for c in calls(cli.commands["eval"], ["--adapter", final, "--out", str(root / "ev")], root)]
    out += [["export", *c] for c in calls(cli.commands["export"], ["--adapter", final, "--out", str(root / "ex")],
                                          root)]
    out += [["estimate", *c, "estimate.max_examples=4", "estimate.project_dimension=4",
             "estimate.number_of_subsets=1"] for c in calls(cli.commands["estimate"], ["--adapter", final], root)]
    out += [["serve", *c] for c in calls(cli.commands["serve"], ["--adapter", final, "--port", "0"], root)]
    out += [["recipes", *c] for c in calls(cli.commands["recipes"], [], root)] + [["recipes", "--commands", "nope"]]
    out += [["reproduce", *c] for c in calls(cli.commands["reproduce"], ["retuning", "--quick"], root)]
    return out


def test_every_option_of_every_verb_with_a_bad_value(world, monkeypatch):
    import llmft.commands.reproduce
    import llmft.commands.serve

    monkeypatch.setattr(llmft.commands.serve, "run_server", lambda *args, **kwargs: None)  # never listen
    monkeypatch.setattr(llmft.commands.reproduce, "_run", lambda *args, **kwargs: None)  # never train
    monkeypatch.chdir(world["root"])
    battery = verb_calls(world)
    assert len(battery) > 60 and {c[0] for c in battery} == set(cli.commands)
    runner = CliRunner()
    for args in battery:
        result = runner.invoke(cli, args)
        label = " ".join(args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (label, result.exc_info)
        assert result.exit_code in (0, 2) and "Traceback" not in result.output, (label, result.output)
        if result.exit_code == 2 and "Usage:" not in result.stderr:  # click's own usage errors keep their form
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), (label, result.stderr)


def wrong_type(kind: object) -> str:
    """A TOML value no field of this type takes."""
    return "[1, 2]" if kind in (str, "str") or "Literal" in str(kind) or kind is bool else '"x"'


def config_keys() -> list[tuple[str, str, object]]:
    """(recipe, dotted key, type) of every field of every section, the recipes' own included."""
    import typing

    def walk(cls: type, prefix: str) -> list[tuple[str, object]]:
        hints = typing.get_type_hints(cls)
        keys = []
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                keys += walk(hints[f.name], f"{prefix}.{f.name}")
            else:
                keys.append((f"{prefix}.{f.name}", hints[f.name]))
        return keys

    load_all()
    found = [("sft", key, kind) for name, cls in SECTIONS.items() for key, kind in walk(cls, name)]
    for name, recipe in RECIPES.items():
        if recipe.config_section is not None:
            found += [(name, key, kind) for key, kind in walk(recipe.config_section, name)]
    return found


def test_every_config_key_with_a_value_of_the_wrong_type(world):
    keys = config_keys()
    assert len(keys) > 120
    runner = CliRunner()
    for recipe, key, kind in keys:
        args = ["train", str(world["good"]), f"recipe={recipe}", f"{key}={wrong_type(kind)}", "--dry-run"]
        result = runner.invoke(cli, args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
        assert f"'{key}'" in lines[0], (key, lines[0])


def test_nan_is_in_no_range(world):
    one_error(["train", world["good"], "train.learning_rate=nan", "--dry-run"],
              "key 'train.learning_rate' must be > 0, got nan")
    one_error(["train", world["good"], "estimate.scale=nan", "adapter.dropout=nan", "--dry-run"],
              "key 'adapter.dropout' must be in [0, 1), got nan; key 'estimate.scale' must be > 0, got nan")
