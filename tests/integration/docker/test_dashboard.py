"""The Grafana dashboard's queries against a real Prometheus scraping real services.

A router, a replay worker and the feedback service (``ipr`` processes, each serving /metrics) run
on the real broker; Prometheus (Debian's, :mod:`tests.integration.prometheus`) scrapes them every
second. A short run brings every panel something to show: prompts routed to served models at
τ = 0.3 with ``sent_at``, a budgeted tenant's among them, a dead letter at each service (bad
JSON to the router and to the feedback service, a request over the worker's max_tokens cap), a
model reported unhealthy by its worker (its one prompt is not in the replay dataset, and the
worker reports after one error), and labels that make the feedback service publish a
recalibrated version, which the router swaps in. Then every query of every panel of
``docker/grafana/dashboards/ipr-router.json`` (read from the file, Grafana's ``$__rate_interval``
set to 10 s) must return data over the run, above zero but for the consumer lag, whose quiet
value is zero. Grafana itself is not run: its provisioning files are checked in
``tests/unit/docker``.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
from pathlib import Path

from benchmarks.processes import Service, router_env
from benchmarks.traffic import produce
from schemas import PromptRequest, QualityFeedback, TenantPolicy, encode
from schemas.topics import ROUTED_PREFIX, model_topic
from streams.kafka.admin import create_topics
from streams.kafka.local import free_port
from streams.kafka.settings import KafkaSettings
from tests.integration.kafka_waits import seen
from tests.integration.prometheus import LocalPrometheus, ensure_prometheus
from tests.waits import wait_for_log, wait_until

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "ipr-router.json"
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval: here, ten scrapes
SERVED = ["gemma-2-9b-it", "gpt-4o-mini-2024-07-18", "Meta-Llama-3.1-70B-Instruct"]
UNHEALTHY = "Meta-Llama-3-8B-Instruct"  # served; its one prompt fails
RECALIBRATED = "gpt-4o-2024-08-06"  # served by no worker: its prompts wait for labels only
TENANT = "acme"
LABELS = 40
MAY_BE_ZERO = ("ipr_kafka_consumer_lag_records",)  # a gauge whose quiet value is 0


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, as Prometheus takes them."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"].replace("$__rate_interval", RATE_INTERVAL))
            for p in dashboard["panels"] for t in p["targets"]]


def topics(u: str) -> dict[str, str]:
    names = ("prompts_in", "prompts_dlq", "decisions", "responses", "feedback", "control",
             "policies", "spend", "reservations", "shadow", "tool_calls", "artifacts_topic")
    return {f"IPR_{n.upper()}": f"{n}.{u}" for n in names}


def prepare(bootstrap: str, t: dict[str, str]) -> None:
    models = [model_topic(m) for m in [*SERVED, UNHEALTHY, RECALIBRATED]]
    data = [t[k] for k in ("IPR_PROMPTS_IN", "IPR_PROMPTS_DLQ", "IPR_DECISIONS",
                           "IPR_RESPONSES", "IPR_FEEDBACK")]
    asyncio.run(create_topics(bootstrap, data + models, partitions=2))
    asyncio.run(create_topics(bootstrap, [t["IPR_CONTROL"]], partitions=1))
    asyncio.run(create_topics(bootstrap, [t["IPR_POLICIES"]], partitions=1,
                              configs={"cleanup.policy": "compact"}))
    policy = TenantPolicy(tenant=TENANT, budget_usd=1.0, period="day", on_exhausted="cheapest")
    asyncio.run(produce(bootstrap, t["IPR_POLICIES"], [(TENANT.encode(), encode(policy))], 0))


def start_services(u: str, bootstrap: str, artifacts: Path, data: Path, tmp: Path,
                   ports: dict[str, int]) -> dict[str, Service]:
    env = {"IPR_KAFKA_BOOTSTRAP": bootstrap, "IPR_TOPIC_PARTITIONS": "2",
           "IPR_KAFKA_LAG_INTERVAL_S": "1", **topics(u)}
    router = router_env(bootstrap, f"router-{u}", ports["router"], **env,
                        IPR_ROUTER_DATA_DIR=str(tmp / "faust-router"))
    worker = {**env, "IPR_WORKER_GROUP_PREFIX": f"worker-{u}", "IPR_WORKER_UNHEALTHY_AFTER": "1",
              "IPR_WORKER_MAX_TOKENS_CAP": "100", "IPR_WORKER_METRICS_PORT": str(ports["worker"])}
    feedback = {**env, "IPR_FEEDBACK_APP_ID": f"fb-{u}", "IPR_FEEDBACK_DATA_DIR": str(tmp / "fb"),
                "IPR_FEEDBACK_VERSIONS_DIR": str(tmp / "versions"),
                "IPR_FEEDBACK_MIN_PUBLISH_INTERVAL_S": "0",
                "IPR_FEEDBACK_METRICS_PORT": str(ports["feedback"])}
    serve = sum((["--model", m] for m in [*SERVED, UNHEALTHY]), [])
    return {
        "router": Service("router", ["router", "--artifacts", str(artifacts), "--tolerance",
                                     "0.3"], router, tmp),
        "worker": Service("worker", ["worker", "--backend", "replay", "--dataset",
                                     str(data / "zeroeval"), *serve], worker, tmp),
        "feedback": Service("feedback", ["feedback", "--artifacts", str(artifacts),
                                         "--min-labels", "30"], feedback, tmp),
    }


def prompt(pid: str, text: str, **kw) -> tuple[bytes, bytes]:
    req = PromptRequest(prompt_id=pid, text=text, sent_at=time.time(), **kw)
    return pid.encode(), encode(req)


def traffic(u: str, zeroeval) -> tuple[list, list[str]]:
    """The run's prompts, and the ids of those pinned to RECALIBRATED (one task's)."""
    test = zeroeval.split("test")
    task = test.tasks[0]
    same = [i for i, t in enumerate(test.tasks) if t == task][:LABELS]
    pinned = [f"{u}:recal:{i}" for i in same]
    events = [prompt(pid, test.prompts[i], allowed_models=[RECALIBRATED])
              for pid, i in zip(pinned, same, strict=True)]
    events += [prompt(f"{u}:plain:{i}", test.prompts[i]) for i in range(200, 230)]
    events += [prompt(f"{u}:tenant:{i}", test.prompts[i], tenant=TENANT) for i in range(230, 240)]
    events += [prompt(f"{u}:capped", test.prompts[240], allowed_models=SERVED[:1],
                      params={"max_tokens": 1000})]
    events += [(f"{u}:bad".encode(), b"{nope")]
    return events, pinned


def scraped(prometheus: LocalPrometheus, *metrics: str) -> bool:
    """Every target is up and each of ``metrics`` has a series: the counters a service starts
    at zero were scraped before anything increments them."""
    health = prometheus.targets_up()
    return (len(health) == 3 and set(health.values()) == {"up"}
            and all(prometheus.api("query", query=f"count({m})")["result"] for m in metrics))


def returned(prometheus: LocalPrometheus, query: str, start: float) -> tuple[float, ...] | None:
    """The finite values ``query`` gave over the run (one per second), None when none."""
    data = prometheus.api("query_range", query=query, start=start, end=time.time(), step="1s")
    values = tuple(float(v) for series in data["result"] for _, v in series["values"])
    finite = tuple(v for v in values if math.isfinite(v))
    return finite or None


def test_every_panel_of_the_dashboard_has_data_after_a_short_run(
    kafka_bootstrap, unique, small_artifacts, data_dir, zeroeval, tmp_path
):
    queries = panel_queries()
    assert len(queries) >= 10
    t = topics(unique)
    settings = KafkaSettings(kafka_bootstrap=kafka_bootstrap, **t)
    prepare(kafka_bootstrap, t)
    ports = {name: free_port() for name in ("router", "worker", "feedback")}
    targets = {name: [f"127.0.0.1:{port}"] for name, port in ports.items()}
    with LocalPrometheus(targets, tmp_path / "prometheus") as prometheus:
        services = start_services(unique, kafka_bootstrap, small_artifacts, data_dir, tmp_path,
                                  ports)
        try:
            run(prometheus, services, settings, unique, zeroeval, queries)
        finally:
            for s in services.values():
                s.stop()


def run(prometheus, services, settings, u, zeroeval, queries) -> None:
    router = services["router"]

    def alive() -> None:
        for s in services.values():
            assert s.alive(), f"{s.name} exited:\n{s.log_tail()}"

    # every service scraped once it is up, the router's per-model series once it serves
    wait_until(lambda: alive() or scraped(prometheus, "ipr_router_routed_total"),
               why=lambda: (prometheus.targets_up(), router.log_tail()))
    wait_for_log(router, f"models served by a live worker: {len(SERVED) + 1} of")
    start = time.time()
    failing = prompt(f"{u}:unknown", f"a prompt no dataset has ({u})",
                     allowed_models=[UNHEALTHY])
    asyncio.run(produce(settings, settings.prompts_in, [failing], 0))
    wait_for_log(router, f"model {UNHEALTHY} reported unhealthy")
    events, pinned = traffic(u, zeroeval)
    asyncio.run(produce(settings, settings.prompts_in, events, 0))
    asyncio.run(produce(settings, settings.feedback, [(b"bad", b"{nope")], 0))
    asyncio.run(seen(settings, [model_topic(RECALIBRATED)], u, settings,
                     lambda c: len(c.routed) >= len(pinned), "the pinned prompts routed"))
    labels = [(pid.encode(), encode(QualityFeedback(prompt_id=pid, model_id=RECALIBRATED,
                                                    quality=0.0, source="test")))
              for pid in pinned]
    asyncio.run(produce(settings, settings.feedback, labels, 0))
    missing: dict[str, str] = {}

    def every_panel_has_data() -> bool:
        alive()
        missing.clear()
        for title, query in queries:
            values = returned(prometheus, query, start)
            zero_ok = any(m in query for m in MAY_BE_ZERO)
            if values is None or not (zero_ok or max(values) > 0):
                missing[title] = f"{query} -> {values and max(values)}"
        return not missing

    wait_until(every_panel_has_data, timeout=150, interval=1.0,
               why=lambda: f"panels without data: {missing}\n" + "\n".join(
                   s.log_tail(1500) for s in services.values()))
    groups = {f"router-{u}", f"router-{u}.spend", f"fb-{u}",
              *(f"worker-{u}.{model_topic(m).removeprefix(ROUTED_PREFIX)}"
                for m in [*SERVED, UNHEALTHY])}
    lagging = prometheus.api("query", query="count by (group) (ipr_kafka_consumer_lag_records)")
    assert {r["metric"]["group"] for r in lagging["result"]} == groups  # each service's own
    assert "swapped artifacts" in router.log_tail(10**7)  # the recalibrated version is served


def test_the_compose_prometheus_config_is_valid():
    promtool = ensure_prometheus().with_name("promtool")
    done = subprocess.run([str(promtool), "check", "config", str(ROOT / "docker" /
                                                                 "prometheus.yml")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
