"""A local Apache Kafka without Docker: one KRaft node (broker + controller) on loopback ports
(``streams.kafka.cluster`` runs several of them as one cluster).

The jars come from Maven Central through `streams/kafka/pom.xml` (Kafka pinned there) into
`$IPR_CACHE_DIR` (default `~/.cache/ipr-router`), once. Needs `java` (17+) and, for the first
download, `mvn`. Set `IPR_KAFKA_BOOTSTRAP=host:port` to use an existing cluster instead.

    with kafka_bootstrap() as bootstrap:      # IPR_KAFKA_BOOTSTRAP, or a LocalKafka
        ...

BrokerError (RuntimeError)   java/mvn missing, the download failed, or the broker did not start
                             (the message ends with the tail of the broker's log).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from streams.kafka.admin import broker_count, run_sync
from streams.kafka.jars import ENV_BOOTSTRAP, BrokerError, ensure_jars
from streams.kafka.settings import KafkaSettings
from streams.kafka.tls import BrokerSecurity, listener_properties, make_security, scram_format_args

log = logging.getLogger(__name__)


T = TypeVar("T")


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the process that started it dies, even by
    SIGKILL, so a killed demo, benchmark or test run leaves no router, worker or broker behind
    (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# -------------------------------------------------------------------------------------- broker


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


class LocalKafka:
    """One Apache Kafka node in KRaft combined mode, in a temporary directory.

    `with LocalKafka() as kafka: kafka.bootstrap` -> "127.0.0.1:PORT". `stop()` terminates the
    JVM (SIGTERM, then SIGKILL) and removes the directory; it also runs at interpreter exit.
    """

    def __init__(
        self,
        *,
        partitions: int = 4,
        cache_dir: Path | str | None = None,
        heap: str = "512m",
        start_timeout: float = 60.0,
        extra_properties: dict[str, str] | None = None,
        sasl_ssl: bool = False,
        users: tuple[str, ...] = ("ipr",),
        port: int | None = None,
        data_dir: Path | str | None = None,
        node_id: int = 1,
        controller_port: int | None = None,
        voters: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        """``sasl_ssl``: clients connect over SASL_SSL (SCRAM or PLAIN, as ``users``, with a CA
        and certificate made for the run: ``security``); the broker's own traffic stays on a
        PLAINTEXT listener of its own. ``port`` and ``data_dir`` fixed, the broker can be
        stopped (``stop``, ``kill``) and started again in place, its data kept.

        A node of a cluster: its ``node_id``, a fixed ``controller_port``, the quorum's
        ``voters`` ("1@host:port,2@host:port,...", default this node alone) and the
        ``cluster_id`` every node's storage is formatted with."""
        self.fixed_port = port
        self.node_id, self.fixed_controller_port = node_id, controller_port
        self.voters, self.cluster_id = voters, cluster_id
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.sasl_ssl, self.users = sasl_ssl, users
        self.security: BrokerSecurity | None = None
        self._plain_port: int | None = None
        self.partitions = partitions
        self.cache_dir = cache_dir
        self.heap = heap
        self.start_timeout = start_timeout
        self.extra_properties = dict(extra_properties or {})
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._port: int | None = None

    @property
    def bootstrap(self) -> str:
        if self._port is None:
            raise BrokerError("LocalKafka is not started")
        return f"127.0.0.1:{self._port}"

    @property
    def log_file(self) -> Path | None:
        return None if self.workdir is None else self.workdir / "kafka.log"

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalKafka:
        if self.process is not None:
            return self
        java, libs = java_and_jars(self.cache_dir)
        began = time.monotonic()
        for attempt in range(3):  # a free port can be taken between our probe and Kafka's bind
            try:
                self.launch(java, libs)
                self.wait_ready()
                break
            except BrokerError:
                in_use = "Address already in use" in self._log_tail()
                self.stop()
                if not in_use or attempt == 2:
                    raise
                log.warning("port taken while the local Kafka started; retrying")
        self.startup_seconds = time.monotonic() - began
        atexit.register(self.stop)
        log.info("local Kafka up at %s in %.1f s", self.bootstrap, self.startup_seconds)
        return self

    def launch(self, java: str, libs: Path) -> None:
        """Format the storage (the first time) and start the JVM; ``wait_ready`` waits for it."""
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = self.data_dir or Path(tempfile.mkdtemp(prefix="ipr-kafka-"))
        self._port = self.fixed_port or free_port()
        controller_port = self.fixed_controller_port or free_port()
        self._plain_port = free_port() if self.sasl_ssl else self._port
        scram: list[str] = []
        if self.sasl_ssl and self.security is None:
            self.security = make_security(self.workdir / "tls", self.users)
            scram = scram_format_args(self.security)
        props = self.workdir / "server.properties"
        props.write_text(self._server_properties(controller_port))
        log4j = self.workdir / "log4j.properties"
        log4j.write_text(_LOG4J.format(log_file=self.workdir / "kafka.log"))
        classpath = str(libs / "*")
        jvm = [java, f"-Dlog4j.configuration=file:{log4j}", "-Djava.awt.headless=true"]
        if not (self.workdir / "data" / "meta.properties").is_file():  # a restart keeps it
            fmt = subprocess.run(
                [*jvm, "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp", classpath,
                 "kafka.tools.StorageTool", "format", "-t", self.cluster_id or _cluster_id(),
                 "-c", str(props),
                 *scram],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                tail = (fmt.stdout + fmt.stderr)[-3000:]
                raise BrokerError(f"formatting Kafka storage failed:\n{tail}")
        with open(self.workdir / "stdout.log", "wb") as out:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [*jvm, f"-Xmx{self.heap}", "-XX:+UseG1GC", "-cp", classpath, "kafka.Kafka",
                 str(props)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                # own process group: Ctrl-C in a terminal is ours to forward
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def _server_properties(self, controller_port: int) -> str:
        assert self.workdir is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters
            or f"{self.node_id}@127.0.0.1:{controller_port}",
            **self._listeners(controller_port),
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": str(self.partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            **self.extra_properties,
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _listeners(self, controller_port: int) -> dict[str, str]:
        plain = f"PLAINTEXT://127.0.0.1:{self._plain_port}"
        out = {
            "listeners": f"{plain},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": plain,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
        if self.security is not None:
            client = f"CLIENT://127.0.0.1:{self._port}"
            out["listeners"] += f",{client}"
            out["advertised.listeners"] += f",{client}"
            out["listener.security.protocol.map"] += ",CLIENT:SASL_SSL"
            out.update(listener_properties(self.security, "client"))
        return out

    def wait_ready(self) -> None:
        assert self.process is not None and self._port is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"Kafka exited with code {self.process.returncode} while starting\n"
                    + self._log_tail()
                )
            if _port_open(self._port):
                try:
                    plain = f"127.0.0.1:{self._plain_port}"
                    if run_sync(asyncio.wait_for(broker_count(plain), 10)) > 0:
                        return
                except Exception as exc:  # noqa: BLE001 - not ready yet; retried until the deadline
                    log.debug("local Kafka not ready: %r", exc)
            time.sleep(0.2)
        raise BrokerError(
            f"Kafka did not answer a metadata request within {self.start_timeout:.0f} s\n"
            + self._log_tail()
        )

    def _log_tail(self, chars: int = 4000) -> str:
        if self.workdir is None:
            return ""
        parts = []
        for name in ("stdout.log", "kafka.log"):
            path = self.workdir / name
            if path.exists():
                text = path.read_text(errors="replace")[-chars:]
                if text.strip():
                    parts.append(f"--- {path} (tail) ---\n{text}")
        return "\n".join(parts)

    def stop(self, timeout: float = 20.0) -> None:
        atexit.unregister(self.stop)
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("local Kafka (pid %d) ignored SIGTERM; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.workdir is not None and self.data_dir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self._port = None

    def kill(self) -> None:
        """SIGKILL the broker (a crash: no controlled shutdown); ``start`` brings it back."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


_LOG4J = """\
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


def java_and_jars(cache_dir: Path | str | None = None) -> tuple[str, Path]:
    """The ``java`` executable and the directory of Kafka's jars (downloaded the first time)."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError(f"`java` (17+) is needed for the local Kafka; or set {ENV_BOOTSTRAP}")
    return java, ensure_jars(cache_dir)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


# ------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def kafka_bootstrap(partitions: int = 4) -> Iterator[str]:
    """`IPR_KAFKA_BOOTSTRAP` if set (an existing cluster), else a LocalKafka for the block."""
    existing = KafkaSettings().given_bootstrap
    if existing:
        yield existing
        return
    with LocalKafka(partitions=partitions) as kafka:
        yield kafka.bootstrap
