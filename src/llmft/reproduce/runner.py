"""Runs a plan's stages as `python -m llmft ...` subprocesses, up to `jobs` at once; a finished stage is never rerun.

A stage starts once every stage its `after` names has finished; with one job the stages run in the plan's order,
with more the ready stage that heads the heaviest chain of stages (by weight) starts first. Beside other jobs a
stage gets one torch thread; a stage that runs alone (nothing else running, every stage still to run waits on it)
keeps torch's own threads, as with one job.
Each finished stage leaves `DIR/stages/<name>.json` (its command, seconds, start and end), written atomically only
after the command exited 0; its output goes to `DIR/logs/<name>.log`. One line per finished stage, with the time
left estimated from the seconds per unit of weight of the stages finished so far (this run's and earlier runs'),
shared among the jobs. A failed stage stops the run: the stages still running are terminated (no marker).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from llmft.core.errors import LlmftError
from llmft.core.jsonl import read_json
from llmft.core.runs import atomic_write_json
from llmft.reproduce.plan import Stage

STAMP = "%Y-%m-%dT%H:%M:%S%z"


@dataclass
class StageRecord:
    """A finished stage: its command line as a user types it, its wall seconds and when it started (Unix time)."""

    name: str
    command: str
    seconds: float
    earlier: bool
    start: float


@dataclass
class _Running:
    stage: Stage
    process: subprocess.Popen
    log: IO[str]
    path: Path
    start: float
    began: float
    jobs: int


def default_jobs() -> int:
    """The cores this process may use (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def stage_argv(stage: Stage, jobs: int = 1) -> tuple[str, ...]:
    """The stage's arguments; beside other jobs a training gets one torch thread unless it names its own."""
    if jobs > 1 and stage.argv[:1] == ("train",) and not any(a.startswith("train.threads=") for a in stage.argv):
        return (*stage.argv, "train.threads=1")
    return stage.argv


def command_line(stage: Stage, jobs: int = 1) -> str:
    """The stage as a shell line: `llmft make-data ...`."""
    return shlex.join(["llmft", *stage_argv(stage, jobs)])


def runs_alone(stage: Stage, pending: Sequence[Stage], running: int, needs: dict[str, set[str]]) -> bool:
    """Whether nothing can run beside `stage`: no other stage is running and every pending one waits on it."""
    return running == 0 and all(stage.name in needs[other.name] for other in pending if other is not stage)


def transitive_needs(stages: Sequence[Stage]) -> dict[str, set[str]]:
    """Per stage, every stage it waits on, directly or through others (stages are listed after what they need)."""
    needs: dict[str, set[str]] = {}
    for stage in stages:
        needs[stage.name] = set(stage.after).union(*(needs[name] for name in stage.after))
    return needs


def marker_path(out: Path, stage: Stage) -> Path:
    return out / "stages" / f"{stage.name}.json"


def elapsed(records: Sequence[StageRecord]) -> float:
    """Real elapsed seconds: the time during which at least one stage ran (idle gaps between resumed runs left out)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted((r.start, r.start + r.seconds) for r in records):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def check_order(stages: Sequence[Stage]) -> None:
    """Stage names are unique and each stage comes after the stages it needs (so one job runs them in order)."""
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise LlmftError(f"plan has duplicate stage names: {sorted({n for n in names if names.count(n) > 1})}")
    seen: set[str] = set()
    for stage in stages:
        missing = [name for name in stage.after if name not in seen]
        if missing:
            raise LlmftError(f"plan: stage {stage.name} comes after {missing[0]}, which is not listed before it")
        seen.add(stage.name)


def chain_weights(stages: Sequence[Stage]) -> dict[str, float]:
    """Per stage, the weight of the heaviest chain of stages that starts with it (it and what waits on it)."""
    after: dict[str, list[str]] = {stage.name: [] for stage in stages}
    for stage in stages:
        for name in stage.after:
            after[name].append(stage.name)
    chain: dict[str, float] = {}
    for stage in reversed(stages):  # every stage is listed after the stages it needs
        chain[stage.name] = stage.weight + max((chain[name] for name in after[stage.name]), default=0.0)
    return chain


def run_stages(stages: list[Stage], out: Path, echo: Callable[[str], None] = print,
               launcher: tuple[str, ...] = (sys.executable, "-m", "llmft"), jobs: int = 1) -> list[StageRecord]:
    """Run every stage without a marker, up to `jobs` at once; stop at the first failure with a one-line error."""
    check_order(stages)
    jobs = max(1, jobs)
    done: dict[str, StageRecord] = {}
    for index, stage in enumerate(stages, start=1):
        marker = marker_path(out, stage)
        if marker.exists():
            done[stage.name] = _earlier(stage, read_json(marker, what="stage marker"))
            echo(f"[{index}/{len(stages)}] {stage.name}: finished earlier ({done[stage.name].seconds:.0f} s), "
                 "not rerun")
    pending = [stage for stage in stages if stage.name not in done]
    if jobs > 1:  # the longest chains first, so that the last stages do not run alone
        chain = chain_weights(stages)
        pending.sort(key=lambda stage: -chain[stage.name])
    needs = transitive_needs(stages)
    running: list[_Running] = []
    started = time.monotonic()
    try:
        while pending or running:
            ready = [stage for stage in pending if all(name in done for name in stage.after)]
            for stage in ready[:jobs - len(running)]:
                alone = runs_alone(stage, pending, len(running), needs)
                running.append(_start(stage, out, launcher, 1 if alone else jobs))
                pending.remove(stage)
            job = _wait_any(running)
            running.remove(job)
            record = _finish(job, out)
            done[record.name] = record
            left = _left(stages, done, running, jobs)
            echo(f"[{len(done)}/{len(stages)}] {record.name}: {record.seconds:.0f} s; "
                 f"{_clock(time.monotonic() - started)} elapsed, about {_clock(left)} left")
    finally:
        for job in running:  # a failure or an interrupt: the others stop too, leaving no marker
            _stop(job)
    return [done[stage.name] for stage in stages]


def _earlier(stage: Stage, marker: dict) -> StageRecord:
    seconds = float(marker["seconds"])
    if "started" in marker:
        start = datetime.strptime(marker["started"], STAMP).timestamp()
    else:
        start = datetime.strptime(marker["finished"], STAMP).timestamp() - seconds
    return StageRecord(stage.name, marker["command"], seconds, earlier=True, start=start)


def _start(stage: Stage, out: Path, launcher: tuple[str, ...], jobs: int) -> _Running:
    """Launch the stage; `jobs` > 1 pins it to one torch thread (see stage_argv)."""
    path = out / "logs" / f"{stage.name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", LLMFT_PROGRESS="lines")
    if jobs > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = open(path, "w", encoding="utf-8")
    log.write(f"$ {command_line(stage, jobs)}\n")
    log.flush()
    process = subprocess.Popen([*launcher, *stage_argv(stage, jobs)], stdout=log, stderr=subprocess.STDOUT, env=env)
    return _Running(stage, process, log, path, time.time(), time.monotonic(), jobs)


def _wait_any(running: list[_Running]) -> _Running:
    """The first of the running stages to exit (polled: the children are ours, but waiting on one blocks)."""
    while True:
        for job in running:
            if job.process.poll() is not None:
                return job
        time.sleep(0.1)


def _finish(job: _Running, out: Path) -> StageRecord:
    seconds = time.monotonic() - job.began
    job.log.close()
    code = job.process.returncode
    if code != 0:
        tail = [line for line in job.path.read_text(encoding="utf-8").splitlines() if line.strip()][-1:]
        raise LlmftError(f"stage {job.stage.name} failed (exit {code}): {tail[0] if tail else ''} (log: {job.path})")
    command = command_line(job.stage, job.jobs)
    atomic_write_json(marker_path(out, job.stage), {
        "command": command, "seconds": round(seconds, 1),
        "started": time.strftime(STAMP, time.localtime(job.start)), "finished": time.strftime(STAMP)})
    return StageRecord(job.stage.name, command, seconds, earlier=False, start=job.start)


def _stop(job: _Running) -> None:
    job.process.terminate()
    try:
        job.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        job.process.kill()
        job.process.wait()
    job.log.close()


def _left(stages: list[Stage], done: dict[str, StageRecord], running: list[_Running], jobs: int) -> float:
    """Seconds left: the unfinished stages' weight at the seconds per weight seen so far, shared among the jobs."""
    weights = {stage.name: stage.weight for stage in stages}
    rate = sum(r.seconds for r in done.values()) / max(sum(weights[name] for name in done), 1e-9)
    waiting = sum(stage.weight for stage in stages if stage.name not in done) * rate
    underway = sum(min(weights[job.stage.name] * rate, time.monotonic() - job.began) for job in running)
    return max(0.0, waiting - underway) / jobs


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
