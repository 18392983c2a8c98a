"""`make demo`: the whole system on a real Kafka, on real data.

Starts (or uses) a broker, one router process, one replay worker process serving every model and
an ``ipr gateway``, streams a dataset's test prompts into ``prompts.in`` and a share of them
(``gateway_share``) through the gateway with the ``openai`` SDK, every other one streamed
(``benchmarks.gateway_share``), waits for every response, and reports what was routed where, the
realised quality and cost against always-the-reference-model, dead letters and routing latency,
and the HTTP path's figures beside them. Everything it started is stopped at the end.

Every prompt id carries this run's id, so a run on an existing cluster counts only its own events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.gateway_share import (
    gateway_service,
    send_and_count,
    split_share,
    summarize_share,
)
from benchmarks.processes import Service, check_alive, router_env
from benchmarks.traffic import (
    Collected,
    collect,
    produce,
    prompt_events,
    restamp,
    wait_until_routing,
)
from ipr_model.evaluation.stats import percentiles
from ipr_model.training.datasets import Dataset, load_dataset
from schemas.topics import model_topic
from streams.kafka.admin import create_topics
from streams.kafka.local import kafka_bootstrap
from streams.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


def summarize(
    data: Dataset, sent: int, got: Collected, seconds: float, version: str | None
) -> dict:
    """The demo report: counts that reconcile, realised quality and cost against the reference."""
    ids = data.model_ids
    row = {f"{k}": i for i, k in enumerate(data.ids)}
    q_mean = data.quality.mean(axis=0)
    ref = int(np.argmax(q_mean))
    per_model = Counter(r.model_id for r in got.routed.values())
    chosen_q, chosen_c, ref_q, ref_c = [], [], [], []
    for key, resp in got.responses.items():
        i = row[key.split(":", 1)[1]]
        chosen_q.append(got.feedback[key].quality if key in got.feedback
                        else data.quality[i, ids.index(resp.model_id)])
        chosen_c.append(resp.cost_usd)
        ref_q.append(data.quality[i, ref])
        ref_c.append(data.cost[i, ref])
    latency = [
        (got.arrival[k] - r.sent_at) * 1000.0 for k, r in got.routed.items() if r.sent_at
    ]
    cost, reference_cost = float(sum(chosen_c)), float(sum(ref_c))
    return {
        "dataset": data.name,
        "router_version": version,
        "prompts_sent": sent,
        "routed": len(got.routed),
        "dead_lettered": len(got.dead),
        "dead_letter_reasons": dict(Counter(d.error_kind for d in got.dead.values())),
        "responses": len(got.responses),
        "response_errors": sum(1 for r in got.responses.values() if r.error),
        "duplicates": got.routed_dupes + got.response_dupes,
        "per_model": dict(per_model.most_common()),
        "quality": float(np.mean(chosen_q)) if chosen_q else None,
        "reference_model": ids[ref],
        "reference_quality": float(np.mean(ref_q)) if ref_q else None,
        "cost_usd": cost,
        "reference_cost_usd": reference_cost,
        "cost_saving": 1.0 - cost / reference_cost if reference_cost > 0 else None,
        "routing_latency_ms": percentiles(latency),
        "router_reported_latency_ms": percentiles(
            [r.routing_latency_ms for r in got.routed.values()]
        ),
        "seconds": round(seconds, 1),
    }


def run_demo(
    artifacts: Path,
    dataset: Path,
    tolerance: float = 0.2,
    limit: int | None = None,
    rate: float = 10.0,
    report_path: Path = Path("build/demo-report.json"),
    timeout: float = 600.0,
    gateway_share: float = 0.2,
) -> dict:
    from ipr_model.artifacts.manifest import read_manifest

    manifest = read_manifest(artifacts)
    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    test = test.restrict(manifest.models)
    if limit:
        test = test.subset(list(range(min(limit, len(test)))))
    test, http = split_share(test, gateway_share)
    run = uuid.uuid4().hex[:8]
    settings = KafkaSettings()
    log_dir = Path("build") / "logs" / run
    with kafka_bootstrap() as bootstrap:
        kafka = settings.model_copy(update={"kafka_bootstrap": bootstrap})  # and its security
        model_topics = sorted({model_topic(m) for m in manifest.models})
        outputs = [settings.responses, settings.prompts_dlq, settings.feedback, *model_topics]
        asyncio.run(create_topics(
            kafka, [settings.prompts_in, settings.decisions, settings.control, *outputs],
            partitions=settings.topic_partitions,
        ))
        env = router_env(bootstrap, f"ipr-router-demo-{run}")
        services = [
            Service("router",
                    ["router", "--artifacts", str(artifacts), "--tolerance", str(tolerance)],
                    env, log_dir),
            Service("worker", ["worker", "--backend", "replay", "--dataset", str(dataset),
                               *sum((["--model", m] for m in manifest.models), [])],
                    {**env, "IPR_WORKER_GROUP_PREFIX": f"ipr-worker-demo-{run}"}, log_dir),
        ]
        if len(http):
            services.append(gateway_service(artifacts, env, f"demo-{run}", log_dir))
        try:
            events = prompt_events(test, run)
            t_start = time.time()
            print(f"streaming {len(events)} prompts at {rate:g}/s into {settings.prompts_in} "
                  f"(run {run}, broker {bootstrap})", flush=True)

            async def main() -> Collected:
                await wait_until_routing(kafka, settings, run, model_topics)

                def done(c: Collected) -> bool:
                    return (len(c.routed) + len(c.dead) >= len(events)
                            and len(c.responses) >= len(c.routed))

                collector = asyncio.create_task(
                    collect(kafka, outputs, run, done, timeout, settings)
                )
                await asyncio.sleep(1.0)
                over_http = asyncio.create_task(send_and_count(
                    services[-1], kafka, settings.responses, http, run,
                    rate * len(http) / len(events))) if len(http) else None
                await produce(kafka, settings.prompts_in, restamp(events), rate)
                return await collector, over_http and await over_http

            got, share = asyncio.run(main())
            check_alive(services)
        finally:
            for s in services:
                s.stop()
    report = summarize(test, len(events), got, time.time() - t_start, manifest.version)
    if share is not None:
        report["gateway"] = summarize_share(share, http)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    return report
