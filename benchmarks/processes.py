"""Start and stop the project's own services as child processes (demo, benchmarks, tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from streams.kafka.local import die_with_parent


class Service:
    """``python -m MODULE ARGS`` (the ``ipr`` command by default) in its own process group,
    logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path,
                 module: str = "streams.cli"):
        self.name = name
        self.url: str | None = None  # where it listens, for an HTTP service
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the child's log, closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash case (no shutdown, no final commit)."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def check_alive(services: list[Service]) -> None:
    """RuntimeError naming the first service that exited before its run ended, with its log."""
    for s in services:
        if not s.alive():
            raise RuntimeError(f"{s.name} exited early:\n{s.log_tail()}")


def router_env(
    bootstrap: str, app_id: str, web_port: int | None = None, **extra: str
) -> dict[str, str]:
    env = {
        "IPR_KAFKA_BOOTSTRAP": bootstrap,
        "IPR_ROUTER_APP_ID": app_id,
        "IPR_ROUTER_WEB_ENABLED": "true" if web_port else "false",
        "IPR_ROUTER_DATA_DIR": str(Path("build") / "faust" / app_id),
    }
    if web_port:
        env["IPR_ROUTER_WEB_PORT"] = str(web_port)
    env.update(extra)
    return env


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the ``finally`` that stops the broker and the services a
    command started also runs when it is terminated (e.g. by ``timeout`` or a supervisor)."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


class RssSampler(threading.Thread):
    """Peak resident memory of a process, sampled from /proc every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stopped = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except OSError:
                return
