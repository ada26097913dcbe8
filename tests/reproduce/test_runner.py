"""The runner: a killed `llmft reproduce` rerun redoes no finished stage; a failed stage is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmft.core.errors import LlmftError
from llmft.reproduce.plan import Stage
from llmft.reproduce.runner import (
    StageRecord,
    chain_weights,
    check_order,
    elapsed,
    run_stages,
    runs_alone,
    transitive_needs,
)

# A stand-in for `python -m llmft`: appends its argv to calls.txt, then sleeps argv[1] seconds (or fails on "fail").
FAKE = """
import sys, time
with open(sys.argv[1], "a") as handle:
    handle.write(" ".join(sys.argv[2:]) + "\\n")
if sys.argv[2] == "fail":
    print("error: the stage failed"); sys.exit(2)
time.sleep(float(sys.argv[3]))
"""

# Runs three stages (the second slow) with the fake launcher, as `llmft reproduce` would.
DRIVER = """
import sys
from pathlib import Path
from llmft.reproduce.plan import Stage
from llmft.reproduce.runner import StageRecord, chain_weights, check_order, elapsed, run_stages
out, fake, calls = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
stages = [Stage("first", ("first", "0")), Stage("second", ("second", sys.argv[4])), Stage("third", ("third", "0"))]
run_stages(stages, out, echo=lambda line: print(line, flush=True), launcher=(sys.executable, fake, calls))
"""


def test_killed_midway_then_rerun_redoes_no_finished_stage(tmp_path: Path) -> None:
    fake, driver, calls = tmp_path / "fake.py", tmp_path / "driver.py", tmp_path / "calls.txt"
    fake.write_text(FAKE)
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "PATH": "/usr/bin:/bin"}
    first = subprocess.Popen([sys.executable, str(driver), str(out), str(fake), str(calls), "60"], env=env,
                             stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "second 60" not in (calls.read_text() if calls.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()  # midway through the second stage
    first.wait()
    assert (out / "stages" / "first.json").exists() and not (out / "stages" / "second.json").exists()
    rerun = subprocess.run([sys.executable, str(driver), str(out), str(fake), str(calls), "0"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert calls.read_text().splitlines() == ["first 0", "second 60", "second 0", "third 0"]
    assert "[1/3] first: finished earlier" in rerun.stdout and "[3/3] third:" in rerun.stdout
    assert "left" in rerun.stdout.splitlines()[-1]
    marker = json.loads((out / "stages" / "second.json").read_text())
    assert marker["command"] == "llmft second 0" and marker["seconds"] >= 0


def test_a_failed_stage_stops_the_run_with_its_last_line(tmp_path: Path) -> None:
    fake, calls = tmp_path / "fake.py", tmp_path / "calls.txt"
    fake.write_text(FAKE)
    stages = [Stage("ok", ("ok", "0")), Stage("bad", ("fail",)), Stage("never", ("never", "0"))]
    with pytest.raises(LlmftError, match=r"stage bad failed \(exit 2\): error: the stage failed \(log: "):
        run_stages(stages, tmp_path / "out", echo=lambda line: None, launcher=(sys.executable, str(fake), str(calls)))
    assert calls.read_text().splitlines() == ["ok 0", "fail"]
    assert not (tmp_path / "out" / "stages" / "bad.json").exists()
    with pytest.raises(LlmftError, match="duplicate stage names"):
        run_stages([stages[0], stages[0]], tmp_path / "out")


# A stand-in that logs "<name> start|end <time> <OMP_NUM_THREADS> <last argument>" around a sleep of argv[3] s.
TIMED = """
import os, sys, time
def note(what):
    with open(sys.argv[1], "a") as handle:
        handle.write(f"{sys.argv[2]} {what} {time.time()} {os.environ.get('OMP_NUM_THREADS')} {sys.argv[-1]}\\n")
note("start")
if sys.argv[2] == "fail":
    sys.exit(3)
time.sleep(float(sys.argv[3]))
note("end")
"""


def _times(calls: Path) -> dict[tuple[str, str], list[str]]:
    return {(name, what): rest for name, what, *rest in (line.split() for line in calls.read_text().splitlines())}


def test_two_jobs_overlap_independent_stages_and_a_dependent_one_waits(tmp_path: Path) -> None:
    fake, calls, out = tmp_path / "timed.py", tmp_path / "calls.txt", tmp_path / "out"
    fake.write_text(TIMED)
    stages = [Stage("train", ("train", "1.0")), Stage("other", ("other", "1.0")),
              Stage("eval", ("eval", "0"), after=("train",))]
    lines: list[str] = []
    records = run_stages(stages, out, echo=lines.append, launcher=(sys.executable, str(fake), str(calls)), jobs=2)
    times = _times(calls)
    start = {name: float(times[(name, "start")][0]) for name in ("train", "other", "eval")}
    end = {name: float(times[(name, "end")][0]) for name in ("train", "other", "eval")}
    assert start["other"] < end["train"] and start["train"] < end["other"]  # the two ran at once
    assert start["eval"] >= end["train"]  # the dependent one waited
    assert times[("train", "start")][1:] == ["1", "train.threads=1"]  # one torch thread beside another job
    assert times[("other", "start")][1:] == ["1", "1.0"]  # only a training gets train.threads
    assert [r.name for r in records] == ["train", "other", "eval"] and len(lines) == 3
    assert json.loads((out / "stages" / "train.json").read_text())["command"] == "llmft train 1.0 train.threads=1"
    wall = elapsed(records)
    assert 1.0 <= wall < sum(r.seconds for r in records) - 0.5  # real elapsed time, less than the stages' sum


def test_a_stage_that_runs_alone_keeps_torch_threads_beside_idle_jobs(tmp_path: Path) -> None:
    fake, calls, out = tmp_path / "timed.py", tmp_path / "calls.txt", tmp_path / "out"
    fake.write_text(TIMED)
    stages = [Stage("train", ("train", "0.2")), Stage("eval", ("eval", "0"), after=("train",))]
    run_stages(stages, out, echo=lambda line: None, launcher=(sys.executable, str(fake), str(calls)), jobs=2)
    threads = os.environ.get("OMP_NUM_THREADS", "None")
    assert _times(calls)[("train", "start")][1:] == [threads, "0.2"]  # no pin: nothing could run beside it
    assert json.loads((out / "stages" / "train.json").read_text())["command"] == "llmft train 0.2"


def test_runs_alone_only_when_every_pending_stage_waits_on_it() -> None:
    train, side = Stage("train", ("train",)), Stage("side", ("side",))
    evaluate, report = Stage("eval", ("eval",), after=("train",)), Stage("report", ("report",), after=("eval",))
    needs = transitive_needs([train, side, evaluate, report])
    assert needs["report"] == {"train", "eval"}
    assert runs_alone(train, [train, evaluate, report], running=0, needs=needs)  # report waits on train via eval
    assert not runs_alone(train, [train, side, evaluate], running=0, needs=needs)  # side could run beside it
    assert not runs_alone(train, [train, evaluate], running=1, needs=needs)  # another stage is running


def test_one_job_keeps_the_plan_order_and_torch_threads(tmp_path: Path) -> None:
    fake, calls = tmp_path / "timed.py", tmp_path / "calls.txt"
    fake.write_text(TIMED)
    stages = [Stage("train", ("train", "0")), Stage("other", ("other", "0")), Stage("eval", ("eval", "0"))]
    run_stages(stages, tmp_path / "out", echo=lambda line: None, launcher=(sys.executable, str(fake), str(calls)))
    starts = [line.split() for line in calls.read_text().splitlines() if " start " in line]
    assert [s[0] for s in starts] == ["train", "other", "eval"] and starts[0][-1] == "0"


def test_a_failure_beside_a_running_stage_stops_it_without_a_marker(tmp_path: Path) -> None:
    fake, calls, out = tmp_path / "timed.py", tmp_path / "calls.txt", tmp_path / "out"
    fake.write_text(TIMED)
    stages = [Stage("slow", ("slow", "60")), Stage("fail", ("fail", "0")), Stage("later", ("later", "0"))]
    began = time.monotonic()
    with pytest.raises(LlmftError, match=r"stage fail failed \(exit 3\)"):
        run_stages(stages, out, echo=lambda line: None, launcher=(sys.executable, str(fake), str(calls)), jobs=2)
    assert time.monotonic() - began < 30  # the slow stage was stopped, not waited for
    assert "slow start" in calls.read_text() and "slow end" not in calls.read_text()
    assert not (out / "stages" / "slow.json").exists() and not (out / "stages" / "fail.json").exists()
    assert "later" not in calls.read_text()


def test_a_stage_must_come_after_the_stages_it_needs() -> None:
    with pytest.raises(LlmftError, match="plan: stage eval comes after train, which is not listed before it"):
        check_order([Stage("eval", ("eval",), after=("train",)), Stage("train", ("train",))])


def test_elapsed_counts_overlapping_stages_once() -> None:
    records = [StageRecord("a", "", 10.0, False, start=100.0), StageRecord("b", "", 10.0, False, start=105.0),
               StageRecord("c", "", 5.0, True, start=200.0)]  # a and b overlap 5 s; c after an idle gap
    assert elapsed(records) == 15.0 + 5.0


def test_two_jobs_start_the_heaviest_chain_first(tmp_path: Path) -> None:
    fake, calls = tmp_path / "timed.py", tmp_path / "calls.txt"
    fake.write_text(TIMED)
    stages = [Stage("short1", ("short1", "0.3")), Stage("short2", ("short2", "0.3")),
              Stage("head", ("head", "0.3")), Stage("tail", ("tail", "0"), weight=5.0, after=("head",))]
    assert chain_weights(stages) == {"short1": 1.0, "short2": 1.0, "head": 6.0, "tail": 5.0}
    run_stages(stages, tmp_path / "out", echo=lambda line: None, launcher=(sys.executable, str(fake), str(calls)),
               jobs=2)
    starts = [line.split()[0] for line in calls.read_text().splitlines() if " start " in line]
    assert set(starts[:2]) == {"head", "short1"}  # then plan order among equal chains
    assert starts.index("tail") > starts.index("head")
