"""The gateway's cost: a chat request through ``ipr gateway``, Kafka, the router and a worker,
against calling the backend directly, with a backend that answers at once
(``benchmarks.instant_backend``), so the difference is the system's own time.

- latency added, p50 / p99: at a fixed rate (by default half the Kafka path's end-to-end rate,
  measured first), open loop, the same requests sent directly and through the gateway;
- time to first token added (streamed requests), p50 / p99, the same way;
- where the time goes: per request through the gateway, client -> prompts.in (the gateway's
  ``sent_at``), the router (``routed_at``), the worker (the answer's record timestamp on
  ``responses.out``) and back to the client;
- requests/s through the gateway (closed loop, ``concurrency`` in flight) against the Kafka
  path's end-to-end rate on the same stack (the same prompts produced to ``prompts.in`` as fast
  as possible, until their answers are on ``responses.out``);
- the gateway's peak RSS under that load.

Everything runs on this machine: client, gateway, broker, router, worker and backend share its
cores, as they would not in a deployment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path

import httpx
import orjson

from benchmarks.cpu import Steal
from benchmarks.gateway_share import gateway_service, wait_healthy
from benchmarks.processes import RssSampler, Service, check_alive, router_env
from ipr_model.artifacts.manifest import read_manifest
from ipr_model.evaluation.stats import percentiles
from ipr_model.training.datasets import load_dataset
from schemas import ModelResponse, PromptRequest, RoutingDecision, encode
from schemas.topics import model_topic
from streams.kafka.admin import create_topics, describe_partitions
from streams.kafka.clients import aiokafka_config
from streams.kafka.local import free_port, kafka_bootstrap
from streams.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


def _body(text: str, stream: bool, model: str) -> bytes:
    return orjson.dumps({"model": model, "stream": stream,
                         "messages": [{"role": "user", "content": text}]})


async def _call(client: httpx.AsyncClient, url: str, body: bytes) -> dict:
    """One request: its latency and, streamed, the time to its first content chunk (ms)."""
    began = time.perf_counter()
    out: dict = {"began": time.time(), "first_ms": None, "prompt_id": None}
    async with client.stream("POST", url, content=body,
                             headers={"content-type": "application/json"}) as r:
        out["status"] = r.status_code
        out["prompt_id"] = r.headers.get("x-ipr-prompt-id")
        async for line in r.aiter_lines():
            if out["first_ms"] is None and line.startswith("data:") and '"content"' in line:
                out["first_ms"] = (time.perf_counter() - began) * 1000
    out["ms"] = (time.perf_counter() - began) * 1000
    out["ended"] = time.time()
    return out


async def _open_loop(url: str, bodies: list[bytes], rate: float) -> list[dict]:
    """``bodies`` sent at ``rate`` per second, each as it is due (open loop)."""
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        t0 = time.monotonic()

        async def due(i: int, body: bytes) -> dict:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            return await _call(client, url, body)

        return list(await asyncio.gather(*(due(i, b) for i, b in enumerate(bodies))))


async def _closed_loop(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Requests/s with ``concurrency`` in flight, over all ``bodies``."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    todo = iter(bodies)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def loop() -> int:
            n = 0
            for body in todo:
                r = await _call(client, url, body)
                n += r["status"] == 200
            return n

        t0 = time.monotonic()
        ok = sum(await asyncio.gather(*(loop() for _ in range(concurrency))))
        return ok / (time.monotonic() - t0)


async def _kafka_rate(kafka, settings: KafkaSettings, texts: list[str]) -> float:
    """Prompts/s from the first produce until the last answer is on responses.out."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    run = uuid.uuid4().hex[:8]
    ids = {f"{run}:{i}" for i in range(len(texts))}
    consumer = AIOKafkaConsumer(**aiokafka_config(kafka), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    partitions = (await describe_partitions(kafka, [settings.responses]))[settings.responses]
    tps = [TopicPartition(settings.responses, p) for p in partitions]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # positioned: every answer from now on is read
        await consumer.position(tp)
    producer = AIOKafkaProducer(**aiokafka_config(kafka), acks="all", linger_ms=2)
    await producer.start()
    t0 = time.monotonic()
    try:
        for i, text in enumerate(texts):
            req = PromptRequest(prompt_id=f"{run}:{i}", text=text, sent_at=time.time())
            await producer.send(settings.prompts_in, encode(req), key=req.prompt_id.encode())
        await producer.flush()
        seen: set[str] = set()
        deadline = time.monotonic() + 300
        while seen < ids and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.update(k for r in records if (k := r.key.decode()) in ids)
        return len(seen) / (time.monotonic() - t0)
    finally:
        await producer.stop()
        await consumer.stop()


async def _hops(kafka, settings: KafkaSettings, calls: list[dict]) -> dict:
    """Per request through the gateway, where its time went (ms, p50 / p99 of each hop)."""
    from aiokafka import AIOKafkaConsumer

    by_id = {c["prompt_id"]: c for c in calls if c["prompt_id"]}
    decisions, answered = {}, {}
    consumer = AIOKafkaConsumer(settings.decisions, settings.responses, **aiokafka_config(kafka),
                                group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while (len(decisions) < len(by_id) or len(answered) < len(by_id)) and \
                time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    pid = r.key.decode(errors="replace") if r.key else ""
                    if pid not in by_id:
                        continue
                    if tp.topic == settings.decisions:
                        decisions[pid] = RoutingDecision.model_validate_json(r.value)
                    else:
                        ModelResponse.model_validate_json(r.value)
                        answered[pid] = r.timestamp / 1000.0
    finally:
        await consumer.stop()
    hops: dict[str, list[float]] = {"client_to_prompts_in": [], "router": [], "worker": [],
                                    "back_to_client": []}
    for pid, d in decisions.items():
        c, done = by_id[pid], answered.get(pid)
        if done is None or d.sent_at is None:
            continue
        hops["client_to_prompts_in"].append((d.sent_at - c["began"]) * 1000)
        hops["router"].append((d.routed_at - d.sent_at) * 1000)
        hops["worker"].append((done - d.routed_at) * 1000)
        hops["back_to_client"].append((c["ended"] - done) * 1000)
    return {k: percentiles(v) for k, v in hops.items()}


def _added(direct: list[float], gateway: list[float]) -> dict:
    d, g = percentiles(direct), percentiles(gateway)
    return {p: round(g[p] - d[p], 2) for p in ("p50", "p99")} | {"direct": d, "gateway": g}


def run_gateway_bench(artifacts: Path, dataset: Path, n: int, rate: float | None,
                      concurrency: int, out: Path) -> dict:
    manifest = read_manifest(artifacts)
    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    texts = [test.prompts[i % len(test)] for i in range(n)]
    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings()
    log_dir = Path("build") / "logs" / f"gateway-bench-{run}"
    backend_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/v1"
    with kafka_bootstrap() as bootstrap:
        kafka = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        topics = [settings.prompts_in, settings.decisions, settings.control, settings.responses,
                  settings.prompts_dlq, settings.feedback,
                  *sorted({model_topic(m) for m in manifest.models})]
        asyncio.run(create_topics(kafka, topics, partitions=settings.topic_partitions))
        env = router_env(bootstrap, f"ipr-router-gwbench-{run}")
        services = [
            Service("backend", [str(backend_port)], {}, log_dir,
                    module="benchmarks.instant_backend"),
            Service("router", ["router", "--artifacts", str(artifacts)], env, log_dir),
            Service("worker", ["worker", "--backend", "openai", "--model", "*",
                               "--artifacts", str(artifacts)],
                    {**env, "IPR_WORKER_GROUP_PREFIX": f"ipr-worker-gwbench-{run}",
                     "IPR_WORKER_OPENAI_BASE_URL": backend_url,
                     "IPR_WORKER_MAX_RETRIES": "0"}, log_dir),
            gateway_service(artifacts, env, f"gwbench-{run}", log_dir),
        ]
        try:
            report = asyncio.run(_measure(kafka, settings, services, texts, rate, concurrency,
                                          backend_url))
            check_alive(services)
        finally:
            for s in services:
                s.stop()
    report["rounds"] = {"requests": n, "concurrency": concurrency}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


async def _measure(kafka, settings, services, texts, rate, concurrency, backend_url) -> dict:
    gateway = services[-1]
    gateway_url = gateway.url + "/v1"
    await wait_healthy(gateway, gateway.url + "/health")
    warm = [_body("warm-up: what is 2 + 2?", False, "ipr")]
    deadline = time.monotonic() + 240
    while (await _open_loop(gateway_url + "/chat/completions", warm, 1))[0]["status"] != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer through the gateway:\n{gateway.log_tail()}")
        await asyncio.sleep(1)
    kafka_rate = await _kafka_rate(kafka, settings, texts)
    rate = rate or round(kafka_rate / 2, 1)
    report: dict = {"kafka_path_rate": round(kafka_rate, 1), "rate": rate}
    calls = {}
    with Steal() as steal:
        for name, url, model in (("direct", backend_url, "instant"),
                                 ("gateway", gateway_url, "ipr")):
            for stream in (False, True):
                bodies = [_body(t, stream, model) for t in texts]
                calls[name, stream] = await _open_loop(url + "/chat/completions", bodies, rate)
    report["steal_percent_latency"] = steal.percent
    for key, got in calls.items():
        bad = [c["status"] for c in got if c["status"] != 200]
        if bad:
            raise RuntimeError(f"{key}: {len(bad)} requests failed (statuses {set(bad)})")
    ms = {k: [c["ms"] for c in v] for k, v in calls.items()}
    first = {k: [c["first_ms"] for c in v if c["first_ms"] is not None] for k, v in calls.items()}
    report["latency_added_ms"] = _added(ms["direct", False], ms["gateway", False])
    report["first_token_added_ms"] = _added(first["direct", True], first["gateway", True])
    report["hops_ms"] = await _hops(kafka, settings, calls["gateway", False])
    rss = RssSampler(gateway.proc.pid)
    rss.start()
    with Steal() as steal:
        bodies = [_body(t, False, "ipr") for t in texts]
        gateway_rate = await _closed_loop(gateway_url + "/chat/completions", bodies, concurrency)
    rss.stopped.set()
    report["gateway_rate"] = round(gateway_rate, 1)
    report["gateway_over_kafka_rate"] = round(gateway_rate / kafka_rate, 3)
    report["gateway_peak_rss_mb"] = round(rss.peak_kb / 1024, 1)
    report["steal_percent_throughput"] = steal.percent
    return report
