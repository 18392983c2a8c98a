"""A real trace backend for the tracing test and the traced bench: Zipkin's server (one Java
jar from Maven Central, run on the Java the local broker uses; spans kept in memory), fetched
once into ``$IPR_CACHE_DIR`` (default ``~/.cache/ipr-router``) with Maven and checked against
its sha256, and read back through its HTTP API."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from ipr_model.artifacts.cache import cache_dir
from streams.kafka.jars import BrokerError
from streams.kafka.local import die_with_parent, free_port

VERSION = "3.4.2"
ARTIFACT = f"io.zipkin:zipkin-server:{VERSION}:jar:exec"
SHA256 = "c9c07923d5a96fc71c0d0f548280097d77c4ceea515033bc6961b171934dd737"


def ensure_jar(home: Path | None = None) -> Path:
    """Zipkin's server jar, downloaded with Maven the first time; a wrong sha256 is an error."""
    root = (home or cache_dir()) / "zipkin"
    jar = root / f"zipkin-server-{VERSION}-exec.jar"
    if jar.is_file():
        return jar
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be downloading it
        if jar.is_file():
            return jar
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(f"Maven (`mvn`) is needed once to download {ARTIFACT}")
        tmp = Path(tempfile.mkdtemp(prefix="zipkin.tmp-", dir=root))
        try:
            cmd = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={ARTIFACT}",
                   f"-DoutputDirectory={tmp}"]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = tmp / jar.name
            if done.returncode != 0 or not got.is_file():
                tail = (done.stdout + done.stderr).strip()[-3000:]
                raise BrokerError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}")
            digest = hashlib.sha256(got.read_bytes()).hexdigest()
            if digest != SHA256:
                raise BrokerError(f"{ARTIFACT}: sha256 {digest}, expected {SHA256}")
            got.rename(jar)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return jar


class Zipkin:
    """``with Zipkin() as z``: a Zipkin server on a free port, up; ``z.endpoint`` takes spans
    (what ``OTEL_EXPORTER_ZIPKIN_ENDPOINT`` names), ``z.trace(id)`` gives one trace's spans."""

    def __init__(self, log_path: Path, start_timeout_s: float = 120.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.endpoint = f"{self.url}/api/v2/spans"
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """The ``OTEL_*`` variables that send a service's spans here, in batches of 200 ms."""
        return {"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_ZIPKIN_ENDPOINT": self.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "200"}

    def __enter__(self) -> Zipkin:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java is needed to run Zipkin's server")
        jar = ensure_jar()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [java, "-Xmx512m", "-jar", str(jar), "--logging.level.root=WARN"],
                env={"QUERY_PORT": str(self.port), "PATH": "/usr/bin:/bin",
                     "JAVA_HOME": str(Path(java).resolve().parents[1])},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent)
        deadline = time.monotonic() + self.start_timeout_s
        while not self._up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise BrokerError(f"Zipkin did not start on port {self.port}:\n"
                                  f"{self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.3)
        return self

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def trace(self, trace_id: str) -> list[dict]:
        """The spans Zipkin holds of a trace ([] before any arrived)."""
        r = httpx.get(f"{self.url}/api/v2/trace/{trace_id}", timeout=10)
        return [] if r.status_code == 404 else r.raise_for_status().json()

    def traces(self, service: str, limit: int = 100) -> list[list[dict]]:
        """The newest traces with a span of ``service``."""
        r = httpx.get(f"{self.url}/api/v2/traces", timeout=10,
                      params={"serviceName": service, "limit": limit, "lookback": 3_600_000})
        return r.raise_for_status().json()

    def span_count(self) -> int:
        """Spans Zipkin has taken in so far (its own metric)."""
        r = httpx.get(f"{self.url}/prometheus", timeout=10)
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines()
                       if line.startswith("zipkin_collector_spans_total")))

    def __exit__(self, *_exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
