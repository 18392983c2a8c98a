"""Tenant policies, pure: periods, narrowing, a spent budget (cheapest, reject); the policy and
spend boards; counting spend from responses; routing a batch under policies."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from schemas import ModelResponse, RoutedPrompt, TenantPolicy, TenantSpend, decode, encode
from streams.router.policy import apply_policy, oldest_kept, period_start
from streams.router.routing import route_records
from streams.router.spend import count_responses
from streams.router.tenants import Policies, Spend
from tests.unit.streams.router.test_routing import TableScorer, rec, req

T = datetime(2026, 3, 17, 14, 35, 12, tzinfo=UTC).timestamp()


def ts(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def policy(**kw) -> TenantPolicy:
    return TenantPolicy(tenant="acme", **kw)


def test_periods_are_utc_calendar_hours_days_and_months():
    assert period_start("hour", T) == ts(2026, 3, 17, 14)
    assert period_start("day", T) == ts(2026, 3, 17)
    assert period_start("month", T) == ts(2026, 3, 1)
    assert period_start("month", ts(2026, 1, 1)) == ts(2026, 1, 1)
    assert oldest_kept("month", ts(2026, 1, 5)) == ts(2025, 12, 1)
    assert oldest_kept("hour", T) == ts(2026, 3, 17, 13)
    with pytest.raises(ValueError, match="period"):
        period_start("week", T)


def test_without_a_policy_the_prompt_or_the_router_decides():
    assert apply_policy(None, None, 0.2) == apply_policy(None, None, 0.2, None)
    v = apply_policy(0.7, ["a"], 0.2)
    assert (v.tolerance, v.allowed, v.policy, v.spend_usd, v.dead) == (0.7, ["a"], None, None, None)
    assert apply_policy(None, None, 0.2).tolerance == 0.2


@pytest.mark.parametrize(("own", "tenant", "expected"), [
    (None, 0.3, 0.3),   # the tenant's default
    (0.1, 0.3, 0.1),    # stricter: kept
    (0.9, 0.3, 0.3),    # looser: cut to the tenant's
    (0.9, None, 0.9),   # no ceiling
    (None, None, 0.2),  # the router's default
])
def test_a_prompts_tolerance_narrows_the_tenants_never_widens_it(own, tenant, expected):
    assert apply_policy(own, None, 0.2, policy(tolerance=tenant)).tolerance == expected


def test_allowed_models_are_intersected_and_an_empty_intersection_is_dead_lettered():
    p = policy(allowed_models=["a", "b", "c"])
    assert apply_policy(None, None, 0.2, p).allowed == ["a", "b", "c"]
    assert apply_policy(None, ["c", "d", "a"], 0.2, p).allowed == ["c", "a"]
    assert apply_policy(None, None, 0.2, policy()).allowed is None
    assert apply_policy(None, ["d"], 0.2, policy()).allowed == ["d"]
    # models the router does not know are dropped from the policy's
    assert apply_policy(None, None, 0.2, p, known=["b", "c", "x"]).allowed == ["b", "c"]
    v = apply_policy(None, ["d", "e"], 0.2, p, revision=7)
    assert v.dead is not None and v.dead[0] == "not_allowed"
    assert "acme" in v.dead[1] and "revision 7" in v.dead[1] and "a, b, c" in v.dead[1]


def test_a_spent_budget_routes_to_the_cheapest_allowed_model_at_tau_1():
    p = policy(tolerance=0.2, allowed_models=["a", "b"], budget_usd=0.05, period="day")
    within = apply_policy(0.1, None, 0.5, p, revision=4, spend_usd=0.0499)
    assert (within.tolerance, within.allowed, within.reason, within.dead) == (
        0.1, ["a", "b"], None, None)
    assert within.spend_usd == 0.0499
    assert within.policy.model_dump() == {
        "tenant": "acme", "revision": 4, "budget_usd": 0.05, "period": "day",
        "on_exhausted": "cheapest", "exhausted": False}
    spent = apply_policy(0.1, ["b"], 0.5, p, revision=4, spend_usd=0.05)  # reached counts
    assert (spent.tolerance, spent.allowed, spent.reason, spent.dead) == (
        1.0, ["b"], "budget_exhausted", None)
    assert spent.policy.exhausted and spent.spend_usd == 0.05


def test_a_spent_budget_under_reject_is_dead_lettered_as_budget_exceeded():
    p = policy(budget_usd=0.03, period="hour", on_exhausted="reject")
    assert apply_policy(None, None, 0.2, p, spend_usd=0.01).dead is None
    v = apply_policy(None, None, 0.2, p, revision=2, spend_usd=0.0312)
    assert v.dead is not None and v.dead[0] == "budget_exceeded"
    assert "0.031200 USD this hour" in v.dead[1] and "0.03 USD" in v.dead[1]
    assert "committed" in v.dead[1] and "revision 2" in v.dead[1]
    # a zero budget is spent from the start
    assert apply_policy(None, None, 0.2, policy(budget_usd=0, period="day",
                                                on_exhausted="reject")).dead[0] == "budget_exceeded"


def test_a_policy_is_validated_and_names_the_field():
    with pytest.raises(ValueError, match="budget_usd and period go together"):
        TenantPolicy(tenant="acme", budget_usd=1.0)
    with pytest.raises(ValueError, match="budget_usd"):
        TenantPolicy(tenant="acme", budget_usd=-1.0, period="day")
    with pytest.raises(ValueError, match="on_exhausted"):
        TenantPolicy(tenant="acme", on_exhausted="pray")
    with pytest.raises(ValueError, match="tolerance"):
        TenantPolicy(tenant="acme", tolerance=1.5)


def test_policies_skip_bad_records_keep_the_previous_one_and_honour_tombstones(caplog):
    board = Policies()
    good = encode(policy(tolerance=0.3))
    assert board.apply(b"acme", good, 5) is not None
    assert board.apply(b"acme", b"{not json", 6) is None
    assert board.apply(b"acme", encode(TenantPolicy(tenant="other")), 7) is None  # key mismatch
    assert board.apply(None, good, 8) is None
    found = board.get("acme")
    assert found is not None and found[1] == 5 and found[0].tolerance == 0.3
    assert "malformed policy" in caplog.text and "its key is tenant" in caplog.text
    board.apply(b"acme", None, 9)
    assert board.get("acme") is None and board.get(None) is None


def spend(partition=0, offset=10, usd=0.01, start=None, period="day", tenant="acme"):
    return TenantSpend(tenant=tenant, period=period,
                       period_start=period_start(period, T) if start is None else start,
                       partition=partition, spend_usd=usd, responses=1, offset=offset,
                       updated_at=T)


def test_spend_sums_partitions_and_a_late_older_record_takes_nothing_back():
    board = Spend()
    assert board.apply(spend(0, 10, 0.02), now=T)
    assert board.apply(spend(1, 3, 0.01), now=T)
    assert not board.apply(spend(0, 8, 0.015), now=T)  # counted less far: ignored
    assert board.current("acme", "day", T) == pytest.approx(0.03)
    assert board.current("acme", "month", T) == 0.0
    assert not board.apply(spend(start=ts(2026, 3, 15)), now=T)  # older than the previous day
    board.apply(spend(2, 1, 0.5, start=ts(2026, 3, 16)), now=T)
    board.prune(now=ts(2026, 3, 18, 1))
    assert board.total("acme", "day", ts(2026, 3, 16)) == 0.0
    assert board.total("acme", "day", ts(2026, 3, 17)) == pytest.approx(0.03)


def response_msg(offset, tenant, cost, at=T):
    value = encode(ModelResponse(prompt_id=f"p{offset}", model_id="a", text="x", tokens_in=1,
                                 tokens_out=1, cost_usd=cost, latency_ms=1.0, tenant=tenant))
    return SimpleNamespace(offset=offset, value=value, timestamp=int(at * 1000))


def test_counting_responses_is_per_tenant_and_period_and_never_counts_twice():
    board = Spend()
    msgs = [response_msg(0, "acme", 0.01), response_msg(1, None, 5.0),
            response_msg(2, "beta", 0.5), response_msg(3, "acme", 0.02),
            SimpleNamespace(offset=4, value=b"{bad", timestamp=int(T * 1000)),
            response_msg(5, "acme", 0.04, at=ts(2026, 2, 1))]  # a month too old: not counted
    records = count_responses(msgs, 3, board.get, T)
    by = {(r.tenant, r.period): r for r in records}
    assert set(by) == {(t, p) for t in ("acme", "beta") for p in ("hour", "day", "month")}
    assert by["acme", "day"].spend_usd == pytest.approx(0.03)
    assert (by["acme", "day"].responses, by["acme", "day"].offset) == (2, 3)
    assert by["acme", "hour"].period_start == ts(2026, 3, 17, 14)
    assert all(r.partition == 3 for r in records)
    for r in records:
        board.apply(r, now=T)
    # read again after a crash (offsets uncommitted), plus one new response: only it counts
    again = count_responses([*msgs, response_msg(6, "acme", 0.1)], 3, board.get, T)
    assert {(r.tenant, r.period) for r in again} == {("acme", p) for p in ("hour", "day", "month")}
    for r in again:
        board.apply(r, now=T)
    assert board.current("acme", "day", T) == pytest.approx(0.13)
    assert board.current("beta", "month", T) == pytest.approx(0.5)


def tenants(*policies: tuple[TenantPolicy, int], spent: dict[str, float] | None = None):
    board, spend_board = Policies(), Spend()
    for p, revision in policies:
        board.apply(p.tenant.encode(), encode(p), revision)
    now = __import__("time").time()
    for i, (tenant, usd) in enumerate((spent or {}).items()):
        spend_board.apply(TenantSpend(tenant=tenant, period="month",
                                      period_start=period_start("month", now), partition=i,
                                      spend_usd=usd, responses=1, offset=0, updated_at=now))
    return SimpleNamespace(policies=board, spend=spend_board)


def test_a_batch_is_routed_under_each_tenants_policy_and_spend():
    acme = TenantPolicy(tenant="acme", tolerance=0.0, allowed_models=["big", "mid"],
                        budget_usd=0.05, period="month")
    beta = TenantPolicy(tenant="beta", tolerance=0.0, budget_usd=1.0, period="month",
                        on_exhausted="reject")
    view = tenants((acme, 11), (beta, 12), spent={"acme": 0.06, "beta": 2.0})
    records = [rec(0, req("a1", tenant="acme"), b"a1"), rec(1, req("b1", tenant="beta"), b"b1"),
               rec(2, req("c1", tenant="gamma", tolerance=0.0), b"c1"),
               rec(3, req("a2", tenant="acme", allowed_models=["small"]), b"a2")]
    out = route_records(records, TableScorer(), default_tolerance=1.0, tenants=view)
    assert {d.key: d.error_kind for d in out.dead} == {"b1": "budget_exceeded",
                                                       "a2": "not_allowed"}
    routed = {r.prompt.prompt_id: r for r in out.routed}
    a1 = routed["a1"]
    # spent: τ = 1 among big and mid: the cheaper, mid (small is not allowed)
    assert (a1.prompt.model_id, a1.prompt.tolerance, a1.prompt.allowed_models) == (
        "mid", 1.0, ["big", "mid"])
    assert a1.decision.policy.revision == 11 and a1.decision.policy.exhausted
    assert a1.decision.tenant_spend_usd == pytest.approx(0.06)
    assert a1.decision.reason == "budget_exhausted"
    back = decode(RoutedPrompt, encode(a1.prompt))
    assert back.policy == a1.prompt.policy
    # a tenant without a policy: unchanged (τ = 0: the best)
    c1 = routed["c1"]
    assert (c1.prompt.model_id, c1.decision.policy, c1.decision.tenant_spend_usd) == (
        "big", None, None)
    # within budget: the tenant's τ = 0 picks the best (10 USD, 20 budgeted)
    view = tenants((acme.model_copy(update={"budget_usd": 20.0}), 11), spent={"acme": 0.01})
    out = route_records([rec(0, req("a3", tenant="acme"))], TableScorer(), 1.0, tenants=view)
    (r,) = out.routed
    assert (r.prompt.model_id, r.prompt.tolerance, r.decision.policy.exhausted) == (
        "big", 0.0, False)
    assert r.decision.reason is None and r.prompt.reserved_usd == 10.0
    # the budget has room (0.04 USD) but not for the best model (10 USD): the cheapest allowed
    view = tenants((acme, 11), spent={"acme": 0.01})
    out = route_records([rec(0, req("a4", tenant="acme"))], TableScorer(), 1.0, tenants=view)
    (r,) = out.routed
    assert (r.prompt.model_id, r.prompt.tolerance, r.decision.policy.exhausted) == (
        "mid", 1.0, True)
    assert r.decision.reason == "budget_exhausted" and r.prompt.reserved_usd == 1.0
