"""`make soak`: the whole system for N minutes at half its limit; is anything leaking or falling
behind?

Starts a broker (or uses ``IPR_KAFKA_BOOTSTRAP``), a router, a replay worker for every model and
the feedback service (recalibration on, with its own default settings: a version published at
most every 30 s, so 40-60 are hot-swapped in 30 minutes), and produces the dataset's test
prompts, cycled under unique ids, at a fixed rate: half the end-to-end limit measured at the start
with the whole system up (the test prompts produced as fast as possible, first produce -> last on
its model topic, as ``make bench`` measures it), or ``--rate``. The router's in-process limit
(``make bench``'s) is measured before, for the record. Half way through, a broker the soak
started itself is stopped (SIGTERM) and started again on its port and data folder (a cluster
named by ``IPR_KAFKA_BOOTSTRAP`` is left alone); when, and how long it was down, is reported.

Every 5 s: the RSS and CPU time of each service's process tree (/proc), each consumer group's lag
(committed offsets against end offsets: the router's on prompts.in, each worker group's on its
model topic, the feedback service's on its inputs; none while the broker is down), the load
average and CPU steal. Per minute: those, prompts sent / routed / answered, versions published,
and the routing latency (``sent_at`` stamped by the producer -> the broker's append time on the
model topic) p50 and p99 of the prompts sent in it. Written to ``build/soak.json`` and
``build/soak.png``.

The bar (``soak_bar``): the router's and the worker's mean RSS in the last minute at most 3% above
their mean at the end of warm-up, minute ⌈minutes/3⌉ (minute 10 of 30); at least 20 hot swaps
adopted per 30 minutes (pro rata: versions this run published that routed a prompt); lag bounded:
each router and worker group's highest lag in the second half of the run at most its highest in
the first half plus 5 s of traffic (the broker restart's minute and the next left out); after the
producer stops every one of those groups drains to 0 within 120 s; no prompt lost (every prompt
sent is routed or dead-lettered, every routed one answered); the broker back; every service still
running. Exit 1 when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.bench import _Phases, limit
from benchmarks.cpu import Steal, cpu_ticks
from benchmarks.processes import Service, router_env
from benchmarks.soak_report import MINUTE, Tracker, minute_rows, plot, soak_bar
from benchmarks.traffic import produce, wait_until_routing
from ipr_model.evaluation.stats import percentiles
from schemas.topics import ROUTED_PREFIX, model_topic
from streams.kafka.admin import create_topics
from streams.kafka.clients import aiokafka_config
from streams.kafka.local import LocalKafka, free_port
from streams.kafka.settings import KafkaSettings

SAMPLE_EVERY = 5.0
DRAIN_TIMEOUT = 120.0


# -- what the run measures -------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(d.name))
    return out


def tree_usage(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds so far) of a process and its descendants, from /proc."""
    children, todo, rss_kb, ticks = _children(), [pid], 0, 0
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            status = Path(f"/proc/{p}/status").read_text()
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        rss_kb += next((int(x.split()[1]) for x in status.splitlines()
                        if x.startswith("VmRSS:")), 0)
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return round(rss_kb / 1024, 1), ticks / os.sysconf("SC_CLK_TCK")


class Lag:
    """Each consumer group's lag: end offsets minus its committed offsets, over its topics."""

    def __init__(self, kafka, groups: dict[str, tuple[str, list[str]]]):
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self.groups = groups
        self.admin = AIOKafkaAdminClient(**aiokafka_config(kafka))
        self.consumer = AIOKafkaConsumer(**aiokafka_config(kafka), group_id=None)

    async def __aenter__(self):
        from aiokafka import TopicPartition

        await self.admin.start()
        await self.consumer.start()
        topics = sorted({t for _, ts in self.groups.values() for t in ts})
        parts = {t["topic"]: [p["partition"] for p in t["partitions"]]
                 for t in await self.admin.describe_topics(topics)}
        self.tps = {name: [TopicPartition(t, p) for t in ts for p in parts[t]]
                    for name, (_, ts) in self.groups.items()}
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def sample(self) -> dict[str, int]:
        every = sorted({tp for tps in self.tps.values() for tp in tps})
        ends = await self.consumer.end_offsets(every)
        starts = await self.consumer.beginning_offsets(every)
        out = {}
        for name, (group, _) in self.groups.items():
            done = await self.admin.list_consumer_group_offsets(group, partitions=self.tps[name])
            out[name] = int(sum(ends[tp] - (done[tp].offset if tp in done and done[tp].offset >= 0
                                            else starts[tp]) for tp in self.tps[name]))
        return out


async def _collect(kafka, topics: list[str], tracker: Tracker, settings: KafkaSettings,
                   stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, **aiokafka_config(kafka), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while not stop.is_set():
            for tp, msgs in (await consumer.getmany(timeout_ms=500, max_records=2000)).items():
                for msg in msgs:
                    tracker.take(tp.topic, msg, settings)
    finally:
        await consumer.stop()


async def _sample(lag: Lag, services: list[Service], tracker: Tracker,
                  stop: asyncio.Event) -> None:
    while not stop.is_set():
        usage = {s.name: tree_usage(s.proc.pid) for s in services}
        tracker.samples.append({
            "t": time.time(), "rss_mb": {k: u[0] for k, u in usage.items()},
            "cpu_s": {k: u[1] for k, u in usage.items()}, "lag": await _lag_or_none(lag),
            "load1": os.getloadavg()[0], "ticks": cpu_ticks(),
        })
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)


async def _lag_or_none(lag: Lag) -> dict[str, int]:
    """Each group's lag, {} when it cannot be read now (the broker restarting)."""
    try:
        return await asyncio.wait_for(lag.sample(), SAMPLE_EVERY)
    except Exception as e:  # noqa: BLE001 - aiokafka's errors and timeouts alike: no sample
        print(f"lag not sampled: {type(e).__name__}", flush=True)
        return {}


async def _drain(lag: Lag, tracker: Tracker, bar_groups: list[str]) -> dict:
    """After the producer stopped: until every bar group's lag is 0 and every prompt is back."""
    t0 = time.monotonic()
    while True:
        now = await _lag_or_none(lag)
        drained = bool(now) and all(now[g] == 0 for g in bar_groups) and tracker.complete()
        if drained or time.monotonic() - t0 > DRAIN_TIMEOUT:
            return {"drained": drained, "seconds": round(time.monotonic() - t0, 1), "lag": now}
        await asyncio.sleep(1.0)


async def _e2e_limit(bootstrap: str, settings: KafkaSettings, run: str, model_topics: list[str],
                     test) -> dict:
    """The end-to-end limit with every service up: ``make bench``'s round (its ``_Phases``), the
    test prompts under ids of their own (``{run}-max:``, not counted by the soak)."""
    rows = [int(i) for i in np.random.default_rng(0).permutation(len(test))]
    phases = _Phases(bootstrap, settings, run, [settings.prompts_dlq, *model_topics], test, rows,
                     len(rows), [])
    with Steal() as steal:
        got, t0, last, _ = await phases.phase("max", 0)
    rate = len(got.routed) / (last - t0)
    print(f"end-to-end limit: {rate:.1f} prompts/s, steal {steal.percent}%", flush=True)
    await asyncio.sleep(10.0)  # the workers and the feedback service catch up with the burst
    return {"prompts_per_s": round(rate, 2), "prompts": len(rows), "steal_percent": steal.percent}


@contextlib.contextmanager
def _broker():
    """(bootstrap, the soak's own broker or None): the cluster ``IPR_KAFKA_BOOTSTRAP`` names is
    not restarted; a local broker is, in place, so it gets a fixed port and data folder."""
    given = KafkaSettings().given_bootstrap
    if given:
        yield given, None
        return
    with tempfile.TemporaryDirectory(prefix="ipr-soak-kafka-") as d, \
            LocalKafka(port=free_port(), data_dir=Path(d)) as broker:
        yield broker.bootstrap, broker


async def _restart_broker(broker: LocalKafka, t0: float, seconds: float) -> dict:
    """Half way through the run: stop the broker (SIGTERM) and start it again on its port and
    data; when (seconds from the producer's start, and the 1-based minute) and how long it was
    down."""
    await asyncio.sleep(max(0.0, t0 + seconds / 2 - time.time()))
    began = time.time()
    out = {"at_s": round(began - t0, 1), "minute": int((began - t0) // MINUTE) + 1}
    print(f"broker restart at {out['at_s']} s (minute {out['minute']})", flush=True)
    try:
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
    except Exception as e:  # noqa: BLE001 - reported and failed in the bar, not raised
        return {**out, "ok": False, "error": repr(e)}
    out.update(ok=True, down_s=round(time.time() - began, 1))
    print(f"broker back after {out['down_s']} s", flush=True)
    return out


async def _soak(kafka, settings: KafkaSettings, tracker: Tracker, texts: list[str],
                rate: float | None, measured: dict, seconds: float, groups: dict,
                services: list[Service], outputs: list[str], broker: LocalKafka | None):
    """(start of the producer, the drain's dict, the run's steal %, the rate offered, the
    broker's restart or None)."""
    model_topics = [t for t in outputs if t.startswith(ROUTED_PREFIX)]
    await wait_until_routing(kafka, settings, tracker.run, model_topics)
    if rate is None:
        measured["end_to_end"] = await _e2e_limit(
            kafka.kafka_bootstrap, settings, tracker.run, model_topics, measured.pop("test"))
        rate = measured["end_to_end"]["prompts_per_s"] / 2
    print(f"soak {tracker.run}: {seconds / MINUTE:g} min at {rate:.2f} prompts/s", flush=True)
    stop = asyncio.Event()
    async with Lag(kafka, groups) as lag:
        collector = asyncio.create_task(
            _collect(kafka, [*outputs, settings.control], tracker, settings, stop))
        sampler = asyncio.create_task(_sample(lag, services, tracker, stop))
        await asyncio.sleep(1.0)
        t0 = time.time()
        restart = (asyncio.create_task(_restart_broker(broker, t0, seconds))
                   if broker is not None else None)
        with Steal() as steal:
            await produce(kafka, settings.prompts_in,
                          tracker.events(texts, time.monotonic() + seconds), rate)
        print(f"producer stopped after {len(tracker.sent)} prompts; draining", flush=True)
        restarted = await restart if restart is not None else None
        drain = await _drain(lag, tracker, [g for g in groups if g != "feedback"])
        stop.set()
        await asyncio.gather(collector, sampler)
    return t0, drain, steal.percent, rate, restarted


def _services(artifacts: Path, dataset: Path, env: dict, run: str, models: list[str],
              min_labels: int | None) -> list[Service]:
    log_dir = Path("build") / "logs" / f"soak-{run}"
    feedback = ["feedback", "--artifacts", str(artifacts)]
    if min_labels:
        feedback += ["--min-labels", str(min_labels)]
    return [
        Service("router", ["router", "--artifacts", str(artifacts)], env, log_dir),
        Service("worker", ["worker", "--backend", "replay", "--dataset", str(dataset),
                           *sum((["--model", m] for m in models), [])],
                {**env, "IPR_WORKER_GROUP_PREFIX": f"ipr-worker-soak-{run}"}, log_dir),
        Service("feedback", feedback,
                {**env, "IPR_FEEDBACK_APP_ID": f"ipr-feedback-soak-{run}",
                 "IPR_FEEDBACK_VERSIONS_DIR": str(Path("build") / "soak-versions" / run),
                 "IPR_FEEDBACK_DATA_DIR": str(log_dir / "faust-feedback")}, log_dir),
    ]


def _groups(settings: KafkaSettings, run: str, model_topics: list[str]) -> dict:
    """name -> (consumer group, topics) of the groups whose lag is sampled."""
    groups = {"router": (f"ipr-router-soak-{run}", [settings.prompts_in])}
    for t in model_topics:
        safe = t[len(ROUTED_PREFIX):]
        groups[f"worker.{safe}"] = (f"ipr-worker-soak-{run}.{safe}", [t])
    groups["feedback"] = (f"ipr-feedback-soak-{run}", [settings.decisions, settings.feedback])
    return groups


def _measure_rate(artifacts: Path, texts: list[str]) -> dict:
    """The router's in-process limit (``make bench``'s): encoder, adapters and rule, no Kafka."""
    from ipr_model.serving.scorer import Scorer

    scorer = Scorer.load(artifacts)
    scorer.score(texts[:32])  # warm
    with Steal() as steal:
        rate = limit(scorer, texts)
    print(f"limit (in-process, batched): {rate:.1f} prompts/s, steal {steal.percent}%", flush=True)
    return {"prompts_per_s": round(rate, 2), "steal_percent": steal.percent}


def run_soak(artifacts: Path, dataset: Path, minutes: int = 10, rate: float | None = None,
             min_labels: int | None = None, out: Path = Path("build/soak.json")) -> dict:
    from ipr_model.artifacts.manifest import read_manifest
    from ipr_model.training.datasets import load_dataset

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    manifest = read_manifest(artifacts)
    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    texts = [test.prompts[int(i)] for i in np.random.default_rng(0).permutation(len(test))]
    measured = {} if rate else {"in_process": _measure_rate(artifacts, texts), "test": test}
    run, settings = uuid.uuid4().hex[:8], KafkaSettings()
    load_start = os.getloadavg()
    with _broker() as (bootstrap, broker):
        kafka = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        model_topics = sorted({model_topic(m) for m in manifest.models})
        outputs = [settings.prompts_dlq, *model_topics]
        asyncio.run(create_topics(kafka, [settings.prompts_in, settings.decisions,
                                          settings.control, settings.responses, settings.feedback],
                                  settings.topic_partitions))
        asyncio.run(create_topics(kafka, outputs, settings.topic_partitions,
                                  configs={"message.timestamp.type": "LogAppendTime"}))
        env = router_env(bootstrap, f"ipr-router-soak-{run}")
        services = _services(artifacts, dataset, env, run, list(manifest.models), min_labels)
        tracker, groups = Tracker(run), _groups(settings, run, model_topics)
        try:
            t0, drain, steal, rate, restart = asyncio.run(_soak(
                kafka, settings, tracker, texts, rate, measured, minutes * MINUTE, groups,
                services, [*outputs, settings.responses], broker))
            alive = all(s.alive() for s in services)
        finally:
            for s in services:
                s.stop()
    report = _report(tracker, t0, minutes, drain, rate, measured, alive, groups, restart)
    report.update(dataset=data.name, models=len(manifest.models), run=run, cpus=os.cpu_count(),
                  broker="IPR_KAFKA_BOOTSTRAP" if settings.given_bootstrap else "local",
                  steal_percent=steal, load_at_start=[round(x, 2) for x in load_start])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, out.with_suffix(".png"))
    return report


def _report(tracker: Tracker, t0: float, minutes: int, drain: dict, rate: float,
            measured: dict | None, alive: bool, groups: dict, restart: dict | None) -> dict:
    rows = minute_rows(t0, minutes, tracker.sent, list(tracker.routed.values()),
                       list(tracker.answered.values()), tracker.published, tracker.samples)
    not_back = len(tracker.sent) - len(set(tracker.routed) | tracker.dead)
    unanswered = sum(1 for k in tracker.routed if k not in tracker.answered)
    lost = not_back + unanswered
    bar = soak_bar(rows, drain, lost, rate, alive, [g for g in groups if g != "feedback"],
                   tracker.adopted(), restart)
    loads = [s["load1"] for s in tracker.samples]
    return {
        "minutes": minutes,
        "rate_per_s": round(rate, 2),
        "rate_source": "half the end-to-end limit measured at the start" if measured
        else "--rate",
        "limit": measured or None,
        "sent": len(tracker.sent), "routed": len(tracker.routed),
        "dead_lettered": len(tracker.dead), "answered": len(tracker.answered),
        "response_errors": tracker.response_errors, "duplicates": tracker.duplicates,
        "lost": lost, "not_routed": not_back, "unanswered": unanswered,
        "versions_published": len(tracker.published),
        "router_versions_seen": len(tracker.versions_seen),
        "versions_adopted": tracker.adopted(),
        "broker_restart": restart,
        "latency_ms": percentiles([(a - s) * 1000.0 for s, a in tracker.routed.values()]),
        "load1_mean": round(float(np.mean(loads)), 2) if loads else None,
        "load1_max": round(max(loads), 2) if loads else None,
        "per_minute": rows,
        "drain": drain,
        "bar": bar,
        "passed": bar["passed"],
    }
