"""The documented commands work: every command in the code blocks of the README and of every page under docs/,
every `--help` example and every preset's first line, parsed from the files themselves so the docs cannot rot.

The README's first hour (its top, up to the recipe table: make-data, train, eval, export) runs for real, in
order, in a fresh folder, with small overrides (2 steps, 4 eval examples). Every other command (GPU presets,
hub data, long CPU runs) must parse: its options exist and take its values, and a `train` command's TOML and
overrides resolve (`--dry-run`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from llmft.cli import cli
from tests.conftest import REPO, fresh_accelerate

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").rglob("*.md"))
# The README, then the recipe pages in the order a reader tries them (later pages use earlier pages' runs).
RECIPE_ORDER = ("sft", "retuning", "squad", "uft", "memreason", "cot-teacher")
PROGRAMS = ("llmft", "python", "head", "torchrun", "accelerate", "make", "flock", "$")
FIRST_HOUR_END = "## Recipes"  # the README's recipe table: everything above it runs for real
SMALL = {"train": ["train.max_steps=2", "train.save_steps=1", "train.save_total_limit=5", "train.eval_examples=8"],
         "eval": ["eval.max_examples=4"]}


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every shell line in the README's bash and plain code blocks, in order;
    continuation lines joined, comments dropped, `a && b` split."""
    commands, block, pending = [], None, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            block = None if block is not None else line[3:].strip()
            continue
        if block not in ("bash", "", "sh"):
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line.split(" ", 1)[0] in PROGRAMS:
            for part in line.split(" && "):
                commands.append((number, part.strip()))
    return commands


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def help_examples() -> list[str]:
    """Every `llmft ...`, `torchrun ...` or `accelerate ...` line in any command's --help text or epilog."""
    found = []

    def walk(command: click.Command, ctx: click.Context) -> None:
        for text in (command.help or "", command.epilog or ""):
            for line in re.sub(r"\\\n\s*", "", text).splitlines():  # continuation lines joined
                line = line.strip().removeprefix("Example: ")
                if line.split(" ", 1)[0] in ("llmft", "torchrun", "accelerate"):
                    found.append(line)
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                walk(sub, click.Context(sub, parent=ctx, info_name=name))

    walk(cli, click.Context(cli, info_name="llmft"))
    return found


def preset_commands() -> list[str]:
    """The first line of every preset, which is its command (`#` then commands joined by `&&`)."""
    commands = []
    for path in sorted((REPO / "recipes").glob("*.toml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# llmft "), f"{path.name}: the first line must be its command"
        commands += [part.strip() for part in first[2:].split(" && ")]
    return commands


def llmft_args(argv: list[str]) -> list[str] | None:
    """The llmft arguments of a command line (`llmft ...`, `torchrun ... -m llmft ...`), else None."""
    if argv[0] == "llmft":
        return argv[1:]
    if "-m" in argv and argv[argv.index("-m") + 1] == "llmft":
        return argv[argv.index("-m") + 2:]
    return None


def parse(args: list[str]) -> tuple[click.Command, click.Context]:
    """Parse an llmft command line down to its verb (options, choices, types), running nothing."""
    command: click.Command = cli
    ctx = cli.make_context("llmft", list(args), resilient_parsing=False)
    while isinstance(command, click.Group):
        rest = [*ctx._protected_args, *ctx.args] if hasattr(ctx, "_protected_args") else [*ctx.protected_args,
                                                                                         *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return command, ctx


def check_parses(args: list[str]) -> None:
    """The command parses; a train command's TOML and overrides also resolve (what --dry-run prints)."""
    command, ctx = parse(args)
    if command.name == "train":
        result = CliRunner().invoke(cli, ["train", ctx.params["config_file"], *ctx.params["overrides"], "--dry-run"])
        assert result.exit_code == 0, f"llmft {shlex.join(args)} --dry-run: {result.output}"


def all_docs() -> str:
    """The README and then every recipe page, in RECIPE_ORDER."""
    pages = [README] + [REPO / "docs" / "recipes" / f"{name}.md" for name in RECIPE_ORDER]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def test_readme_fits_a_screenful_and_links_resolve() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 350
    assert {p.stem for p in (REPO / "docs" / "recipes").glob("*.md")} == set(RECIPE_ORDER)
    for page in [README, *PAGES]:
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)}: broken link {target}"


def test_readme_command_extraction() -> None:
    commands = [c for _, c in readme_commands(all_docs())]
    assert "make demo    # creates .venv, installs, trains a tiny Re-Tuning addition model from scratch, evaluates " \
           "it (~6 min)" in commands
    assert any(c.startswith("source .venv/bin/activate") for c in
               README.read_text(encoding="utf-8").split(FIRST_HOUR_END)[0].splitlines()[:12])
    assert any(c.startswith("llmft eval --adapter runs/retuning-addition-recursive/final --adapter") for c in commands)


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with only the presets, as a fresh clone has after `make` (no data, no runs)."""
    folder = tmp_path_factory.mktemp("clone")
    shutil.copytree(REPO / "recipes", folder / "recipes")
    return folder


# Small overrides that keep a documented command's meaning but make it take seconds (the last value wins).
SMALL_MAKE_DATA = {"squad": ["--synthetic", "300"], "uft": ["--n-stories", "400", "--n-eval", "60"]}
SMALL_EVAL = {"uft": ["uft.loss_examples=4", "uft.n_generations=2", "uft.story_tokens=8", "uft.probe_steps=2",
                      "uft.probe_examples=40"]}


def runnable_here(args: list[str]) -> bool:
    """Whether a documented llmft command can run on this offline CPU machine in seconds (else: parse only)."""
    from llmft.core.models import is_tiny
    from llmft.recipes.base import load_recipe_config

    verb = args[0]
    if verb == "make-data":
        # The reader's own downloads (the references' released files) and the hub: parse only.
        inputs = [args[i + 1] for i, a in enumerate(args[:-1])
                  if a in ("--input", "--dataset", "--completions", "--source", "--few-shot-prompts")]
        own_files = any(value == "hub" or not Path(value).exists() for value in inputs)
        return not (own_files or "--stories" in args and args[args.index("--stories") + 1] == "hub"
                    or args[1] == "squad" and "--synthetic" not in args or "--teacher" in args)
    if verb == "train":
        if "--dry-run" in args:
            return True
        config, _ = load_recipe_config(args[1], [a for a in args[2:] if "=" in a and not a.startswith("-")])
        local_base = is_tiny(config) or Path(config.model.name).is_dir()
        return local_base and Path(config.data.train).is_file()
    if verb == "serve":
        return False  # a server runs until stopped: tests/serve start it for real
    if verb == "reproduce":
        return False  # minutes to hours of training: tests/reproduce run it (make test-slow)
    if verb in ("eval", "estimate", "export"):
        folders = [args[i + 1] for i, a in enumerate(args) if a == "--adapter"]
        return all(Path(folder).is_dir() for folder in folders)
    return True


def small(args: list[str]) -> list[str]:
    """The command with the small overrides of its verb (and recipe)."""
    verb = args[0]
    if verb == "make-data":
        return [*args, *SMALL_MAKE_DATA.get(args[1], [])]
    if verb == "train" and "--dry-run" not in args:
        return [*args, *SMALL["train"]]
    if verb == "eval":
        from llmft.core.config import tomllib  # tomli on Python 3.10

        saved = [tomllib.loads((Path(args[i + 1]) / "llmft.toml").read_text())
                 for i, a in enumerate(args) if a == "--adapter"]
        curve = any(s.get("uft", {}).get("recovery_steps") for s in saved)
        return [*args, *SMALL["eval"], *SMALL_EVAL.get(saved[0]["recipe"], []),
                *(["uft.recovery_steps=[0,1,2]"] if curve else [])]  # the runs trained 2 steps
    return args


def run_readme(text: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """Run the README commands in `text` in order in `folder` (small overrides); commands that need a GPU,
    the hub or another's outputs only parse. Returns (outputs of the commands run, commands only parsed)."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("LLMFT_PROGRESS", "lines")
    lines = text.splitlines()
    outputs, parsed = [], []
    for number, command in readme_commands(text):
        argv = words(command)
        if argv[0] in ("make", "source", "flock"):
            continue
        if argv[0] == "$":  # an example with its output on the next line: it must fail with exactly that
            expected = lines[number].strip()
            result = CliRunner().invoke(cli, argv[2:])
            assert result.exit_code == 2 and result.output.strip() == expected, (number, result.output)
            continue
        args = llmft_args(argv)
        if args is None:  # head, python -c: run as typed
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120,
                                  executable="/bin/bash", env={**_env(), "PATH": f"{Path(sys.executable).parent}:"
                                                               + _env().get("PATH", "")})
            assert done.returncode == 0, f"README line {number}: {command}\n{done.stderr[-2000:]}"
            continue
        if argv[0] in ("torchrun", "accelerate") or not runnable_here(args):
            check_parses(args)
            parsed.append(command)
            continue
        fresh_accelerate()  # each command is its own process for a user (presets differ in bf16)
        result = CliRunner().invoke(cli, small(args), catch_exceptions=False)
        if "vllm" in args:  # no vLLM on this machine: one line, exit 2
            assert result.exit_code == 2 and result.output.strip().startswith("error: "), result.output
            assert len(result.output.strip().splitlines()) == 1, result.output
            continue
        assert result.exit_code == 0, f"README line {number}: {command}\n{result.output[-3000:]}"
        outputs.append(result.output)
    return outputs, parsed


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_readme_first_hour_runs_in_order(fresh_clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_hour = README.read_text(encoding="utf-8").split(FIRST_HOUR_END)[0]
    outputs, parsed = run_readme(first_hour, fresh_clone, monkeypatch)
    # Everything else ran; `llmft estimate` documents a run of the reader's own (runs/meta: a meta-initialisation
    # trained on several tasks), which no README command makes.
    # `llmft serve` runs until stopped (tests/serve start it for real): parsed only.
    assert [c.split()[0] for c in parsed if "runs/meta/" not in c and not c.startswith("llmft serve")] == [
        "torchrun", "accelerate"], parsed
    assert (fresh_clone / "runs/sft-tiny/final/llmft.toml").is_file()
    assert (fresh_clone / "runs/sft-tiny/summary.md").is_file() and (fresh_clone / "runs/sft-tiny/loss.png").is_file()
    assert (fresh_clone / "runs/sft-mydata/final").is_dir()
    assert (fresh_clone / "exported/sft-tiny/config.json").is_file()
    assert (fresh_clone / "compare/exact_match.png").is_file() and (fresh_clone / "compare/metrics.txt").is_file()
    joined = "\n".join(outputs)
    for noise in ("Loading weights", "Writing model shards", "FutureWarning", "it/s]"):
        assert noise not in joined


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_command_parses(page: Path, fresh_clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fresh_clone)
    checked = 0
    for number, command in readme_commands(page.read_text(encoding="utf-8")):
        argv = words(command)
        args = llmft_args(argv)
        if argv[0] == "$":  # an expected error, checked with its output in the first-hour test
            continue
        if args is None:
            assert argv[0] in PROGRAMS or argv[0] == "source", f"README line {number}: {command}"
            continue
        try:
            check_parses(args)
        except click.ClickException as exc:
            raise AssertionError(f"{page.name} line {number}: {command}: {exc.format_message()}") from None
        checked += 1
    assert checked >= MIN_COMMANDS.get(page.name, 0), (page.name, checked)


# Pages that document commands hold at least these many (a page whose blocks stop parsing would drop to 0).
MIN_COMMANDS = {"README.md": 15, "usage.md": 14, "serve.md": 2, "estimate.md": 2, "retuning.md": 4, "squad.md": 10,
                "uft.md": 14, "memreason.md": 5, "cot-teacher.md": 5, "sft.md": 3, "gradex.md": 5}


@pytest.mark.parametrize("command", help_examples() + preset_commands())
def test_help_examples_and_preset_commands_parse(command: str, fresh_clone: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fresh_clone)
    args = llmft_args(words(command))
    assert args is not None, command
    check_parses(args)


def test_make_data_help_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `make-data <recipe> --help` example writes its data offline (the sft one used to fail)."""
    monkeypatch.chdir(tmp_path)
    examples = [e for e in help_examples() if e.startswith("llmft make-data ")]
    assert any(e.startswith("llmft make-data sft ") for e in examples)
    for example in examples:
        args = words(example)[1:]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, f"{example}: {result.output[-2000:]}"
        assert re.search(r"train: \S+ \([\d,]+ records\)", result.output), result.output


def test_llmft_recipes_lists_every_preset_with_a_line(fresh_clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fresh_clone)
    listing = CliRunner().invoke(cli, ["recipes"]).output.splitlines()
    commands = CliRunner().invoke(cli, ["recipes", "--commands"]).output.splitlines()
    for path in sorted((REPO / "recipes").glob("*.toml")):
        lines = [line for line in listing if line.split()[0] == f"recipes/{path.name}"]
        assert len(lines) == 1 and len(lines[0].split()) > 3, path.name  # a description follows the name
        first = path.read_text(encoding="utf-8").splitlines()[0][2:]
        assert f"  recipes/{path.name}" in "\n".join(commands) and any(line.endswith(first) for line in commands)
    assert all(any(line.startswith(f"{name} ") for line in listing) for name in ("retuning", "sft", "squad", "uft"))


@pytest.mark.slow
def test_whole_readme_runs_in_order_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo`, then every README command typed as written (small overrides): what needs a GPU, the hub or a
    long earlier run (make reproduce-retuning) parses; everything else runs."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    outputs, parsed = run_readme(all_docs(), tmp_path, monkeypatch)
    assert len(outputs) > 25, parsed
    for run in ("sft-tiny", "retuning-addition-tiny", "squad-tiny", "uft-pretrain-tiny", "uft-deletion-tiny",
                "uft-recovery-tiny", "uft-recovery-tiny-no-twist"):
        assert (tmp_path / "runs" / run / "final").is_dir(), (run, parsed)
    for command in parsed:  # only GPU presets, hub data, launchers and another target's runs are left out
        assert re.search(r"torchrun|accelerate|llama|squad$|--source|--stories hub|91m|uft-deletion.toml|runs/meta/|"
                         r"uft-recovery.toml|uft-recovery-1e-4|retuning-addition-recursive|--backend vllm|"
                             r"llmft serve|\.json\b|--teacher|--input hub|gpt2|flan-t5",
                         command), command
