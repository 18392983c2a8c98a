"""The bench's CPU accounting: a process's core-seconds, counted once, against the wall time."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.cpu import CpuUse

# The child burns 0.4 s of CPU (whatever else the machine is doing), says so, and waits.
BUSY = ("import sys, time\nwhile time.process_time() < 0.4: pass\n"
        "print('done', flush=True)\nsys.stdin.read()")


def test_a_busy_child_is_counted_as_the_router_and_an_idle_harness_as_nearly_nothing():
    child = subprocess.Popen([sys.executable, "-c", BUSY], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        with CpuUse([child.pid]) as cpu:
            assert child.stdout.readline() == "done\n"  # blocks, idle, until the work is done
    finally:
        child.stdin.close()
        child.wait()
    s = cpu.seconds
    assert s["cores"] == os.cpu_count() and s["wall"] > 0
    # the child's CPU since CpuUse began: at most its 0.4 s (plus a tick), most of it after start
    assert 0.2 <= s["router"] <= min(0.45, s["wall"] * s["cores"] + 0.05)
    assert s["harness"] < 0.1 and s["other"] >= 0.0
