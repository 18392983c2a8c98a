"""`make bench`: the router's throughput and latency through a real Kafka, against its limit.

- limit: encoder + adapters + rule in one process, batched, no Kafka (prompts/s);
- end-to-end: N prompts produced to ``prompts.in`` as fast as possible; from the first produce
  until the last of them is on its model topic (prompts/s), and its ratio to the limit;
- latency: at half the measured end-to-end rate, per prompt the time from produce to its arrival
  on the model topic (p50, p90, p99 ms);
- the router process's peak RSS.

Both figures are measured in the same run on the same machine, on the dataset's test prompts.
A shared VM's CPU varies by tens of percent over a minute (steal time, reported per phase), so the
limit and the end-to-end run alternate: L E L E ... L, each end-to-end round is divided by the
mean of the limits measured just before and after it, and the median round is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.cpu import CpuUse, Steal
from benchmarks.processes import RssSampler, Service, router_env
from benchmarks.traffic import collect, produce, prompt_events, restamp, wait_until_routing
from benchmarks.zipkin import Zipkin
from ipr_model.evaluation.stats import percentiles
from schemas.topics import model_topic
from streams.kafka.admin import create_topics, group_state
from streams.kafka.local import kafka_bootstrap
from streams.kafka.settings import KafkaSettings
from streams.router.settings import RouterSettings

LIMIT_BATCH = 32  # scoring in-process: the encoder runs per text, the adapters per batch


def limit(scorer, texts: list[str], batch_size: int = LIMIT_BATCH) -> float:
    from ipr_model.serving.decision import decide

    t0 = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        decide(scorer, scorer.score(chunk), [0.2] * len(chunk))
    return len(texts) / (time.perf_counter() - t0)


class EndOffsets:
    """The total end offset of some topics, polled without fetching any record."""

    def __init__(self, bootstrap: str, topics: list[str]):
        from aiokafka import AIOKafkaConsumer

        self.bootstrap, self.topics = bootstrap, topics
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)

    async def __aenter__(self):
        self.tps = await topic_partitions(self.bootstrap, self.topics)
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()

    async def total(self) -> int:
        return sum((await self.consumer.end_offsets(self.tps)).values())

    async def wait_for(self, total: int, timeout: float, every: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while await self.total() < total and time.monotonic() < deadline:
            await asyncio.sleep(every)


async def topic_partitions(bootstrap: str, topics: list[str]) -> list:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]


class Visible:
    """When each of a phase's outputs became visible to a ``read_committed`` reader (its receipt
    time): exactly-once, a record is on its topic for a reader only once its transaction commits,
    some time after the broker stamped it. Read from the outputs' ends as the phase starts; keys
    only, to take little of the cores the router is measured on."""

    def __init__(self, bootstrap: str, topics: list[str], run: str, n: int):
        from aiokafka import AIOKafkaConsumer

        self.bootstrap, self.topics = bootstrap, topics
        self.prefix, self.n = f"{run}:".encode(), n
        self.times: dict[bytes, float] = {}
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                         enable_auto_commit=False,
                                         isolation_level="read_committed")
        self.task: asyncio.Task | None = None

    async def __aenter__(self):
        tps = await topic_partitions(self.bootstrap, self.topics)
        await self.consumer.start()
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while len(self.times) < self.n:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=2000)
            now = time.time()
            for msgs in batch.values():
                for m in msgs:
                    if m.key is not None and m.key.startswith(self.prefix):
                        self.times.setdefault(m.key, now)

    async def all(self, timeout: float) -> dict[str, float]:
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return {k.decode(): t for k, t in self.times.items()}

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await self.consumer.stop()


def run_bench(
    artifacts: Path, dataset: Path, n: int, batch_size: int | None, rounds: int, out: Path,
    exactly_once: bool = False, routers: int = 1, traced: bool = False,
) -> dict:
    """``batch_size``: the router's micro-batch (None: its default, ``IPR_ROUTER_BATCH_SIZE``);
    ``rounds``: end-to-end runs, each between two limit runs; ``exactly_once``: the router
    commits its batches in transactions (``IPR_ROUTER_EXACTLY_ONCE``); an output then arrives
    when a read_committed reader gets it (:class:`Visible`), not when it is appended. ``routers``:
    router processes in one group, each with its share of the cores as encoder threads;
    ``traced``: every prompt traced, its spans exported to a Zipkin server of the bench's
    (:mod:`benchmarks.zipkin`), which counts what it took in."""
    from ipr_model.artifacts.manifest import read_manifest
    from ipr_model.serving.scorer import Scorer
    from ipr_model.training.datasets import load_dataset

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    manifest = read_manifest(artifacts)
    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    # A fixed random order: the split is grouped by task, and a task of long prompts arriving as
    # one block would measure a burst of heavy work, not the offered rate.
    rows = [int(i) % len(test) for i in np.random.default_rng(0).permutation(n)]
    texts = [test.prompts[i] for i in rows]
    scorer = Scorer.load(artifacts)
    scorer.score(texts[:LIMIT_BATCH])  # warm
    limits: list[dict] = []
    e2e: list[dict] = []

    settings = KafkaSettings()
    run = uuid.uuid4().hex[:8]
    with kafka_bootstrap() as bootstrap, contextlib.ExitStack() as stack:
        zipkin = (stack.enter_context(Zipkin(Path("build") / "logs" / f"bench-{run}" /
                                             "zipkin.log")) if traced else None)
        model_topics = sorted({model_topic(m) for m in manifest.models})
        outputs = [settings.prompts_dlq, *model_topics]
        _create_bench_topics(bootstrap, settings, outputs)
        batch_size = batch_size or RouterSettings().batch_size
        started = [_start_router(artifacts, bootstrap, run, batch_size, exactly_once, i, routers,
                                 zipkin.env() if zipkin else {}) for i in range(routers)]
        rss = RssSampler(started[0].proc.pid)
        rss.start()
        try:
            if routers > 1:
                asyncio.run(_wait_stable(bootstrap, f"ipr-router-bench-{run}", routers))
            phases = _Phases(bootstrap, settings, run, outputs, test, rows, n,
                             [r.proc.pid for r in started], exactly_once)
            measure_limit = functools.partial(_measure_limit, scorer, texts, limits)
            e2e_rate, lat_got, lat_steal = asyncio.run(
                _measure(phases, model_topics, rounds, measure_limit, e2e)
            )
        finally:
            rss.stopped.set()
            for router in started:
                router.stop()  # its spans are flushed as it stops
        spans = zipkin.span_count() if zipkin else None
    report = {
        "dataset": data.name,
        "prompts": n,
        "batch_size": batch_size,
        "exactly_once": exactly_once,
        "routers": routers,
        "traced": traced,
        **({"spans_exported": spans} if traced else {}),
        **_throughput(limits, e2e, e2e_rate),
        **_latency(lat_got, e2e_rate, lat_steal),
        "router_peak_rss_mb": round(rss.peak_kb / 1024, 1),
        "router_version": manifest.version,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


def _measure_limit(scorer, texts: list[str], limits: list[dict]) -> None:
    """One limit run: appended to ``limits`` and printed."""
    with Steal() as steal, CpuUse([]) as cpu:
        rate = limit(scorer, texts)
    limits.append({"prompts_per_s": round(rate, 2), "steal_percent": steal.percent,
                   "cpu_ms_per_prompt": round(1000 * cpu.seconds["harness"] / len(texts), 2)})
    print(f"limit (in-process, batched): {rate:.1f} prompts/s, steal {steal.percent}%",
          flush=True)


def _create_bench_topics(bootstrap: str, settings: KafkaSettings, outputs: list[str]) -> None:
    """The input topics, and the output ones with broker timestamps."""
    asyncio.run(create_topics(
        bootstrap, [settings.prompts_in, settings.decisions],
        partitions=settings.topic_partitions,
    ))
    # The broker stamps each output record as it appends it: "on its model topic" exactly,
    # read after the phase, so no consumer competes with the router for the CPU meanwhile.
    asyncio.run(create_topics(
        bootstrap, outputs, partitions=settings.topic_partitions,
        configs={"message.timestamp.type": "LogAppendTime"},
    ))


def _start_router(artifacts: Path, bootstrap: str, run: str, batch_size: int,
                  exactly_once: bool, index: int = 0, of: int = 1,
                  extra: dict[str, str] | None = None) -> Service:
    """Router process ``index`` of ``of`` under test (the run's app id, a data dir and a share of
    the cores of its own), logging under build/logs."""
    app_id = f"ipr-router-bench-{run}"
    env = router_env(bootstrap, app_id, IPR_ROUTER_BATCH_SIZE=str(batch_size),
                     IPR_ROUTER_EXACTLY_ONCE=str(exactly_once).lower(),
                     IPR_ROUTER_DATA_DIR=str(Path("build") / "faust" / f"{app_id}-{index}"),
                     **(extra or {}))
    if of > 1:
        env["IPR_ROUTER_ENCODER_THREADS"] = str(max(1, (os.cpu_count() or 1) // of))
    return Service(f"router{index or ''}", ["router", "--artifacts", str(artifacts)], env,
                   Path("build") / "logs" / f"bench-{run}")


async def _wait_stable(bootstrap: str, group: str, members: int, timeout: float = 180) -> None:
    """Until the routers' group is stable with all ``members`` (no rebalance mid-measure)."""
    from aiokafka.errors import KafkaError

    deadline, got = time.monotonic() + timeout, None
    while got != ("Stable", members):
        try:
            got = await group_state(bootstrap, group)
        except KafkaError as e:  # before the group exists its coordinator is not known
            got = type(e).__name__
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected group {group} stable with {members} members, got {got}")
        await asyncio.sleep(1)


class _Phases:
    """Send the bench prompts through the router at a rate and collect them off the outputs."""

    def __init__(self, bootstrap: str, settings: KafkaSettings, run: str, outputs: list[str],
                 test, rows: list[int], n: int, router_pids: list[int],
                 exactly_once: bool = False):
        self.bootstrap, self.settings, self.run, self.outputs = bootstrap, settings, run, outputs
        self.test, self.rows, self.n, self.router_pids = test, rows, n, router_pids
        self.exactly_once = exactly_once

    def events(self, tag: str):
        sub = self.test.subset(self.rows)
        sub.ids = [f"{i}" for i in range(self.n)]
        return prompt_events(sub, f"{self.run}-{tag}")

    async def phase(self, tag: str, rate: float):
        """(collected, time of the first produce, arrival of the last output, where the CPU went
        from the first produce until every output was on Kafka) of one phase. An output arrives
        when the broker appends it, or, exactly-once, when a read_committed reader gets it."""
        evs = self.events(tag)
        done = lambda c: len(c.routed) + len(c.dead) >= len(evs)  # noqa: E731
        async with EndOffsets(self.bootstrap, self.outputs) as ends, contextlib.AsyncExitStack() \
                as stack:
            visible = (await stack.enter_async_context(
                Visible(self.bootstrap, self.outputs, f"{self.run}-{tag}", len(evs)))
                if self.exactly_once else None)
            before = await ends.total()
            t0 = time.time()
            with CpuUse(self.router_pids) as cpu:
                await produce(self.bootstrap, self.settings.prompts_in, restamp(evs), rate)
                if visible is None:
                    await ends.wait_for(before + len(evs), timeout=900, every=0.05)
                else:
                    seen_at = await visible.all(timeout=900)
        got = await collect(self.bootstrap, self.outputs, f"{self.run}-{tag}", done, 300,
                            self.settings, "read_committed" if visible else "read_uncommitted")
        if visible is not None:
            got.arrival.update({k: seen_at[k] for k in got.arrival})
        elif got.broker_stamped < len(got.routed):
            raise RuntimeError(f"{self.outputs[1]}...: expected broker timestamps "
                               "(LogAppendTime), found topics created with another timestamp type")
        last = max(got.arrival.values())
        return got, t0, last, cpu.seconds


async def _measure(phases: _Phases, model_topics: list[str], rounds: int, measure_limit,
                   e2e: list[dict]):
    """L E L E ... L, then the latency run at half the median end-to-end rate:
    (that rate, the latency run's collected outputs, its steal %)."""
    await wait_until_routing(phases.bootstrap, phases.settings, phases.run, model_topics)
    measure_limit()
    for i in range(rounds):
        e2e.append(await _e2e_round(phases, i))
        measure_limit()
    rate = float(np.median([r["prompts_per_s"] for r in e2e]))
    with Steal() as steal:
        lat_got, *_ = await phases.phase("half", rate / 2)
    return rate, lat_got, steal.percent


async def _e2e_round(phases: _Phases, i: int) -> dict:
    """End-to-end round ``i``: the prompts produced as fast as possible."""
    with Steal() as steal:
        got, t0, last, cpu = await phases.phase(f"max{i}", 0)
    rate = len(got.routed) / (last - t0)
    print(f"end-to-end: {rate:.1f} prompts/s, steal {steal.percent}%, cpu seconds {cpu}",
          flush=True)
    return {"prompts_per_s": round(rate, 2), "steal_percent": steal.percent,
            "routed": len(got.routed), "dead_lettered": len(got.dead), "cpu_s": cpu}


def _throughput(limits: list[dict], e2e: list[dict], e2e_rate: float) -> dict:
    """The throughput part of the report; sets each end-to-end round's ratio."""
    # Each end-to-end round against the limits measured just before and after it.
    for i, r in enumerate(e2e):
        around = (limits[i]["prompts_per_s"] + limits[i + 1]["prompts_per_s"]) / 2
        r["ratio"] = round(r["prompts_per_s"] / around, 3)
    return {
        "limit_prompts_per_s": round(float(np.median([r["prompts_per_s"] for r in limits])), 2),
        "e2e_prompts_per_s": round(e2e_rate, 2),
        "ratio": round(float(np.median([r["ratio"] for r in e2e])), 3),
        "cpu": _cpu(limits, e2e),
        "limit_runs": limits,
        "e2e_runs": e2e,
    }


def _cpu(limits: list[dict], e2e: list[dict]) -> dict:
    """Where the cores went in the end-to-end rounds (shares of cores x wall time, medians), and
    the router's CPU per prompt there against the limit's: what Kafka, Faust and the events add
    per prompt, and what the co-located broker and load generator take from the router."""
    def share(r: dict, part: str) -> float:
        c = r["cpu_s"]
        return c[part] / (c["cores"] * c["wall"])

    out = {f"e2e_share_{p}": round(float(np.median([share(r, p) for r in e2e])), 3)
           for p in ("router", "harness", "other")}
    out["limit_ms_per_prompt"] = float(np.median([r["cpu_ms_per_prompt"] for r in limits]))
    out["router_e2e_ms_per_prompt"] = round(float(np.median(
        [1000 * r["cpu_s"]["router"] / (r["routed"] + r["dead_lettered"]) for r in e2e])), 2)
    return out


def _latency(lat_got, e2e_rate: float, lat_steal: float) -> dict:
    """The latency part of the report, from the latency run's collected outputs."""
    latency = [(lat_got.arrival[k] - r.sent_at) * 1000.0 for k, r in lat_got.routed.items()]
    # Where the time goes, per prompt (clocks of one machine): produce -> its micro-batch starts
    # in the router's agent (Kafka, Faust's consumer, waiting for the batch ahead), the batch
    # (encoder, adapters, rule, events), and decision -> the broker appended it to the model topic.
    parts = {"to_router": [], "in_router": [], "to_topic": []}
    for k, r in lat_got.routed.items():
        received = r.routed_at - r.routing_latency_ms / 1000.0
        parts["to_router"].append((received - r.sent_at) * 1000.0)
        parts["in_router"].append(r.routing_latency_ms)
        parts["to_topic"].append((lat_got.arrival[k] - r.routed_at) * 1000.0)
    return {
        "latency_offered_rate_per_s": round(e2e_rate / 2, 2),
        "latency_ms": percentiles(latency),
        "latency_steal_percent": lat_steal,
        "latency_breakdown_ms": {name: percentiles(v) for name, v in parts.items()},
        "latency_routed": len(lat_got.routed),
    }
