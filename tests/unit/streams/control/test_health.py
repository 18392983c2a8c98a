"""Model health: when a worker reports a model, and what a router leaves out when."""

from schemas import ModelHealth
from streams.control.health import ErrorStreak, HealthBoard


def test_a_streak_reports_unhealthy_at_the_threshold_again_at_half_the_ttl_then_healthy():
    s = ErrorStreak("m", "w:1", unhealthy_after=3, ttl_s=60.0)
    assert [s.observe("HTTP 500", t) for t in (0.0, 1.0)] == [None, None]
    down = s.observe("HTTP 503", 2.0)
    assert (down.model_id, down.healthy, down.consecutive_errors, down.error) == (
        "m", False, 3, "HTTP 503")
    assert (down.worker, down.reported_at, down.ttl_s) == ("w:1", 2.0, 60.0)
    assert s.observe("HTTP 500", 20.0) is None  # reported 18 s ago: still holds
    again = s.observe("HTTP 500", 32.0)  # 30 s after: before the first report expires
    assert not again.healthy and again.consecutive_errors == 5
    up = s.observe(None, 33.0)
    assert up.healthy and up.error is None and up.consecutive_errors == 0
    assert s.observe(None, 34.0) is None  # healthy already: nothing to say


def test_a_success_breaks_the_streak_and_zero_never_reports():
    s = ErrorStreak("m", "w", unhealthy_after=2, ttl_s=60.0)
    outcomes = ["e", None, "e", None, "e"]
    assert all(s.observe(o, float(i)) is None for i, o in enumerate(outcomes))
    never = ErrorStreak("m", "w", unhealthy_after=0, ttl_s=60.0)
    assert all(never.observe("e", float(i)) is None for i in range(100))


def report(model, healthy, at, ttl=60.0):
    return ModelHealth(model_id=model, healthy=healthy, worker="w", consecutive_errors=0 if
                       healthy else 5, reported_at=at, ttl_s=ttl)


def test_the_board_keeps_the_latest_report_until_it_expires():
    b = HealthBoard()
    assert b.apply(report("a", False, 100.0), received_at=100.5)
    assert b.apply(report("b", False, 100.0, ttl=10.0), received_at=100.5)
    assert b.unhealthy(105.0) == {"a", "b"}
    assert b.unhealthy(110.0) == {"a"}  # b's report expired
    assert not b.apply(report("a", True, 99.0), received_at=111.0)  # older than what it has
    assert b.unhealthy(111.0) == {"a"}
    assert b.apply(report("a", True, 120.0), received_at=120.0)
    assert b.unhealthy(121.0) == frozenset()


def test_a_report_read_long_after_it_was_sent_has_expired_and_a_clock_ahead_counts_from_receipt():
    b = HealthBoard()
    b.apply(report("old", False, 0.0), received_at=1000.0)  # replayed on a router's start
    b.apply(report("ahead", False, 5000.0), received_at=1000.0)  # the worker's clock is ahead
    assert b.unhealthy(1000.0) == {"ahead"}
    assert b.unhealthy(1061.0) == frozenset()
