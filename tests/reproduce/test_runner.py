"""The runner: a killed `llmft reproduce` rerun redoes no finished stage; a failed stage is a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmft.core.errors import LlmftError
from llmft.reproduce.plan import Stage
from llmft.reproduce.runner import run_stages

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
from llmft.reproduce.runner import run_stages
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
