"""How far a budget overshoots while prompts are in flight (``python -m benchmarks budget``).

The demo's traffic (the zeroeval test prompts at its rate, 10/s) through router processes in one
group and a replay worker whose calls take ``latency_s`` (recorded costs, as in the demo), split
between two tenants whose policies (τ 0.1, reject, a day) give them budgets of 10 and 100
prompts' cost: a prompt's cost is the mean recorded cost of the model the artifacts choose at τ
0.1 over the test prompts, offline. A tenant's spend is the sum of its answers' ``cost_usd``; the
overshoot is spend / budget - 1. ``--compare`` first runs the same traffic without reservations
(``IPR_ROUTER_RESERVE_BUDGETS=false``), each mode with fresh routers and tenants of its own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchmarks.processes import Service, check_alive, router_env
from benchmarks.traffic import Collected, collect, produce, wait_until_routing
from schemas import PromptRequest, encode
from schemas.topics import model_topic

TAU = 0.1
# budgets in prompts' cost -> the tenant's turns in the traffic (the larger needs more to reach)
BUDGETS = {10: 1, 100: 2}


def prompt_cost(artifacts: Path, test) -> float:
    """The mean recorded cost of the model chosen at τ = TAU, over ``test``'s prompts."""
    from ipr_model.serving.decision import decide
    from ipr_model.serving.scorer import Scorer

    scorer = Scorer.load(artifacts)
    decisions = decide(scorer, scorer.score(list(test.prompts)), [TAU] * len(test))
    column = {m: j for j, m in enumerate(test.model_ids)}
    costs = [float(test.cost[i, column[d.model_id]]) for i, d in enumerate(decisions)]
    return sum(costs) / len(costs)


def traffic(test, run: str, tenants: list[str]) -> tuple[list[tuple[bytes, bytes]], dict]:
    """Every test prompt once, the tenants taking turns by their shares; and each prompt id's
    tenant."""
    turns = [t for t, share in zip(tenants, BUDGETS.values(), strict=True) for _ in range(share)]
    events, owner = [], {}
    for i, (pid, text) in enumerate(zip(test.ids, test.prompts, strict=True)):
        req = PromptRequest(prompt_id=f"{run}:{pid}", text=text, tenant=turns[i % len(turns)])
        events.append((req.prompt_id.encode(), encode(req)))
        owner[req.prompt_id] = req.tenant
    return events, owner


def set_policies(env: dict[str, str], budgets: dict[str, float]) -> None:
    for tenant, usd in budgets.items():
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "policy", "set", tenant, "--tolerance",
             str(TAU), "--budget", repr(usd), "--period", "day", "--on-exhausted", "reject"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ipr policy set {tenant}: {done.stderr.strip()}")


def summarize(got: Collected, owner: dict[str, str], budgets: dict[str, float]) -> dict:
    """Per tenant: its spend (its answers' cost_usd) against its budget, answers, rejections."""
    rows = {}
    for (tenant, usd), n in zip(budgets.items(), BUDGETS, strict=True):
        answers = [r for k, r in got.responses.items() if owner.get(k) == tenant]
        spent = sum(r.cost_usd for r in answers)
        rows[str(n)] = {
            "tenant": tenant, "budget_usd": usd, "spent_usd": spent,
            "over": round(spent / usd - 1.0, 4), "answered": len(answers),
            "estimated_usd": sum(r.reservation.usd for r in answers if r.reservation),
            "rejected": sum(1 for k, d in got.dead.items()
                            if owner.get(k) == tenant and d.error_kind == "budget_exceeded"),
            "sent": sum(1 for t in owner.values() if t == tenant),
        }
    return {"routed": len(got.routed), "dead_lettered": len(got.dead),
            "answered": len(got.responses), "budgets": rows}


def one_mode(kafka, settings, env: dict[str, str], artifacts: Path, data, test, cost: float, *,
             reserve: bool, rate: float, latency_s: float, routers: int, log_dir: Path) -> dict:
    """The traffic once, with or without reservations, through ``routers`` fresh processes."""
    from streams.worker.backends.replay import ReplayBackend
    from streams.worker.service import Worker
    from streams.worker.settings import WorkerSettings

    run = uuid.uuid4().hex[:8]
    budgets = {f"budget{n}-{run}": n * cost for n in BUDGETS}
    mode_env = {**env, "IPR_ROUTER_APP_ID": f"ipr-router-budget-{run}",
                "IPR_ROUTER_RESERVE_BUDGETS": "true" if reserve else "false"}
    set_policies(mode_env, budgets)
    services = [Service(f"router{i}-{run}", ["router", "--artifacts", str(artifacts)],
                        {**mode_env, "IPR_ROUTER_DATA_DIR": str(log_dir / f"faust{i}-{run}")},
                        log_dir) for i in range(routers)]
    events, owner = traffic(test, run, list(budgets))
    models = sorted(test.model_ids)
    outputs = [settings.responses, settings.prompts_dlq, *map(model_topic, models)]
    replay = ReplayBackend(data, latency_s=latency_s)
    worker = WorkerSettings(kafka_bootstrap=kafka.kafka_bootstrap,
                            group_prefix=f"ipr-worker-budget-{run}",
                            concurrency=max(16, int(4 * rate * latency_s)))

    async def main() -> Collected:
        async with Worker(worker, models, lambda _m: replay):
            await wait_until_routing(kafka, settings, run, [model_topic(m) for m in models])
            await asyncio.sleep(5.0)  # the group settles: every router has its partitions

            def done(c: Collected) -> bool:
                return (len(c.routed) + len(c.dead) >= len(events)
                        and len(c.responses) >= len(c.routed))

            collector = asyncio.create_task(collect(kafka, outputs, run, done, 600, settings))
            await produce(kafka, settings.prompts_in, events, rate)
            return await collector

    t0 = time.time()
    try:
        got = asyncio.run(main())
        check_alive(services)
    finally:
        for s in services:
            s.stop()
    return {"reservations": reserve, "seconds": round(time.time() - t0, 1),
            **summarize(got, owner, budgets)}


def run(artifacts: Path, dataset: Path, rate: float = 10.0, latency_s: float = 2.0,
        routers: int = 2, compare: bool = False) -> dict:
    from ipr_model.artifacts.manifest import read_manifest
    from ipr_model.training.datasets import load_dataset
    from streams.kafka.admin import create_topics
    from streams.kafka.local import kafka_bootstrap
    from streams.kafka.settings import KafkaSettings

    data = load_dataset(dataset)
    test = data.split("test") if data.has_split("test") else data
    test = test.restrict(read_manifest(artifacts).models)
    cost = prompt_cost(artifacts, test)
    settings = KafkaSettings()
    log_dir = Path("build") / "logs" / f"budget-{uuid.uuid4().hex[:8]}"
    modes = [False, True] if compare else [True]
    with kafka_bootstrap() as bootstrap:
        kafka = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        asyncio.run(create_topics(kafka, [
            settings.prompts_in, settings.decisions, settings.control, settings.responses,
            settings.prompts_dlq, *{model_topic(m) for m in test.model_ids}],
            partitions=settings.topic_partitions))
        env = router_env(bootstrap, "ipr-router-budget")
        runs = [one_mode(kafka, settings, env, artifacts, data, test, cost, reserve=r, rate=rate,
                         latency_s=latency_s, routers=routers, log_dir=log_dir) for r in modes]
    return {"dataset": test.name, "prompts": len(test), "rate": rate, "latency_s": latency_s,
            "routers": routers, "tau": TAU, "prompt_cost_usd": cost,
            "budgets_in_prompts": list(BUDGETS), "runs": runs,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
