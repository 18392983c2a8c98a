"""A label's wait for its decision: given up only once the decisions were processed to their end,
and never while its decision was read meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from streams.feedback.waiting import CATCH_UP_WAIT_S, caught_up, wait_for_decision

DECISION = {"model": "m1", "embedding": "e", "at": 0.0}
NOW = 1_000.0


def test_a_partition_counts_by_the_decisions_processed_not_by_those_fetched() -> None:
    ends = {0: 1500, 1: 1500}
    # partition 1's backlog is fetched (its consumer position is 1500) but none of it processed
    assert not caught_up(ends, read={0: 1500}, starts={1: 0})
    assert not caught_up(ends, read={0: 1500, 1: 1499}, starts={})
    assert caught_up(ends, read={0: 1500, 1: 1500}, starts={})


def test_a_partition_with_nothing_processed_counts_from_where_its_reading_began() -> None:
    # after a restart, an idle partition begins at the offset committed before: nothing pending
    assert caught_up({0: 10, 1: 7}, read={0: 10}, starts={1: 7})
    assert not caught_up({0: 10, 1: 7}, read={0: 10}, starts={})  # not asked yet: unknown


def test_no_partition_assigned_is_not_caught_up() -> None:
    assert not caught_up({}, read={0: 5}, starts={})


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_a_decision_read_while_the_ends_are_asked_is_returned_not_given_up() -> None:
    # The label's decision is among the last of the backlog: remember_decisions stores it, and
    # the rest, while the label awaits the broker's end offsets; then the decisions are caught up.
    log: dict[str, dict] = {}

    async def ends_now() -> dict[int, int]:
        await asyncio.sleep(0.01)
        log["p"] = DECISION
        return {0: 10}

    async def is_caught_up(ends: dict[int, int]) -> bool:
        return True

    got = run(wait_for_decision(lambda: log.get("p"), NOW - 1, ends_now, is_caught_up,
                                clock=lambda: NOW))
    assert got == DECISION


def test_a_label_without_a_decision_is_given_up_once_caught_up_after_its_deadline() -> None:
    clock = {"t": NOW}
    asked: list[float] = []

    async def ends_now() -> dict[int, int]:
        asked.append(clock["t"])
        return {0: 10}

    async def is_caught_up(ends: dict[int, int]) -> bool:
        clock["t"] += 1.0  # caught up at the third look
        return clock["t"] >= NOW + 3

    assert run(wait_for_decision(lambda: None, NOW, ends_now, is_caught_up,
                                 clock=lambda: clock["t"])) is None
    assert asked == [NOW]  # the ends of the first look after the deadline, not asked again
    assert clock["t"] == NOW + 3


@pytest.mark.parametrize("ends", [None, {0: 10}])
def test_a_label_waits_at_most_the_catch_up_time_past_its_deadline(ends) -> None:
    # the broker's ends unknown (None), or the decisions never caught up
    looks: list[float] = []

    def clock() -> float:
        looks.append(NOW + 60.0 * len(looks))
        return looks[-1]

    async def ends_now():
        return ends

    async def is_caught_up(e: dict[int, int]) -> bool:
        return False

    assert run(wait_for_decision(lambda: None, NOW, ends_now, is_caught_up, clock=clock)) is None
    assert looks[-1] >= NOW + CATCH_UP_WAIT_S
    assert looks[-2] < NOW + CATCH_UP_WAIT_S


def test_before_its_deadline_a_label_only_waits_for_its_decision() -> None:
    found: list[dict] = []

    async def ends_now():
        raise AssertionError("the ends are asked only after the deadline")

    async def decision_arrives() -> None:
        await asyncio.sleep(0.2)
        found.append(DECISION)

    async def scenario():
        arrival = asyncio.create_task(decision_arrives())
        got = await wait_for_decision(lambda: found[0] if found else None, NOW + 5, ends_now,
                                      ends_now, clock=lambda: NOW)
        await arrival
        return got

    assert run(scenario()) == DECISION
