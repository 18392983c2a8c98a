"""The bench's CPU accounting: a process's core-seconds, counted once, against the wall time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.cpu import CpuUse


def test_a_busy_child_is_counted_as_the_router_and_an_idle_harness_as_nearly_nothing():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\n"
                              "while time.time() - t < 0.8: pass"])
    try:
        with CpuUse([child.pid]) as cpu:
            time.sleep(0.6)
    finally:
        child.wait()
    s = cpu.seconds
    assert s["cores"] == os.cpu_count() and 0.55 <= s["wall"] < 1.0
    assert 0.3 <= s["router"] <= s["wall"] + 0.05  # one busy core
    assert s["harness"] < 0.1 and s["other"] >= 0.0
