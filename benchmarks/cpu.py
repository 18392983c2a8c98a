"""Where a machine's CPU goes during a block of a benchmark: the hypervisor's steal, and the
core-seconds of given processes against the machine's busy time (Linux ``/proc``)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields)


class Steal:
    """Share of CPU time the hypervisor gave to other guests during a ``with`` block (%)."""

    def __enter__(self):
        self.start = cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        (s0, t0), (s1, t1) = self.start, cpu_ticks()
        self.percent = round(100.0 * (s1 - s0) / max(1, t1 - t0), 1)


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds the machine's cores have been busy so far (idle, iowait and steal left out)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / os.sysconf("SC_CLK_TCK")


class CpuUse:
    """Where the machine's CPU went during a ``with`` block: the routers, this process (the load
    generator and the collector) and everything else (the broker, mostly), in core-seconds."""

    def __init__(self, routers: list[int]):
        self.routers = routers

    def _now(self) -> tuple[float, float, float, float]:
        return (time.monotonic(), _machine_busy_s(), sum(map(_process_cpu_s, self.routers)),
                _process_cpu_s(os.getpid()))

    def __enter__(self):
        self.start = self._now()
        return self

    def __exit__(self, *exc) -> None:
        wall, busy, router, harness = (b - a for a, b in zip(self.start, self._now(),
                                                              strict=True))
        self.seconds = {"wall": round(wall, 2), "router": round(router, 2),
                        "harness": round(harness, 2),
                        "other": round(max(0.0, busy - router - harness), 2),
                        "cores": os.cpu_count() or 1}
