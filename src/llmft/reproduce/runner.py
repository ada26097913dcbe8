"""Runs a plan's stages in order as `python -m llmft ...` subprocesses; a finished stage is never rerun.

Each finished stage leaves `DIR/stages/<name>.json` (its command, seconds, end time), written atomically only
after the command exited 0; its output goes to `DIR/logs/<name>.log`. One line per stage, with the time left
estimated from the seconds per unit of weight of the stages finished so far (this run's and earlier runs').
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_json
from llmft.core.runs import atomic_write_json
from llmft.reproduce.plan import Stage


@dataclass
class StageRecord:
    """A finished stage: its command line as a user types it and its wall seconds."""

    name: str
    command: str
    seconds: float
    earlier: bool


def command_line(stage: Stage) -> str:
    """The stage as a shell line: `llmft make-data ...`."""
    return shlex.join(["llmft", *stage.argv])


def marker_path(out: Path, stage: Stage) -> Path:
    return out / "stages" / f"{stage.name}.json"


def run_stages(stages: list[Stage], out: Path, echo: Callable[[str], None] = print,
               launcher: tuple[str, ...] = (sys.executable, "-m", "llmft")) -> list[StageRecord]:
    """Run every stage without a marker, in order; stop at the first failure with a one-line error."""
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise LlmftError(f"plan has duplicate stage names: {sorted({n for n in names if names.count(n) > 1})}")
    records: list[StageRecord] = []
    spent = {"seconds": 0.0, "weight": 0.0}
    started = time.monotonic()
    for index, stage in enumerate(stages, start=1):
        marker = marker_path(out, stage)
        if marker.exists():
            done = read_json(marker, what="stage marker")
            records.append(StageRecord(stage.name, done["command"], float(done["seconds"]), earlier=True))
            spent["seconds"] += float(done["seconds"])
            spent["weight"] += stage.weight
            echo(f"[{index}/{len(stages)}] {stage.name}: finished earlier ({done['seconds']:.0f} s), not rerun")
            continue
        seconds = _run(stage, out, launcher)
        atomic_write_json(marker, {"command": command_line(stage), "seconds": round(seconds, 1),
                                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        records.append(StageRecord(stage.name, command_line(stage), seconds, earlier=False))
        spent["seconds"] += seconds
        spent["weight"] += stage.weight
        left = sum(s.weight for s in stages[index:]) * spent["seconds"] / max(spent["weight"], 1e-9)
        echo(f"[{index}/{len(stages)}] {stage.name}: {seconds:.0f} s; {_clock(time.monotonic() - started)} "
             f"elapsed, about {_clock(left)} left")
    return records


def _run(stage: Stage, out: Path, launcher: tuple[str, ...]) -> float:
    log = out / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", LLMFT_PROGRESS="lines")
    began = time.monotonic()
    with open(log, "w", encoding="utf-8") as handle:
        handle.write(f"$ {command_line(stage)}\n")
        handle.flush()
        code = subprocess.call([*launcher, *stage.argv], stdout=handle, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()][-1:]
        raise LlmftError(f"stage {stage.name} failed (exit {code}): {tail[0] if tail else ''} (log: {log})")
    return time.monotonic() - began


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
