"""Budgets that hold while prompts are in flight, on the real broker: two router processes in
one group (``ipr router``), a worker whose calls take two seconds and cost exactly their
estimate, policies written with ``ipr policy set``.

Tenant ``capped`` (reject) has a budget of 10.5 prompts' estimated cost and sends 30 prompts at
10/s: only 10 go (11 when a reservation had not yet reached the other router), although no
answer is counted before the 20th is sent (without reservations
all 30 go: ``IPR_ROUTER_RESERVE_BUDGETS=false`` makes this test fail, at 2.9 times the
budget). Tenant ``flaky`` has room for 3: its first 3 prompts fail (HTTP 400),
their error answers release what they reserved, and its next 3 go. In both delivery modes
(exactly-once: the reservations are written in each batch's transaction).
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.processes import Service, router_env
from benchmarks.traffic import Collected, collect, produce
from schemas import (
    ModelResponse,
    PromptRequest,
    RoutedPrompt,
    TenantReservation,
    TenantSpend,
    decode,
    encode,
)
from schemas.topics import model_topic
from streams.kafka.admin import create_topics
from streams.kafka.settings import KafkaSettings
from streams.worker.backends.base import Completion
from streams.worker.service import Worker
from streams.worker.settings import WorkerSettings
from tests.integration.streams.router.test_tenants import ALLOW, MODELS, ipr, set_policy, topics
from tests.integration.streams.worker.helpers import read_all
from tests.waits import eventually, wait_for_log

DELAY_S = 2.0
TEXT = "Explain in two sentences why the sky is blue."


class SlowExactBackend:
    """Takes DELAY_S; answers at the routed model's estimated cost (the estimates are right, so
    what passes a budget is only what was in flight), or fails with a 400 when the prompt id
    says ``fail``."""

    async def complete(self, routed: RoutedPrompt) -> Completion:
        await asyncio.sleep(DELAY_S)
        if ":fail:" in routed.prompt_id:
            return Completion(text="", tokens_in=3, tokens_out=0, cost_usd=0.0, latency_ms=1.0,
                              error="HTTP 400: refused", error_status=400, retryable=False)
        return Completion(text="ok", tokens_in=3, tokens_out=2, latency_ms=1.0,
                          cost_usd=routed.estimated_cost_usd[routed.model_id])


def events(run: str, tenant: str, kind: str, n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        req = PromptRequest(prompt_id=f"{run}:{tenant}:{kind}:{i}", text=TEXT, tenant=tenant,
                            tolerance=0.0, allowed_models=MODELS)
        out.append((req.prompt_id.encode(), encode(req)))
    return out


async def send(settings, run: str, batch, rate: float = 10.0) -> Collected:
    """Produce ``batch`` at ``rate``; what came back once each prompt is answered or dead."""
    ids = {k.decode() for k, _ in batch}
    outputs = [settings.prompts_dlq, settings.responses, *map(model_topic, MODELS)]
    done = lambda c: (len(ids & (set(c.responses) | set(c.dead))) >= len(ids)  # noqa: E731
                      and len(ids & set(c.routed)) >= len(ids & set(c.responses)))
    collector = asyncio.create_task(collect(settings, outputs, run, done, 120, settings))
    await produce(settings, settings.prompts_in, batch, rate)
    got = await collector
    await asyncio.sleep(1.0)  # nothing more comes
    for found in (got.routed, got.dead, got.responses):  # this batch's alone
        for pid in set(found) - ids:
            del found[pid]
    return got


async def settled(settings, tenant: str, usd: float) -> None:
    """Wait until the spend topic holds ``usd`` settled for ``tenant`` this month."""
    async def enough():
        latest: dict[int, TenantSpend] = {}
        for msg in await read_all(settings.kafka_bootstrap, settings.spend):
            r = decode(TenantSpend, msg.value)
            if r.tenant == tenant and r.period == "month" and (
                    r.partition not in latest or latest[r.partition].offset < r.offset):
                latest[r.partition] = r
        total = sum(r.settled_usd for r in latest.values())
        return total if total == pytest.approx(usd, rel=1e-9) else None

    await eventually(enough, interval=0.5, why=lambda: f"{tenant} never settled {usd}")


async def scenario(env, settings, run, services):
    # tenants of this run alone (the model topics are shared with other tests on the broker)
    capped, flaky = f"capped-{run[-8:]}", f"flaky-{run[-8:]}"
    worker = WorkerSettings(
        kafka_bootstrap=settings.kafka_bootstrap, responses=settings.responses,
        feedback=settings.feedback, prompts_dlq=settings.prompts_dlq,
        group_prefix=f"worker-{run}", concurrency=64, drain_timeout_s=10.0)
    async with Worker(worker, MODELS, lambda _m: SlowExactBackend()):
        for s in services:
            await asyncio.to_thread(wait_for_log, s, "tenants: 0 policies", 180)
        # a prompt without a policy: its model's estimate at τ = 0, what every prompt here costs
        probe = await send(settings, run, events(run, "probe", "ok", 1))
        (first,) = probe.routed.values()
        cost = first.estimated_cost_usd[first.model_id]
        policy = ["--tolerance", "0", *ALLOW, "--period", "month", "--on-exhausted", "reject"]
        revs = [await asyncio.to_thread(set_policy, env, capped, *policy,
                                        "--budget", repr(10.5 * cost)),
                await asyncio.to_thread(set_policy, env, flaky, *policy,
                                        "--budget", repr(3.5 * cost))]
        for s in services:
            await asyncio.to_thread(wait_for_log, s, f"policy of tenant {flaky!r}, revision "
                                                     f"{revs[1]}", 60)
        held = await send(settings, run, events(run, capped, "ok", 30))
        spent = sum(r.cost_usd for r in held.responses.values())
        # one prompt over at most: a reservation reaches the other router once read back (in
        # exactly-once mode once committed, up to the transaction interval later), and a prompt
        # it routes in that window sees the budget without it (docs/design.md, budgets)
        assert spent <= 11 * cost, (f"{capped} spent {spent / cost:.1f} prompts' cost, its "
                                    f"budget being 10.5 ({len(held.responses)} answered)")
        failing = await send(settings, run, events(run, flaky, "fail", 3))
        await settled(settings, flaky, 3 * cost)
        after = await send(settings, run, events(run, flaky, "ok", 3))
        shown = await asyncio.to_thread(ipr, env, "policy", "show", capped)
        return cost, held, failing, after, shown


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at_least_once", "exactly_once"])
def test_a_budget_holds_the_prompts_in_flight_across_two_routers_and_errors_release(
    kafka_bootstrap, unique, small_artifacts, tmp_path, exactly_once
):
    env = router_env(kafka_bootstrap, f"router-{unique}", **topics(unique),
                     IPR_ROUTER_EXACTLY_ONCE=str(exactly_once).lower())
    settings = KafkaSettings(**{k[4:].lower(): v for k, v in env.items()
                                if k.startswith("IPR_") and not k.startswith("IPR_ROUTER_")})
    asyncio.run(create_topics(kafka_bootstrap, [settings.prompts_in, settings.prompts_dlq,
                                                settings.decisions, settings.responses,
                                                *map(model_topic, MODELS)], partitions=4))
    services = [Service(name, ["router", "--artifacts", str(small_artifacts)],
                        {**env, "IPR_ROUTER_DATA_DIR": str(tmp_path / name)}, tmp_path)
                for name in ("router1", "router2")]
    try:
        cost, capped, failing, after, shown = asyncio.run(
            scenario(env, settings, unique, services))
        reserved = [decode(TenantReservation, m.value) for m in
                    asyncio.run(read_all(kafka_bootstrap, settings.reservations))]
        assert all(s.alive() for s in services)
    finally:
        for s in services:
            s.stop()
    # the reservations were written per partition of prompts.in, by the router that owns it
    assert len({r.partition for r in reserved if r.tenant.startswith("capped-")}) >= 2
    # capped: 10 answered at their estimate (11 when the two routers crossed), the rest rejected
    assert len(capped.responses) in (10, 11) and len(capped.dead) == 30 - len(capped.responses)
    assert {d.error_kind for d in capped.dead.values()} == {"budget_exceeded"}
    assert all(r.reserved_usd == pytest.approx(cost) for r in capped.routed.values())
    assert all(r.reservation is not None and r.reservation.usd == pytest.approx(cost)
               for r in capped.responses.values())
    # flaky: its failed prompts' answers released their reservations, so the next three went
    assert all(isinstance(r, ModelResponse) and r.error for r in failing.responses.values())
    assert len(after.responses) == 3 and not after.dead
    assert all(not r.error for r in after.responses.values())
    assert shown.returncode == 0 and '"committed_usd"' in shown.stdout
