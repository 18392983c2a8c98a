"""`ipr broker start | stop`: a LocalKafka (or, with ``brokers`` > 1, a LocalCluster) in the
foreground, its address in a state file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from streams.kafka.cluster import LocalCluster
from streams.kafka.jars import BrokerError
from streams.kafka.local import LocalKafka

log = logging.getLogger(__name__)


def run_forever(
    state_file: Path | str,
    *,
    partitions: int = 4,
    sasl_ssl: bool = False,
    port: int | None = None,
    data_dir: Path | None = None,
    on_ready: Callable[[LocalKafka | LocalCluster], None] | None = None,
    brokers: int = 1,
) -> None:
    """Run a LocalKafka (``brokers`` > 1: a LocalCluster of as many nodes) in the foreground
    until SIGTERM/SIGINT (`ipr broker start`).

    While it runs, `state_file` holds JSON {"bootstrap", "pid", "broker_pids", "workdir"} (and,
    with ``sasl_ssl``, "client_env": a client's IPR_KAFKA_* variables); it is removed on exit.
    Raises BrokerError if the broker, or a majority of the cluster's nodes, dies on its own.
    """
    state_file = Path(state_file)
    if brokers > 1 and sasl_ssl:
        raise BrokerError(f"SASL_SSL runs on one broker; expected no --sasl-ssl with {brokers}")
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    kafka: LocalKafka | LocalCluster = (
        LocalCluster(brokers, partitions=partitions, port=port, data_dir=data_dir) if brokers > 1
        else LocalKafka(partitions=partitions, sasl_ssl=sasl_ssl, port=port, data_dir=data_dir))
    try:
        kafka.start()
        state = {"bootstrap": kafka.bootstrap, "pid": os.getpid(), "broker_pids": _pids(kafka),
                 "workdir": None if data_dir is not None else str(kafka.workdir)}
        if kafka.security is not None:
            state["client_env"] = kafka.security.client_env(kafka.bootstrap, kafka.users[0])
        state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_file.with_name(state_file.name + ".tmp")
        tmp.write_text(json.dumps(state) + "\n")
        tmp.replace(state_file)
        if on_ready is not None:
            on_ready(kafka)
        supervise(kafka, stop)
    finally:
        kafka.stop()
        with contextlib.suppress(OSError):
            if json.loads(state_file.read_text()).get("pid") == os.getpid():
                state_file.unlink()
        for s, handler in previous.items():
            signal.signal(s, handler)


def supervise(kafka: LocalKafka | LocalCluster, stop: threading.Event,
              every_s: float = 0.5) -> None:
    """Until ``stop`` is set. BrokerError when the broker exits on its own, or when a cluster
    no longer has a majority of its nodes running; a node lost while a majority runs is logged,
    once, and the cluster goes on (its topics are replicated)."""
    lost: set[int] = set()
    while not stop.wait(every_s):
        if (why := _failure(kafka)) is not None:
            raise BrokerError(why)
        gone = kafka.exited() if isinstance(kafka, LocalCluster) else []
        running = len(kafka.nodes) - len(gone) if gone else 0
        for node in gone:
            if node.node_id not in lost and running > len(kafka.nodes) // 2:  # else: next turn
                lost.add(node.node_id)
                log.warning("Kafka node %d exited with code %s; %d of %d nodes run, a majority: "
                            "the cluster goes on (log: %s)", node.node_id,
                            node.process.returncode, running, len(kafka.nodes), node.log_file)


def _pids(kafka: LocalKafka | LocalCluster) -> list[int]:
    if isinstance(kafka, LocalCluster):
        return kafka.pids
    assert kafka.process is not None
    return [kafka.process.pid]


def _failure(kafka: LocalKafka | LocalCluster) -> str | None:
    """Why the broker (or a node of the cluster) exited on its own, else None."""
    if isinstance(kafka, LocalCluster):
        return kafka.failure()
    if kafka.process is not None and kafka.process.poll() is not None:
        return f"Kafka exited with code {kafka.process.returncode}\n" + kafka._log_tail()
    return None


def stop_from_state(state_file: Path | str, timeout: float = 30.0) -> bool:
    """Stop the broker (or cluster) that `run_forever` recorded in `state_file`. False if none
    was running."""
    state_file = Path(state_file)
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return False
    pid = int(state["pid"])
    # "broker_pid": a state file written before clusters
    pids = [pid, *map(int, state.get("broker_pids") or [state["broker_pid"]])]
    if not any(map(_alive, pids)):
        state_file.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # run_forever stops the JVMs and cleans up
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(map(_alive, pids)):
        time.sleep(0.2)
    for p in pids:
        if _alive(p):
            log.warning("process %d did not stop within %.0f s; killing it", p, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    if state.get("workdir"):
        shutil.rmtree(state["workdir"], ignore_errors=True)
    state_file.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True
