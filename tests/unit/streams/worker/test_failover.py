"""Failover's pure parts: where a failed prompt goes next, and what the workers deduplicate on."""

from __future__ import annotations

import pytest

from schemas import FailedAttempt, RoutedPrompt, decode, encode
from streams.worker.failover import attempt_key, next_attempt

RANKING = ["cheap", "mid", "best"]


def first(ranking=RANKING, **kw) -> RoutedPrompt:
    return RoutedPrompt(
        prompt_id="p-1", text="What is 2+2?", model_id=ranking[0] if ranking else "cheap",
        tolerance=1.0, threshold=0.1, predicted_quality={m: 0.5 for m in RANKING},
        estimated_cost_usd={m: 0.01 for m in RANKING}, ranking=ranking, router_version="v1",
        routing_latency_ms=1.0, routed_at=1.0, metadata={"k": 1}, **kw,
    )


def test_a_retryable_failure_goes_to_the_next_model_with_the_failed_one_recorded():
    second = next_attempt(first(), "HTTP 503 after 4 attempts", True, max_attempts=3)
    assert second is not None
    assert (second.model_id, second.attempt) == ("mid", 2)
    assert second.failed == [FailedAttempt(model_id="cheap", error="HTTP 503 after 4 attempts")]
    # everything else is the router's decision, unchanged
    assert second.model_dump(exclude={"model_id", "attempt", "failed"}) == \
        first().model_dump(exclude={"model_id", "attempt", "failed"})
    third = next_attempt(second, "timeout", True, max_attempts=3)
    assert (third.model_id, third.attempt) == ("best", 3)
    assert [f.model_id for f in third.failed] == ["cheap", "mid"]
    assert decode(RoutedPrompt, encode(third)) == third  # a valid event on the wire


@pytest.mark.parametrize(
    "prompt, retryable, max_attempts",
    [
        (first(), False, 3),  # a 400: another model would get the same
        (first(ranking=None), True, 3),  # a router that predates failover
        (first(ranking=["cheap"]), True, 3),  # tau 0: nothing else feasible
        (first(), True, 1),  # failover off
    ],
)
def test_no_next_attempt(prompt, retryable, max_attempts):
    assert next_attempt(prompt, "HTTP 400: bad request", retryable, max_attempts) is None


def test_the_last_attempt_is_final():
    second = next_attempt(first(), "HTTP 500", True, max_attempts=2)
    assert second is not None and next_attempt(second, "HTTP 500", True, max_attempts=2) is None
    third = next_attempt(next_attempt(first(), "e", True, 5), "e", True, 5)
    assert next_attempt(third, "e", True, max_attempts=5) is None  # the ranking ran out


def test_a_forwarded_attempt_has_its_own_dedupe_key():
    assert attempt_key("p-1", 1) == "p-1"  # as before failover: old answered records still count
    assert len({attempt_key("p-1", n) for n in (1, 2, 3)}) == 3
