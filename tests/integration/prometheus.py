"""A real Prometheus for the integration tests: Debian's ``prometheus`` package, fetched once into
``$IPR_CACHE_DIR/prometheus-<version>`` (default ``~/.cache/ipr-router``), like the broker's jars
(``streams/kafka/jars.py``); ``IPR_PROMETHEUS`` names a binary to use instead.

The package is fetched with ``apt-get download`` (no root needed; its signed index checks the
bytes), pinned to a version whose sha256 is checked here too. When apt's lists do not know that
version (a newer point release replaced it) apt's candidate is taken; when they know no version
at all, ``apt-get update`` runs first, as root only. Only ``prometheus`` and ``promtool`` are
kept from the package (``dpkg-deb -x``); a marker naming the package's sha256 is written last,
so a half-written folder is never used.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from ipr_model.artifacts.cache import cache_dir
from streams.kafka.local import die_with_parent, free_port

log = logging.getLogger(__name__)

PACKAGE = "prometheus"
VERSION = "2.42.0+ds-5+deb12u1"  # Debian 12's
SHA256 = {"amd64": "81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"}
ENV_BINARY = "IPR_PROMETHEUS"
_MARKER = ".complete"


class PrometheusUnavailable(RuntimeError):
    """The Prometheus binary could not be fetched."""


def ensure_prometheus(home: Path | None = None) -> Path:
    """The ``prometheus`` binary (``promtool`` beside it), fetched the first time."""
    if os.environ.get(ENV_BINARY):
        return Path(os.environ[ENV_BINARY])
    root = (home or cache_dir()) / f"prometheus-{VERSION}"
    binary = root / "bin" / "prometheus"
    if _complete(root) and binary.is_file():
        return binary
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be fetching it
        if _complete(root) and binary.is_file():
            return binary
        tmp = Path(tempfile.mkdtemp(prefix="fetch-", dir=root))
        try:
            deb = _download(tmp)
            sha = hashlib.sha256(deb.read_bytes()).hexdigest()
            pinned = SHA256.get(_arch())
            if VERSION in deb.name and pinned is not None and sha != pinned:
                raise PrometheusUnavailable(f"{deb.name}: sha256 {sha}, expected {pinned}")
            _run(["dpkg-deb", "-x", str(deb), str(tmp / "x")])
            (tmp / "bin").mkdir()
            for tool in ("prometheus", "promtool"):
                shutil.move(tmp / "x" / "usr" / "bin" / tool, tmp / "bin" / tool)
            (root / _MARKER).unlink(missing_ok=True)
            shutil.rmtree(root / "bin", ignore_errors=True)
            (tmp / "bin").rename(root / "bin")
            (root / _MARKER).write_text(f"{deb.name} {sha}\n")
            log.info("Prometheus from %s into %s", deb.name, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return binary


def _complete(root: Path) -> bool:
    return (root / _MARKER).is_file()


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=False).stdout.strip()


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PrometheusUnavailable(f"`{' '.join(cmd)}` failed (exit {done.returncode}): "
                                    f"{(done.stdout + done.stderr).strip()[-2000:]}")
    return done


def _download(into: Path) -> Path:
    """The package's .deb in ``into``: the pinned version, else apt's candidate."""
    if shutil.which("apt-get") is None:
        raise PrometheusUnavailable(f"apt-get is needed to fetch Debian's {PACKAGE} package; "
                                    f"or set {ENV_BINARY} to a prometheus binary")
    if not _known():
        if os.geteuid() != 0:
            raise PrometheusUnavailable(f"apt's lists know no {PACKAGE} package: run `apt-get "
                                        f"update` as root once, or set {ENV_BINARY}")
        _run(["apt-get", "update", "-q"])
    for spec in (f"{PACKAGE}={VERSION}", PACKAGE):
        try:
            _run(["apt-get", "download", "-q", spec], cwd=into)
        except PrometheusUnavailable as e:
            log.warning("%s", e)
            continue
        (deb,) = into.glob(f"{PACKAGE}_*.deb")
        return deb
    raise PrometheusUnavailable(f"apt-get could not download {PACKAGE} (see the log)")


def _known() -> bool:
    done = subprocess.run(["apt-cache", "policy", PACKAGE], capture_output=True, text=True,
                          check=False)
    return "Candidate:" in done.stdout and "Candidate: (none)" not in done.stdout


class LocalPrometheus:
    """Prometheus on a free loopback port scraping ``targets`` (job -> ``host:port`` list) every
    ``interval_s``, its data in ``folder``; stopped on exit."""

    def __init__(self, targets: dict[str, list[str]], folder: Path, interval_s: float = 1.0):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "prometheus.yml"
        every = f"{int(interval_s * 1000)}ms"
        self.config.write_text(json.dumps({  # YAML takes JSON
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]}
                               for job, hosts in targets.items()],
        }))
        self.binary = ensure_prometheus()
        self.log_path = folder / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LocalPrometheus:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [str(self.binary), f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent)
        deadline = time.monotonic() + 60
        while not self._ready():
            assert self.proc.poll() is None, self.log_tail()
            assert time.monotonic() < deadline, f"not ready in 60 s: {self.log_tail()}"
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def api(self, path: str, **params: object) -> dict:
        """``/api/v1/<path>``'s data; an error names Prometheus's reason."""
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def targets_up(self) -> dict[str, str]:
        """Each active target's scrape URL and its health (up, down, unknown)."""
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}
