"""The local cluster's configuration, without starting a JVM: the quorum, the ports, the
replication defaults, and a layout reused when the same folder is started again."""

from __future__ import annotations

import pytest

from streams.kafka.cluster import ClusterLayout, LocalCluster, replication_properties
from streams.kafka.jars import BrokerError


def _properties(node) -> dict[str, str]:
    node.workdir = node.data_dir
    text = node._server_properties(node.fixed_controller_port)
    return dict(line.split("=", 1) for line in text.splitlines())


def test_every_node_votes_in_the_quorum_on_its_controller_port() -> None:
    layout = ClusterLayout("cid", (9001, 9002, 9003), (9101, 9102, 9103))
    assert layout.voters == "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    assert layout.bootstrap == "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"


def test_a_new_layout_has_distinct_ports() -> None:
    layout = ClusterLayout.new(3)
    ports = layout.client_ports + layout.controller_ports
    assert len(ports) == len(set(ports)) == 6


def test_a_given_port_is_the_first_nodes_and_the_others_follow() -> None:
    layout = ClusterLayout.new(3, port=47001)
    assert layout.client_ports == (47001, 47002, 47003)
    assert not set(layout.controller_ports) & set(layout.client_ports)
    assert len(set(layout.controller_ports)) == 3


def test_a_layout_survives_its_json() -> None:
    layout = ClusterLayout.new(3)
    assert ClusterLayout.from_json(layout.to_json()) == layout
    with pytest.raises(BrokerError, match="as many client as controller ports"):
        ClusterLayout.from_json('{"cluster_id": "c", "client_ports": [1, 2], '
                                '"controller_ports": [3]}')


@pytest.mark.parametrize(("brokers", "rf", "min_isr"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_topics_are_replicated_up_to_3_times_and_need_all_but_one_replica(
    brokers, rf, min_isr
) -> None:
    props = replication_properties(brokers)
    assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] \
        == props["transaction.state.log.replication.factor"] == str(rf)
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == str(min_isr)


def test_each_node_has_its_id_ports_and_folder_and_shares_the_quorum(tmp_path) -> None:
    cluster = LocalCluster(3, data_dir=tmp_path)
    props = [_properties(n) for n in cluster.nodes]
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert {p["controller.quorum.voters"] for p in props} == {cluster.layout.voters}
    listeners = [p["listeners"] for p in props]
    assert len(set(listeners)) == 3
    assert {p["log.dirs"] for p in props} == {str(tmp_path / f"node-{i}" / "data")
                                             for i in (1, 2, 3)}
    assert {p["default.replication.factor"] for p in props} == {"3"}
    assert {p["min.insync.replicas"] for p in props} == {"2"}
    assert {n.cluster_id for n in cluster.nodes} == {cluster.layout.cluster_id}
    assert cluster.bootstrap.count(",") == 2
    assert cluster.node_index(2) == 1


def test_the_same_folder_starts_the_same_cluster_again(tmp_path) -> None:
    first = LocalCluster(3, data_dir=tmp_path)
    assert LocalCluster(3, data_dir=tmp_path).layout == first.layout
    with pytest.raises(BrokerError, match="cluster of 3 brokers, not 2"):
        LocalCluster(2, data_dir=tmp_path)


def test_a_broker_id_outside_the_cluster_is_refused(tmp_path) -> None:
    with pytest.raises(BrokerError, match="expected a broker id from 1 to 3, got 4"):
        LocalCluster(3, data_dir=tmp_path).node_index(4)


class _Supervised:
    """`supervise` on a LocalCluster whose nodes are real child processes (no JVM), in a thread."""

    def __init__(self, cluster) -> None:
        import subprocess
        import sys
        import threading

        from streams.kafka.foreground import supervise

        for node in cluster.nodes:
            node.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        self.cluster, self.stop, self.error = cluster, threading.Event(), None

        def run() -> None:
            try:
                supervise(cluster, self.stop, every_s=0.05)
            except BrokerError as e:
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def crash(self, index: int) -> None:
        """SIGKILL a node behind the cluster's back (its process object stays: it exited)."""
        node = self.cluster.nodes[index]
        node.process.kill()
        node.process.wait()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for node in self.cluster.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait()


def _wait_for(predicate, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_cluster_runs_on_while_a_majority_of_its_nodes_runs(tmp_path, caplog) -> None:
    import logging

    cluster = LocalCluster(3, data_dir=tmp_path)
    watched = _Supervised(cluster)
    try:
        with caplog.at_level(logging.WARNING, logger="streams.kafka.foreground"):
            watched.crash(2)
            _wait_for(lambda: "Kafka node 3 exited" in caplog.text)
            assert watched.thread.is_alive() and cluster.failure() is None
            assert [n.node_id for n in cluster.exited()] == [3]
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1 and "2 of 3 nodes run, a majority" in lines[0]
            assert all(n.process.poll() is None for n in cluster.nodes[:2])  # not stopped
            watched.crash(1)  # the majority is lost: the supervisor ends with why
            watched.thread.join(10)
        assert not watched.thread.is_alive()
        assert str(watched.error).startswith(
            "expected a majority of the 3 Kafka nodes running, 1 run: node 2 exited with code "
            "-9; node 3 exited with code -9")
        assert len([r for r in caplog.records if "exited" in r.getMessage()]) == 1  # once each
    finally:
        watched.close()


def test_a_cluster_of_two_is_down_when_either_node_exits(tmp_path) -> None:
    cluster = LocalCluster(2, data_dir=tmp_path)
    watched = _Supervised(cluster)
    try:
        watched.crash(0)
        watched.thread.join(10)
        assert "1 run: node 1 exited with code -9" in str(watched.error)
    finally:
        watched.close()


def test_ctrl_c_ends_the_supervision_of_a_whole_cluster(tmp_path) -> None:
    watched = _Supervised(LocalCluster(3, data_dir=tmp_path))
    try:
        watched.stop.set()
        watched.thread.join(10)
        assert not watched.thread.is_alive() and watched.error is None
    finally:
        watched.close()
