"""OpenMP's wait policy for this process, chosen from how busy the machine is at launch (before torch loads).

Spinning waits (ACTIVE) run small models 1.2-1.3x faster than sleeping ones (PASSIVE) on an idle machine, but
beside another CPU-bound job two spinning threads fall to about half of one thread's speed (bench/threads.py,
bench/RESULTS.md). So: ACTIVE when every core is idle at launch, PASSIVE otherwise or when the user set it.
A server (`llmft serve`) idles between requests, where ACTIVE threads would spin forever: on an idle machine it
keeps OpenMP's own default instead, which spins a short while before it sleeps (1.3-1.4x PASSIVE's decode speed
at 16-64 concurrent rows, bench/RESULTS.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping

IDLE_BELOW = 0.5  # cores other processes may keep busy for the machine to count as idle
SAMPLE_SECONDS = 0.2


def busy_cores(sample_seconds: float = SAMPLE_SECONDS, stat: str = "/proc/stat") -> float | None:
    """Cores kept busy by all processes over a short sample (from /proc/stat); None where it cannot be read."""
    def read() -> tuple[int, int]:
        with open(stat, encoding="ascii") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = read()
        time.sleep(sample_seconds)
        busy1, total1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


def choose_wait_policy(environ: MutableMapping[str, str], busy: float | None, idle: str = "ACTIVE") -> str:
    """The OMP_WAIT_POLICY to run with: the user's if set; PASSIVE for a multi-process launch (its ranks share
    the cores) or a busy or unknown machine; `idle` when the machine is idle ("" = OpenMP's default)."""
    if environ.get("OMP_WAIT_POLICY"):
        return environ["OMP_WAIT_POLICY"]
    if int(environ.get("LOCAL_WORLD_SIZE", environ.get("WORLD_SIZE", "1")) or 1) > 1:
        return "PASSIVE"
    return idle if busy is not None and busy < IDLE_BELOW else "PASSIVE"


def set_wait_policy(environ: MutableMapping[str, str] = os.environ, idle: str = "ACTIVE") -> str:
    """Choose the policy (sampling the machine only when the user has not set one) and put it in `environ`
    (left unset for OpenMP's default)."""
    busy = None if environ.get("OMP_WAIT_POLICY") else busy_cores()
    policy = choose_wait_policy(environ, busy, idle)
    if policy:
        environ["OMP_WAIT_POLICY"] = policy
    return policy
