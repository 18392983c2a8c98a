"""Failover: where a prompt goes when its model's call fails. Pure functions, no Kafka.

A RoutedPrompt carries its ``ranking`` (the feasible models in the rule's order of preference, the
router's choice first) and its ``attempt`` (1 from the router). When a call ends in a retryable
error after the backend's own retries (a timeout, a connection error, HTTP 429 or 5xx), the worker
forwards the prompt to ``ranking[attempt]``: the same RoutedPrompt with ``attempt + 1``, the next
model as ``model_id``, and the failed model and its error appended to ``failed``. The failure is
final, and the worker publishes the error response, when the error is not retryable (another model
would get the same 400), when the ranking has no next model, when the prompt has made
``max_attempts`` attempts, or when it carries no ranking (a router that predates failover).
"""

from __future__ import annotations

from schemas import FailedAttempt, RoutedPrompt
from schemas import limits as L

# Separates a prompt id from its attempt number in a deduplication key (not in any sane id).
_ATTEMPT_SEP = "\x00"


def next_attempt(
    routed: RoutedPrompt, error: str, retryable: bool, max_attempts: int
) -> RoutedPrompt | None:
    """The prompt forwarded to the next model of its ranking, or None when this failure is the
    prompt's final answer."""
    ranking = routed.ranking
    if not retryable or ranking is None:
        return None
    if routed.attempt >= max_attempts or routed.attempt >= len(ranking):
        return None
    failed = [*(routed.failed or ()), FailedAttempt(
        model_id=routed.model_id, error=(error or "unknown error")[: L.MAX_ERROR_CHARS])]
    fields = routed.model_dump(exclude={"model_id", "attempt", "failed"})
    return RoutedPrompt(
        **fields, model_id=ranking[routed.attempt], attempt=routed.attempt + 1, failed=failed
    )


def attempt_key(prompt_id: str, attempt: int) -> str:
    """What the workers deduplicate on: the prompt id for a first attempt (as before failover),
    the id and the attempt number for a forwarded one, which must not count as answered because
    its first model took it."""
    return prompt_id if attempt == 1 else f"{prompt_id}{_ATTEMPT_SEP}{attempt}"
