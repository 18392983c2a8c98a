"""Tenant policies and budgets on the real broker: a router process (``ipr router``), a worker
answering at a known cost, policies written with ``ipr policy set``.

Tenant ``thrifty`` has a budget of a few cents a month; once its spend reaches it, its prompts go
to its cheapest allowed model, then (its policy switched to ``reject`` while the router runs) to
the dead-letter topic, also after the router restarts (as two processes). Tenant ``steady`` is
routed by its own policy throughout. The spend recorded on the spend topic is the sum of the
responses' costs, before and after the restart (two counters count each response once).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.processes import Service, router_env
from benchmarks.traffic import collect, produce
from ipr_model.artifacts.manifest import read_manifest
from ipr_model.serving.rule import route_batch
from schemas import (
    DeadLetter,
    ModelResponse,
    PromptRequest,
    RoutedPrompt,
    RoutingDecision,
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
from tests.integration.streams.worker.helpers import read_all
from tests.waits import eventually, wait_for_log

# a dear, a middle and a cheap model (zeroeval prices: 3.5, 0.88, 0.08 USD per million tokens)
MODELS = ["Llama-3.1-405B-Inst@sambanova", "Meta-Llama-3.1-70B-Instruct",
          "Meta-Llama-3-8B-Instruct"]
BUDGET = 0.03
STEADY_TAU = 0.3


class PricedBackend:
    """Answers at once, at a cost that varies by prompt (known from its id)."""

    async def complete(self, routed: RoutedPrompt) -> Completion:
        return Completion(text="ok", tokens_in=3, tokens_out=2, cost_usd=cost_of(routed.prompt_id),
                          latency_ms=1.0)


def cost_of(prompt_id: str) -> float:
    return 0.003 + 0.0005 * (int(prompt_id.rsplit(":", 1)[1]) % 5)


def topics(unique: str) -> dict[str, str]:
    return {"IPR_PROMPTS_IN": f"prompts.in.{unique}", "IPR_PROMPTS_DLQ": f"dlq.{unique}",
            "IPR_DECISIONS": f"decisions.{unique}", "IPR_RESPONSES": f"responses.{unique}",
            "IPR_POLICIES": f"policies.{unique}", "IPR_SPEND": f"spend.{unique}",
            "IPR_CONTROL": f"control.{unique}", "IPR_FEEDBACK": f"feedback.{unique}",
            "IPR_RESERVATIONS": f"reservations.{unique}"}


def ipr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def set_policy(env, *args: str) -> int:
    done = ipr(env, "policy", "set", *args)
    assert done.returncode == 0, done.stderr
    return int(re.search(r"revision (\d+)", done.stdout)[1])


def prompts(run: str, tenant: str, wave: int, n: int, texts: list[str]) -> list:
    out = []
    for i in range(n):
        pid = f"{run}:{tenant}:{wave}:{i}"
        req = PromptRequest(prompt_id=pid, text=texts[(wave * 37 + i) % len(texts)][:240],
                            tenant=tenant, tolerance=[None, 0.9][i % 2])
        out.append((pid.encode(), encode(req)))
    return out


def expected_model(d, tau: float) -> str:
    """The rule's choice among the decision's candidates at ``tau``."""
    ids = sorted(d.predicted_quality)
    q = np.array([[d.predicted_quality[m] for m in ids]])
    c = np.array([[d.estimated_cost_usd[m] for m in ids]])
    chosen, _ = route_batch(q, c, tau, ids)
    return ids[int(chosen[0])]


async def costs(settings: KafkaSettings, run: str) -> dict[str, ModelResponse]:
    """This run's responses, by prompt id."""
    out = {}
    for msg in await read_all(settings.kafka_bootstrap, settings.responses):
        r = decode(ModelResponse, msg.value)
        if r.prompt_id.startswith(f"{run}:"):
            out[r.prompt_id] = r
    return out


async def spend_matches(settings: KafkaSettings, run: str) -> dict[str, float]:
    """Each tenant's cost on responses.out, once the spend topic holds the same (polled: the
    counter writes right after each batch it reads)."""
    last: dict[str, dict[str, float]] = {}

    async def matching() -> dict[str, float] | None:
        mine = await costs(settings, run)
        cost = {t: sum(r.cost_usd for r in mine.values() if r.tenant == t)
                for t in ("thrifty", "steady")}
        recorded = {t: await recorded_spend(settings, t) for t in cost}
        last.update(recorded=recorded, cost=cost)
        return cost if all(recorded[t] == pytest.approx(cost[t], rel=1e-9) for t in cost) else None

    return await eventually(matching, interval=0.5, why=lambda: f"recorded spend {last}")


async def recorded_spend(settings: KafkaSettings, tenant: str) -> float:
    """The tenant's spend this month on the spend topic: the latest record of each partition."""
    latest: dict[int, TenantSpend] = {}
    for msg in await read_all(settings.kafka_bootstrap, settings.spend):
        r = decode(TenantSpend, msg.value)
        mine = r.tenant == tenant and r.period == "month"
        if mine and (r.partition not in latest or latest[r.partition].offset < r.offset):
            latest[r.partition] = r
    return sum(r.spend_usd for r in latest.values())


def test_a_spent_budget_sends_its_tenant_to_the_cheapest_model_then_the_dlq_others_unchanged(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path
):
    assert set(MODELS) <= set(read_manifest(small_artifacts).models)
    env = router_env(kafka_bootstrap, f"router-{unique}", **topics(unique))
    env["IPR_ROUTER_DATA_DIR"] = str(tmp_path / "faust")
    settings = KafkaSettings(**{k[4:].lower(): v for k, v in env.items()
                                if k.startswith("IPR_") and not k.startswith("IPR_ROUTER_")})
    asyncio.run(create_topics(kafka_bootstrap, [settings.prompts_in, settings.prompts_dlq,
                                                settings.decisions, settings.responses,
                                                *map(model_topic, MODELS)], partitions=4))
    # bad input is refused by the CLI, naming the field
    bad = ipr(env, "policy", "set", "thrifty", "--budget", "0.03")
    assert bad.returncode == 2 and "budget_usd and period go together" in bad.stderr
    bad = ipr(env, "policy", "set", "thrifty", "--tolerance", "1.5")
    assert bad.returncode == 2 and "tolerance" in bad.stderr
    revs = {"thrifty": set_policy(env, *thrifty_policy("cheapest")),
            "steady": set_policy(env, "steady", "--tolerance", str(STEADY_TAU), *ALLOW,
                                 "--budget", "100", "--period", "month")}
    services = [Service("router", ["router", "--artifacts", str(small_artifacts)], env, tmp_path)]
    try:
        rev_reject, before, after = asyncio.run(
            waves(env, settings, unique, texts, services, small_artifacts, tmp_path))
        mine = asyncio.run(costs(settings, unique))
        shown = ipr(env, "policy", "show", "thrifty")
    finally:
        for s in services:
            s.stop()

    assert all(r.tenant == pid.split(":")[1] for pid, r in mine.items())
    assert len(mine) == 10 + 5 + 6 + 5 + 3 + 8  # thrifty's waves 3 and 4 are not answered
    thrifty_cost = before["thrifty"]
    assert thrifty_cost > BUDGET and after["thrifty"] == pytest.approx(thrifty_cost, rel=1e-9)
    assert after["steady"] > before["steady"]  # the new routers' counters counted wave 4, once
    check_decisions(asyncio.run(read_all(kafka_bootstrap, settings.decisions)), revs)
    letters = {m.key.decode(): decode(DeadLetter, m.value)
               for m in asyncio.run(read_all(kafka_bootstrap, settings.prompts_dlq))}
    thrifty_dead = {k: v for k, v in letters.items() if k.startswith(f"{unique}:thrifty:")}
    assert set(thrifty_dead) == {f"{unique}:thrifty:{w}:{i}" for w, n in ((3, 4), (4, 3))
                                 for i in range(n)}
    assert {d.error_kind for d in thrifty_dead.values()} == {"budget_exceeded"}
    assert all(f"revision {rev_reject}" in d.error for d in thrifty_dead.values())
    # after the restart the router knew the spend: all of it
    assert f"{thrifty_cost:.6f} USD this month" in thrifty_dead[f"{unique}:thrifty:4:0"].error
    assert not [k for k in letters if k.startswith(f"{unique}:steady:")]
    assert shown.returncode == 0 and f'"revision": {rev_reject}' in shown.stdout
    assert '"on_exhausted": "reject"' in shown.stdout


ALLOW = sum((["--allow", m] for m in MODELS), [])


def thrifty_policy(on_exhausted: str) -> list[str]:
    return ["thrifty", "--tolerance", "0", *ALLOW, "--budget", str(BUDGET), "--period", "month",
            "--on-exhausted", on_exhausted]


async def waves(env, settings, run, texts, services, artifacts, tmp_path):
    """Four waves of prompts of both tenants, a worker answering; the policy switched to reject
    before the third, the router restarted before the fourth. Returns the revision of the reject
    policy and each tenant's recorded spend before and after the restart."""
    router = services[0]
    outputs = [settings.prompts_dlq, settings.responses, *map(model_topic, MODELS)]

    async def wave(n: int, thrifty: int, steady: int, answered: int, dead: int) -> None:
        events = prompts(run, "thrifty", n, thrifty, texts) + prompts(run, "steady", n, steady,
                                                                      texts)
        ids = {k.decode() for k, _ in events}
        done = lambda c: (len(ids & set(c.responses)) >= answered  # noqa: E731
                          and len(ids & set(c.dead)) >= dead)
        collector = asyncio.create_task(collect(settings, outputs, run, done, 240, settings))
        await produce(settings, settings.prompts_in, events, 0)
        got = await collector
        assert len(ids & set(got.responses)) == answered, services[-1].log_tail()
        assert len(ids & set(got.dead)) == dead, services[-1].log_tail()

    worker = WorkerSettings(
        kafka_bootstrap=settings.kafka_bootstrap, responses=settings.responses,
        feedback=settings.feedback, prompts_dlq=settings.prompts_dlq,
        group_prefix=f"worker-{run}", concurrency=8, drain_timeout_s=10.0)
    async with Worker(worker, MODELS, lambda _m: PricedBackend()):
        await asyncio.to_thread(wait_for_log, router, "tenants: 2 policies", 180)
        await wave(1, 10, 5, 15, 0)  # thrifty's spend passes its budget (10 answers of 3-5 mUSD)
        await asyncio.to_thread(wait_for_log, router, "tenant 'thrifty' has spent its budget")
        await wave(2, 6, 5, 11, 0)  # thrifty to its cheapest allowed model; steady unchanged
        rev_reject = await asyncio.to_thread(set_policy, env, *thrifty_policy("reject"))
        await asyncio.to_thread(wait_for_log, router,
                                f"policy of tenant 'thrifty', revision {rev_reject}")
        await wave(3, 4, 3, 3, 4)  # thrifty dead-lettered, steady routed
        before = await spend_matches(settings, run)
        await asyncio.to_thread(router.stop)
        for name in ("router2", "router3"):  # two processes in the group: counted once
            services.append(Service(name, ["router", "--artifacts", str(artifacts)],
                                    {**env, "IPR_ROUTER_DATA_DIR": str(tmp_path / name)},
                                    tmp_path))
        await wave(4, 3, 8, 8, 3)  # after the restart, the spend is still known
        return rev_reject, before, await spend_matches(settings, run)


def check_decisions(records, revs: dict[str, int]) -> None:
    """Each decision follows its tenant's policy and the spend it names."""
    by_wave: dict[tuple[str, int], list[RoutingDecision]] = {}
    for m in records:
        d = decode(RoutingDecision, m.value)
        _, tenant, w, _ = d.prompt_id.rsplit(":", 3)
        by_wave.setdefault((tenant, int(w)), []).append(d)
    assert {k: len(v) for k, v in by_wave.items()} == {
        ("thrifty", 1): 10, ("steady", 1): 5, ("thrifty", 2): 6, ("steady", 2): 5,
        ("steady", 3): 3, ("steady", 4): 8}
    for (tenant, _), ds in by_wave.items():
        for d in ds:
            assert d.tenant == tenant and set(d.predicted_quality) == set(MODELS)
            assert d.allowed_models == MODELS and d.policy.tenant == tenant
            assert d.policy.revision == revs[tenant]
            # exhausted: the committed spend reached the budget, or the choice at the prompt's
            # own τ would pass it (streams.router.budget.over_budget)
            own = d.estimated_cost_usd[expected_model(d, 0.0 if tenant == "thrifty"
                                                      else STEADY_TAU)]
            assert d.policy.exhausted == (d.tenant_spend_usd >= d.policy.budget_usd
                                          or d.tenant_spend_usd + own > d.policy.budget_usd)
            assert d.reserved_usd == pytest.approx(d.estimated_cost_usd[d.model_id])
            if tenant == "steady":  # its own policy: τ ≤ 0.3, never exhausted
                assert not d.policy.exhausted and d.reason is None
                assert d.tolerance == STEADY_TAU and d.model_id == expected_model(d, STEADY_TAU)
            elif d.policy.exhausted:  # the cheapest allowed model
                assert d.tolerance == 1.0 and d.reason == "budget_exhausted"
                assert d.model_id == expected_model(d, 1.0)
                assert d.model_id == min(MODELS, key=lambda m: d.estimated_cost_usd[m])
            else:  # τ = 0 (the tenant's, the prompt's 0.9 cut to it): the best predicted
                assert d.tolerance == 0.0 and d.model_id == expected_model(d, 0.0)
    wave2 = by_wave["thrifty", 2]
    assert all(d.policy.exhausted and d.tenant_spend_usd >= BUDGET for d in wave2)
    assert any(not d.policy.exhausted for d in by_wave["thrifty", 1])
    # the switch is visible: the best predicted model was not always the cheapest
    assert any(expected_model(d, 0.0) != d.model_id for d in wave2)
