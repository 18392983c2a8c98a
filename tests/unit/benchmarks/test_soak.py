"""`make soak`'s pure parts: the per-minute summary and the bar (the soak itself is not a test)."""

from __future__ import annotations

import pytest

from benchmarks.soak_report import MINUTE, baseline_minute, minute_rows, soak_bar, swaps_needed

T0 = 1_000_000.0
GROUPS = ["router", "worker.m"]


def sample(t: float, router_mb: float, worker_mb: float, lag: int = 0, cpu: float = 0.0) -> dict:
    return {"t": T0 + t, "rss_mb": {"router": router_mb, "worker": worker_mb},
            "cpu_s": {"router": cpu, "worker": cpu / 2}, "lag": {"router": lag, "worker.m": lag},
            "load1": 1.5, "ticks": (int(t), int(t) * 10 + 10)}


def rows_with(rss: list[tuple[float, float]], lags: list[int]) -> list[dict]:
    """A run of len(rss) minutes: 3 samples a minute at those RSS and lags."""
    samples = [sample(m * MINUTE + s, r, w, lag, cpu=m * MINUTE + s)
               for m, ((r, w), lag) in enumerate(zip(rss, lags, strict=True)) for s in (5, 30, 55)]
    return minute_rows(T0, len(rss), [], [], [], [], samples)


def test_minute_rows_count_each_minute_and_take_latency_by_send_minute() -> None:
    sent = [T0 + 1, T0 + 2, T0 + 61, T0 + 200]  # the last one after the 2-minute run
    routed = [(T0 + 1, T0 + 1.010), (T0 + 2, T0 + 2.030), (T0 + 59.99, T0 + 60.09)]
    rows = minute_rows(T0, 2, sent, routed, [T0 + 3, T0 + 70], [T0 + 90],
                       [sample(5, 100, 50, lag=3), sample(55, 110, 60, lag=7, cpu=25),
                        sample(65, 120, 70)])
    assert [r["sent"] for r in rows] == [2, 1]
    assert [r["routed"] for r in rows] == [2, 1]  # routed: by arrival on the model topic
    assert [r["answered"] for r in rows] == [1, 1]
    assert [r["versions_published"] for r in rows] == [0, 1]
    # latency by the minute the prompt was sent: the 100 ms one belongs to minute 1
    assert rows[0]["latency_ms"]["p50"] == pytest.approx(30.0, abs=0.01)
    assert rows[0]["latency_ms"]["p99"] == pytest.approx(98.6, abs=0.1)
    assert rows[1]["latency_ms"] == {"p50": None, "p99": None}
    assert rows[0]["rss_mb"] == {"router": 105.0, "worker": 55.0}
    assert rows[0]["rss_max_mb"] == {"router": 110, "worker": 60}
    assert rows[0]["lag_max"] == {"router": 7, "worker.m": 7}
    assert rows[0]["lag_end"] == {"router": 7, "worker.m": 7}
    assert rows[0]["cpu_percent"]["router"] == pytest.approx(50.0)
    assert rows[0]["steal_percent"] == pytest.approx(10.0)
    assert rows[1]["cpu_percent"] == {}  # one sample: no rate


def test_the_warm_up_ends_at_a_third_of_the_run_and_swaps_are_pro_rata() -> None:
    assert [baseline_minute(m) for m in (1, 2, 3, 4, 10, 30)] == [1, 1, 1, 2, 4, 10]
    assert [swaps_needed(m) for m in (1, 10, 30, 60)] == [1, 7, 20, 40]


def test_the_bar_passes_a_run_flat_after_its_warm_up() -> None:
    # minutes 1-9 warm up (300 -> 330 MB); minute 10 to 30: +2.9%
    rss = [(300 + 3 * m, 150) for m in range(10)] + [(327 + 0.45 * m, 152) for m in range(1, 21)]
    rows = rows_with(rss, [20, 15, *[12] * 28])
    bar = soak_bar(rows, {"drained": True}, 0, 10.0, True, GROUPS, adopted=20)
    assert bar["passed"], bar
    assert bar["baseline_minute"] == 10 and bar["last_minute"] == 30
    assert bar["rss"]["router"]["change"] == pytest.approx(9 / 327, abs=1e-4)


@pytest.mark.parametrize(("service", "rss"), [("router", (330, 160)), ("worker", (320, 165))])
def test_the_bar_fails_when_rss_grows_more_than_3_percent_after_the_warm_up(
        service: str, rss) -> None:
    rows = rows_with([(320, 160)] * 9 + [rss], [10] * 10)
    bar = soak_bar(rows, {"drained": True}, 0, 10.0, True, GROUPS)
    assert not bar["passed"]
    assert not bar["checks"]["rss_growth_within_3_percent"]
    assert not bar["rss"][service]["ok"]
    shrinking = rows_with([(320, 160)] * 9 + [(250, 120)], [10] * 10)
    assert soak_bar(shrinking, {"drained": True}, 0, 10.0, True, GROUPS)["passed"]


def test_the_bar_wants_enough_hot_swaps_adopted() -> None:
    rows = rows_with([(300, 150)] * 30, [10] * 30)
    assert soak_bar(rows, {"drained": True}, 0, 10.0, True, GROUPS, adopted=20)["passed"]
    bar = soak_bar(rows, {"drained": True}, 0, 10.0, True, GROUPS, adopted=19)
    assert not bar["passed"] and not bar["checks"]["hot_swaps_adopted"]
    assert bar["swaps_needed"] == 20


def test_the_broker_restart_leaves_its_stall_out_of_the_lag_comparison() -> None:
    lags = [10] * 15 + [400, 300] + [10] * 13  # the broker restarted in minute 16
    rows = rows_with([(300, 150)] * 30, lags)
    restart = {"minute": 16, "ok": True, "down_s": 8.0}
    bar = soak_bar(rows, {"drained": True}, 0, 10.0, True, GROUPS, 20, restart)
    assert bar["passed"], bar
    assert bar["lag_minutes_left_out"] == [16, 17]
    assert not soak_bar(rows, {"drained": True}, 0, 10.0, True, GROUPS, 20)["passed"]
    failed = soak_bar(rows, {"drained": True}, 0, 10.0, True, GROUPS, 20,
                      {"minute": 16, "ok": False})
    assert not failed["passed"] and not failed["checks"]["broker_restarted"]


def test_a_sample_without_lag_is_left_out_of_its_minute() -> None:
    samples = [sample(5, 100, 50, lag=3), {**sample(30, 100, 50), "lag": {}},
               sample(55, 100, 50, lag=4)]
    [row] = minute_rows(T0, 1, [], [], [], [], samples)
    assert row["lag_max"] == {"router": 4, "worker.m": 4}
    assert row["lag_end"] == {"router": 4, "worker.m": 4}


def test_the_bar_fails_a_growing_lag_but_allows_the_margin() -> None:
    flat = rows_with([(300, 150)] * 10, [20] * 5 + [20 + 50] * 5)  # margin at 10/s: 50 records
    assert soak_bar(flat, {"drained": True}, 0, 10.0, True, GROUPS)["checks"]["lag_bounded"]
    growing = rows_with([(300, 150)] * 10, [20, 30, 40, 50, 60, 80, 100, 150, 200, 300])
    bar = soak_bar(growing, {"drained": True}, 0, 10.0, True, GROUPS)
    assert not bar["passed"] and not bar["checks"]["lag_bounded"]
    assert bar["lag"]["router"] == {"first_half_max": 60, "second_half_max": 300, "ok": False}


@pytest.mark.parametrize(("drain", "lost", "alive", "check"), [
    ({"drained": False}, 0, True, "lag_drained"),
    ({"drained": True}, 1, True, "nothing_lost"),
    ({"drained": True}, 0, False, "services_alive"),
])
def test_the_bar_fails_on_a_lost_prompt_an_undrained_lag_or_a_dead_service(
        drain: dict, lost: int, alive: bool, check: str) -> None:
    rows = rows_with([(300, 150)] * 4, [5] * 4)
    bar = soak_bar(rows, drain, lost, 10.0, alive, GROUPS)
    assert not bar["passed"] and not bar["checks"][check]
    assert sum(not ok for ok in bar["checks"].values()) == 1


def test_a_short_run_compares_against_its_last_minute() -> None:
    bar = soak_bar(rows_with([(300, 150)], [0]), {"drained": True}, 0, 10.0, True, GROUPS)
    assert bar["passed"] and bar["baseline_minute"] == 1


def test_the_tracker_counts_only_its_run_and_knows_when_everything_is_back() -> None:
    from types import SimpleNamespace

    import orjson

    from benchmarks.soak_report import Tracker
    from schemas.topics import model_topic
    from streams.kafka.settings import KafkaSettings

    s, tr = KafkaSettings(), Tracker("r1")
    gen = tr.events(["a", "b"], until=time_far())
    events = [next(gen) for _ in range(3)]
    assert [k for k, _ in events] == [b"r1:0", b"r1:1", b"r1:2"]  # cycled, unique ids
    assert orjson.loads(events[2][1])["text"] == "a" and len(tr.sent) == 3

    def msg(key: str, value: dict, ts: float = 5.0, ts_type: int = 1):
        return SimpleNamespace(key=key.encode(), value=orjson.dumps(value), timestamp=ts * 1000,
                               timestamp_type=ts_type)

    routed = model_topic("m")
    for i in range(2):
        tr.take(routed, msg(f"r1:{i}", {"sent_at": 4.0, "router_version": "v1"}), s)
    tr.take(routed, msg("r1:1", {"sent_at": 4.0}), s)  # a re-delivery
    tr.take(routed, msg("other:9", {"sent_at": 4.0}), s)  # another run's
    tr.take(s.prompts_dlq, msg("r1:2", {"source_topic": s.prompts_in}), s)
    assert tr.routed["r1:0"] == (4.0, 5.0) and tr.duplicates == 1 and tr.dead == {"r1:2"}
    assert not tr.complete()  # routed, not answered yet
    for i in range(2):
        tr.take(s.responses, msg(f"r1:{i}", {"error": None}), s)
    tr.take(s.control, msg("artifacts", {"version": "v2",
                                         "location": "build/soak-versions/r1/v2"}), s)
    tr.take(s.control, msg("artifacts", {"version": "v9", "location": "elsewhere/v9"}), s)
    assert tr.complete() and len(tr.published) == 1 and tr.published_versions == {"v2"}
    assert tr.adopted() == 0  # v2 routed nothing yet
    tr.take(routed, msg("r1:3", {"sent_at": 4.0, "router_version": "v2"}), s)
    assert tr.adopted() == 1


def time_far() -> float:
    import time

    return time.monotonic() + 3600
