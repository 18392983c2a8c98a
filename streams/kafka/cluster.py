"""A local Apache Kafka cluster of several KRaft nodes, each a controller and a broker, from the
same jars as the one-node ``streams.kafka.local.LocalKafka`` (`ipr broker start --brokers 3`).

Every node has its own fixed ports and data folder, so one can be killed (SIGKILL) and started
again in place with its data: the fault tests take down the leader of a topic's partitions
under running services. With 3 nodes and more, topics are replicated 3 times and a write needs
2 in-sync replicas (``min.insync.replicas``), so losing one node loses nothing.

    with LocalCluster(3) as cluster:
        cluster.bootstrap            # "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
        cluster.kill(0); cluster.start_node(0)

BrokerError (RuntimeError)   java/mvn missing, or a node did not start (with its log's tail).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from streams.kafka.admin import broker_count, run_sync
from streams.kafka.jars import BrokerError
from streams.kafka.local import LocalKafka, _cluster_id, free_port, java_and_jars

log = logging.getLogger(__name__)

LAYOUT_FILE = "cluster.json"  # in the cluster's folder: its id and ports, reused on a restart


@dataclass(frozen=True)
class ClusterLayout:
    """What stays the same across restarts of a cluster: its id and every node's ports."""

    cluster_id: str
    client_ports: tuple[int, ...]
    controller_ports: tuple[int, ...]

    @classmethod
    def new(cls, brokers: int, port: int | None = None) -> ClusterLayout:
        """Free ports, or the client ports ``port``, ``port + 1``, ... when it is given."""
        if brokers < 1:
            raise BrokerError(f"a cluster needs at least 1 broker, got {brokers}")
        clients = [] if port is None else list(range(port, port + brokers))
        ports: set[int] = set()
        while len(ports) < (brokers if clients else 2 * brokers):
            if (p := free_port()) not in clients:
                ports.add(p)
        ordered = sorted(ports)
        clients = clients or ordered[:brokers]
        return cls(_cluster_id(), tuple(clients), tuple(ordered[-brokers:]))

    @property
    def brokers(self) -> int:
        return len(self.client_ports)

    @property
    def voters(self) -> str:
        """``controller.quorum.voters``: every node votes (node ids from 1)."""
        return ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(self.controller_ports))

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.client_ports)

    def to_json(self) -> str:
        return json.dumps({"cluster_id": self.cluster_id, "client_ports": self.client_ports,
                           "controller_ports": self.controller_ports}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterLayout:
        d = json.loads(text)
        layout = cls(d["cluster_id"], tuple(d["client_ports"]), tuple(d["controller_ports"]))
        if len(layout.client_ports) != len(layout.controller_ports):
            raise BrokerError(f"{LAYOUT_FILE}: expected as many client as controller ports")
        return layout


def replication_properties(brokers: int) -> dict[str, str]:
    """The cluster's defaults: replicated min(3, brokers) times, and a write acknowledged by
    all in-sync replicas needs all but one of them (at least 1), for every topic including the
    consumer offsets and the transaction log."""
    rf = min(3, brokers)
    min_isr = max(1, rf - 1)
    return {
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min_isr),
    }


# A dead node is fenced (its partitions led elsewhere) once it missed heartbeats this long.
FAILURE_DETECTION = {"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "1000",
                     "num.network.threads": "2", "num.io.threads": "2"}


class LocalCluster:
    """``brokers`` KRaft nodes (controller + broker each, every one a voter) in one folder:
    ``data_dir`` (kept on stop, started again in place) or a temporary one (removed on stop)."""

    def __init__(
        self,
        brokers: int = 3,
        *,
        partitions: int = 4,
        cache_dir: Path | str | None = None,
        heap: str = "384m",
        start_timeout: float = 90.0,
        data_dir: Path | str | None = None,
        port: int | None = None,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        """``port``: the first node's client port, the others' follow (default: free ports)."""
        self.root = None if data_dir is None else Path(data_dir)
        self.keep = data_dir is not None
        self.cache_dir, self.start_timeout = cache_dir, start_timeout
        self.layout = self._layout(brokers, port)
        props = {**replication_properties(brokers), **FAILURE_DETECTION,
                 **(extra_properties or {})}
        self.replication = int(props["default.replication.factor"])
        self.nodes = [
            LocalKafka(partitions=partitions, cache_dir=cache_dir, heap=heap,
                       start_timeout=start_timeout, extra_properties=props,
                       port=self.layout.client_ports[i], node_id=i + 1,
                       controller_port=self.layout.controller_ports[i],
                       voters=self.layout.voters, cluster_id=self.layout.cluster_id,
                       data_dir=self._root() / f"node-{i + 1}")
            for i in range(brokers)
        ]
        self.startup_seconds: float | None = None
        self.security = None  # the cluster speaks PLAINTEXT only

    def _root(self) -> Path:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="ipr-kafka-cluster-"))
        return self.root

    def _layout(self, brokers: int, port: int | None) -> ClusterLayout:
        saved = self._root() / LAYOUT_FILE
        if saved.is_file():
            layout = ClusterLayout.from_json(saved.read_text())
            if layout.brokers != brokers:
                raise BrokerError(f"{self.root} holds a cluster of {layout.brokers} brokers, "
                                  f"not {brokers}: expected the same --brokers, or a new folder")
            if port is not None and layout.client_ports[0] != port:
                raise BrokerError(f"{self.root} holds a cluster on port "
                                  f"{layout.client_ports[0]}: expected that --port, or none")
            return layout
        layout = ClusterLayout.new(brokers, port)
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(layout.to_json())
        return layout

    @property
    def bootstrap(self) -> str:
        return self.layout.bootstrap

    @property
    def workdir(self) -> Path | None:
        return self.root

    @property
    def pids(self) -> list[int]:
        return [n.process.pid for n in self.nodes if n.process is not None]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        """Every node at once (none is ready before a majority of the quorum runs)."""
        java, libs = java_and_jars(self.cache_dir)
        began = time.monotonic()
        atexit.register(self.stop)
        try:
            for node in self.nodes:
                if node.process is None:
                    node.launch(java, libs)
            for node in self.nodes:
                node.wait_ready()
            self._wait_all_brokers()
        except BrokerError:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info("local Kafka cluster of %d up at %s in %.1f s", len(self.nodes), self.bootstrap,
                 self.startup_seconds)
        return self

    def node_index(self, broker_id: int) -> int:
        """The index in ``nodes`` of the broker Kafka calls ``broker_id``."""
        if not 1 <= broker_id <= len(self.nodes):
            raise BrokerError(f"expected a broker id from 1 to {len(self.nodes)}, got {broker_id}")
        return broker_id - 1

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash); ``start_node`` brings it back with its data."""
        self.nodes[index].kill()

    def stop_node(self, index: int) -> None:
        self.nodes[index].stop()

    def start_node(self, index: int) -> None:
        java, libs = java_and_jars(self.cache_dir)
        node = self.nodes[index]
        if node.process is None:
            node.launch(java, libs)
            node.wait_ready()
            self._wait_all_brokers()

    def _wait_all_brokers(self) -> None:
        """Until the cluster's metadata lists every node as a live broker (a restarted node
        answers before the controller has unfenced it)."""
        deadline = time.monotonic() + self.start_timeout
        while (seen := self._live_brokers()) < len(self.nodes):
            if time.monotonic() > deadline:
                raise BrokerError(f"expected {len(self.nodes)} live brokers within "
                                  f"{self.start_timeout:.0f} s, the cluster lists {seen}")
            time.sleep(0.2)

    def _live_brokers(self) -> int:
        try:
            return run_sync(asyncio.wait_for(broker_count(self.bootstrap), 10))
        except Exception as exc:  # noqa: BLE001 - not ready yet; retried until the deadline
            log.debug("cluster not ready: %r", exc)
            return 0

    def exited(self) -> list[LocalKafka]:
        """The nodes that exited on their own (a node stopped or killed here is not one)."""
        return [n for n in self.nodes if n.process is not None and n.process.poll() is not None]

    def failure(self) -> str | None:
        """Why the cluster is down: a majority of its nodes, the KRaft quorum, exited on their
        own (with the last one's log tail); None while a majority runs."""
        gone = self.exited()
        running = len(self.nodes) - len(gone)
        if running > len(self.nodes) // 2:
            return None
        return (f"expected a majority of the {len(self.nodes)} Kafka nodes running, {running} "
                "run: " + "; ".join(f"node {n.node_id} exited with code {n.process.returncode}"
                                    for n in gone) + "\n" + gone[-1]._log_tail())

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to every node at once (one by one, the last would wait for a quorum that is
        gone), then SIGKILL to any still running after ``timeout``."""
        atexit.unregister(self.stop)
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            node.stop(timeout)
        if not self.keep and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
