"""OpenMP's wait policy: spinning only on an idle machine, never over the user's choice or a multi-process launch."""

import os
import subprocess
import sys

from llmft.threads import busy_cores, choose_wait_policy, set_wait_policy


def test_idle_machine_spins_busy_or_unknown_sleeps():
    assert choose_wait_policy({}, busy=0.1) == "ACTIVE"
    assert choose_wait_policy({}, busy=0.9) == "PASSIVE"  # another job holds most of a core
    assert choose_wait_policy({}, busy=None) == "PASSIVE"  # no /proc/stat: the safe choice


def test_a_server_keeps_openmps_short_spin_when_idle_and_sleeps_when_busy(monkeypatch):
    assert choose_wait_policy({}, busy=0.1, idle="") == ""  # a server idles between requests: no endless spin
    assert choose_wait_policy({}, busy=0.9, idle="") == "PASSIVE"
    environ: dict[str, str] = {}
    monkeypatch.setattr("llmft.threads.busy_cores", lambda: 0.0)
    assert set_wait_policy(environ, idle="") == "" and "OMP_WAIT_POLICY" not in environ
    assert set_wait_policy(environ) == "ACTIVE" and environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_users_policy_and_multi_process_launches_win():
    assert choose_wait_policy({"OMP_WAIT_POLICY": "ACTIVE"}, busy=1.8) == "ACTIVE"
    assert choose_wait_policy({"OMP_WAIT_POLICY": "PASSIVE"}, busy=0.0) == "PASSIVE"
    assert choose_wait_policy({"LOCAL_WORLD_SIZE": "2"}, busy=0.0) == "PASSIVE"


def test_busy_cores_reads_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    assert busy_cores(0.0, str(stat)) is None  # no time passed between the two reads
    assert busy_cores(0.0, str(tmp_path / "missing")) is None
    if os.path.exists("/proc/stat"):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = busy_cores(0.5)
        finally:
            spinner.kill()
            spinner.wait()
        assert busy is not None and busy >= 0.5  # the spinning process shows as (most of) a busy core
