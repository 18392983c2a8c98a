"""Budgets that hold while prompts are in flight, pure: reserving (counted once per prompt),
settling (an answer's cost replaces its reservation, an error releases it), the committed spend,
and a batch routed against it prompt by prompt."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from schemas import ModelResponse, TenantPolicy, TenantReservation, TenantSpend, encode
from streams.router.budget import Reserved, over_budget, reserve
from streams.router.policy import period_start
from streams.router.routing import Record, route_records
from streams.router.spend import count_responses
from streams.router.tenants import Policies, Spend
from tests.unit.streams.router.test_policy import T, ts
from tests.unit.streams.router.test_routing import TableScorer, req


def test_reserving_sums_per_tenant_period_and_partition_and_never_counts_a_prompt_twice():
    board = Spend()
    items = [Reserved("acme", 2, 10, 0.01, T), Reserved("beta", 2, 11, 0.5, T),
             Reserved("acme", 2, 12, 0.02, T), Reserved("acme", 3, 4, 0.04, T),
             Reserved("acme", 2, 13, 0.08, ts(2026, 1, 31))]  # too old a month, day and hour
    records = reserve(items, board.reservation, T)
    by = {(r.tenant, r.period, r.partition): r for r in records}
    assert set(by) == {(t, p, n) for t, n in (("acme", 2), ("beta", 2), ("acme", 3))
                       for p in ("hour", "day", "month")}
    day = by["acme", "day", 2]
    assert (day.reserved_usd, day.prompts, day.offset) == (pytest.approx(0.03), 2, 12)
    assert day.period_start == period_start("day", T)
    for r in records:
        board.apply(r, now=T)
    assert board.committed("acme", "day", period_start("day", T)) == pytest.approx(0.07)
    # read again after a crash, plus one new prompt: only it is reserved
    again = reserve([*items[:3], Reserved("acme", 2, 14, 0.1, T)], board.reservation, T)
    assert {(r.tenant, r.partition, r.offset) for r in again} == {("acme", 2, 14)}
    for r in again:
        board.apply(r, now=T)
    assert board.current("acme", "month", T) == pytest.approx(0.17)
    # a late record, counted less far, takes nothing back
    assert not board.apply(day.model_copy(update={"offset": 11, "reserved_usd": 0.0}), now=T)


def answer(offset: int, cost: float, reserved: float | None, tenant="acme", at=T,
           error: str | None = None):
    value = encode(ModelResponse(
        prompt_id=f"p{offset}", model_id="a", text="", tokens_in=1, tokens_out=1,
        cost_usd=cost, latency_ms=1.0, tenant=tenant, error=error,
        reservation=None if reserved is None else {"usd": reserved, "at": at}))
    return SimpleNamespace(offset=offset, value=value, timestamp=int(at * 1000))


def reservation(usd: float, prompts: int, offset: int, period="day", start=None, partition=0):
    return TenantReservation(
        tenant="acme", period=period, partition=partition, reserved_usd=usd, prompts=prompts,
        period_start=period_start(period, T) if start is None else start, offset=offset,
        updated_at=T)


def test_an_answer_settles_its_reservation_and_an_error_releases_it():
    board = Spend()
    day = period_start("day", T)
    board.apply(reservation(0.03, 3, 7), now=T)  # three prompts in flight, 0.01 each
    assert board.committed("acme", "day", day) == pytest.approx(0.03)
    msgs = [answer(0, 0.012, 0.01), answer(1, 0.0, 0.01, error="HTTP 400"),
            answer(2, 0.5, None, tenant="beta")]  # beta has no budget: nothing reserved
    records = count_responses(msgs, 1, board.get, T)
    for r in records:
        board.apply(r, now=T)
    acme = {r.period: r for r in records if r.tenant == "acme"}
    assert (acme["day"].spend_usd, acme["day"].settled_usd) == (pytest.approx(0.012),
                                                                pytest.approx(0.02))
    assert acme["day"].responses == 2
    # spent 0.012, one prompt still in flight (0.01)
    assert board.committed("acme", "day", day) == pytest.approx(0.022)
    # read again: nothing moves; the last answer arrives: nothing is in flight any more
    assert count_responses(msgs, 1, board.get, T) == []
    for r in count_responses([*msgs, answer(3, 0.009, 0.01)], 1, board.get, T):
        board.apply(r, now=T)
    assert board.committed("acme", "day", day) == pytest.approx(0.021)
    assert board.total("acme", "day", day) == pytest.approx(0.021)


def test_a_reservation_settles_in_the_periods_it_was_made_in():
    """Routed at 23:59:59, answered the next day: the answer's cost counts in the new day, its
    settlement in the old one, so neither day keeps a reservation in flight."""
    routed_at, answered_at = ts(2026, 3, 16, 23, 59, 59), ts(2026, 3, 17, 0, 0, 2)
    board = Spend()
    board.apply(reservation(0.01, 1, 0, start=period_start("day", routed_at)), now=T)
    for r in count_responses([answer(0, 0.011, 0.01, at=routed_at)], 0, board.get, T):
        board.apply(r, now=T)  # (the answer's own timestamp, for the test: the routed day)
    assert board.committed("acme", "day", period_start("day", routed_at)) == pytest.approx(0.011)
    board = Spend()
    board.apply(reservation(0.01, 1, 0, start=period_start("day", routed_at)), now=T)
    msg = answer(0, 0.011, 0.01, at=routed_at)
    msg.timestamp = int(answered_at * 1000)
    records = count_responses([msg], 0, board.get, T)
    for r in records:
        board.apply(r, now=T)
    days = {r.period_start: r for r in records if r.period == "day"}
    assert days[period_start("day", routed_at)].settled_usd == pytest.approx(0.01)
    assert days[period_start("day", routed_at)].spend_usd == 0.0
    assert days[period_start("day", answered_at)].spend_usd == pytest.approx(0.011)
    assert board.committed("acme", "day", period_start("day", routed_at)) == 0.0
    assert board.committed("acme", "day", period_start("day", answered_at)) == pytest.approx(0.011)


def test_settled_before_its_reservation_is_read_is_not_negative():
    board = Spend()
    board.apply(TenantSpend(tenant="acme", period="day", period_start=period_start("day", T),
                            partition=0, spend_usd=0.02, responses=1, offset=0, updated_at=T,
                            settled_usd=0.03), now=T)
    assert board.committed("acme", "day", period_start("day", T)) == pytest.approx(0.02)


def test_the_rule_stops_at_the_prompt_that_would_pass_the_budget():
    assert not over_budget(0.0, 0.01, 0.01)  # exactly fits
    assert over_budget(0.005, 0.01, 0.01)
    assert over_budget(0.01, 0.0, 0.01)  # reached: even a free model's prompt is over
    assert over_budget(0.0, 0.0, 0.0)  # a zero budget is spent from the start


def view(*policies: TenantPolicy):
    board = Policies()
    for i, p in enumerate(policies):
        board.apply(p.tenant.encode(), encode(p), i)
    return SimpleNamespace(policies=board, spend=Spend())


def prompts(start: int, n: int, tenant="acme", partition=0) -> list[Record]:
    ids = [f"{tenant}{start + i}" for i in range(n)]
    return [Record("prompts.in", partition, start + i, pid.encode(), req(pid, tenant=tenant))
            for i, pid in enumerate(ids)]


def test_a_batch_reserves_prompt_by_prompt_and_rejects_what_its_budget_cannot_hold():
    """τ = 0 picks big (10 USD estimated); a budget of 35 holds three of them. Without
    reservations every prompt of the batch would see a spend of 0."""
    tenants = view(TenantPolicy(tenant="acme", tolerance=0.0, budget_usd=35.0, period="day",
                                on_exhausted="reject"),
                   TenantPolicy(tenant="beta", tolerance=0.0))
    batch = prompts(0, 5) + prompts(5, 2, tenant="beta")
    out = route_records(batch, TableScorer(), 1.0, tenants=tenants)
    routed = {r.prompt.prompt_id: r.prompt for r in out.routed}
    assert sorted(routed) == ["acme0", "acme1", "acme2", "beta5", "beta6"]
    assert [routed[f"acme{i}"].tenant_spend_usd for i in range(3)] == [0.0, 10.0, 20.0]
    assert all(routed[f"acme{i}"].reserved_usd == 10.0 for i in range(3))
    assert routed["beta5"].reserved_usd is None  # no budget: nothing reserved
    dead = {d.key: d for d in out.dead}
    assert set(dead) == {"acme3", "acme4"}
    assert "committed 30.000000 USD this day" in dead["acme3"].error
    assert "estimated at 10.000000 USD" in dead["acme3"].error
    day = {r.period: r for r in out.reservations}["day"]
    assert (day.reserved_usd, day.prompts, day.offset, day.partition) == (30.0, 3, 2, 0)
    for r in out.reservations:
        tenants.spend.apply(r)
    # the next batch sees them; the batch read again after a crash reserves nothing twice
    again = route_records(prompts(0, 3), TableScorer(), 1.0, tenants=tenants)
    assert len(again.routed) == 3 and again.reservations == []
    # two answers: 8 USD spent, 20 settled: 5 USD of room for the next, not 10
    tenants.spend.apply(TenantSpend(tenant="acme", period="day", period_start=day.period_start,
                                    partition=0, spend_usd=8.0, responses=2, offset=1,
                                    updated_at=T, settled_usd=20.0))
    assert tenants.spend.current("acme", "day") == pytest.approx(18.0)
    nxt = route_records(prompts(7, 2), TableScorer(), 1.0, tenants=tenants)
    assert [r.prompt.prompt_id for r in nxt.routed] == ["acme7"]
    assert [d.key for d in nxt.dead] == ["acme8"]


def test_under_cheapest_the_prompts_past_the_budget_go_to_the_cheapest_and_still_reserve():
    tenants = view(TenantPolicy(tenant="acme", tolerance=0.0, budget_usd=25.0, period="hour"))
    out = route_records(prompts(0, 4), TableScorer(), 1.0, tenants=tenants)
    got = [(r.prompt.model_id, r.prompt.tolerance, r.prompt.policy.exhausted,
            r.decision.reason, r.prompt.reserved_usd) for r in out.routed]
    assert got == [("big", 0.0, False, None, 10.0), ("big", 0.0, False, None, 10.0),
                   ("small", 1.0, True, "budget_exhausted", 0.1),
                   ("small", 1.0, True, "budget_exhausted", 0.1)]
    hour = {r.period: r for r in out.reservations}["hour"]
    assert hour.reserved_usd == pytest.approx(20.2) and hour.prompts == 4


def test_without_reservations_a_batch_sees_only_the_spend_so_far():
    tenants = view(TenantPolicy(tenant="acme", tolerance=0.0, budget_usd=35.0, period="day",
                                on_exhausted="reject"))
    out = route_records(prompts(0, 5), TableScorer(), 1.0, tenants=tenants,
                        reserve_budgets=False)
    assert len(out.routed) == 5 and not out.dead and not out.reservations
    assert all(r.prompt.reserved_usd is None for r in out.routed)
