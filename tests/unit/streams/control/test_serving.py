"""What a router knows of the models workers serve."""

from __future__ import annotations

from schemas import WorkerServing
from streams.control.serving import ServingBoard

KNOWN = ["a", "b", "c"]


def announced(worker: str, models: list[str], at: float, ttl: float = 30.0) -> WorkerServing:
    return WorkerServing(worker=worker, models=models, announced_at=at, ttl_s=ttl)


def test_nothing_is_left_out_before_any_worker_announced() -> None:
    assert ServingBoard().unserved(KNOWN, 100.0) == frozenset()


def test_only_models_a_live_worker_serves_are_routable() -> None:
    board = ServingBoard()
    board.apply("w1", announced("w1", ["a"], 100.0), 100.0)
    board.apply("w2", announced("w2", ["a", "b"], 100.0), 100.0)
    assert board.unserved(KNOWN, 110.0) == {"c"}
    board.apply("w2", None, 111.0)  # w2 stopped: its tombstone
    assert board.unserved(KNOWN, 112.0) == {"b", "c"}
    assert board.unserved(KNOWN, 131.0) == {"a", "b", "c"}  # w1's announcement expired
    board.apply("w1", announced("w1", ["a"], 132.0), 132.0)  # and renewed
    assert board.unserved(KNOWN, 133.0) == {"b", "c"}


def test_an_older_announcement_read_late_does_not_replace_a_newer_one() -> None:
    board = ServingBoard()
    board.apply("w1", announced("w1", ["a", "b"], 200.0), 200.0)
    board.apply("w1", announced("w1", ["a"], 150.0), 201.0)
    assert board.served(201.0) == {"a", "b"}


def test_a_clock_ahead_does_not_stretch_the_ttl() -> None:
    board = ServingBoard()
    board.apply("w1", announced("w1", ["a"], 1_000.0, ttl=30.0), 500.0)  # sender 500 s ahead
    assert board.served(529.0) == {"a"} and board.served(531.0) == frozenset()
