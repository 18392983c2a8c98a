"""Per-model counters of a worker, also exported to Prometheus as
`ipr_worker_<name>_total{model}`; its dead letters by reason and the end-to-end latency of its
answers."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from schemas.codec import ERROR_KINDS

DEAD_LETTERS = Counter("ipr_worker_dead_letters_total", "records dead-lettered, by reason",
                       ["reason"])
for _kind in (*ERROR_KINDS, "wrong_model", "max_tokens_above_cap"):
    DEAD_LETTERS.labels(_kind)  # at zero: a rate over a series' first increment would not show it
END_TO_END_SECONDS = Histogram(
    "ipr_worker_end_to_end_seconds",
    "from the producer's sent_at to the answer on responses.out (acknowledged), by model",
    ["model"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


@dataclass
class WorkerStats:
    """Per-model counters (also exported to Prometheus as `ipr_worker_<name>_total{model}`)."""

    processed: int = 0  # records consumed and handled, whatever the outcome
    responses: int = 0  # ModelResponses published (errors included)
    errors: int = 0  # of which carry an error
    feedback: int = 0  # QualityFeedback published
    duplicates_skipped: int = 0
    dead_lettered: int = 0
    forwarded: int = 0  # failed calls whose prompt went to the next model of its ranking


_COUNTER_HELP = {
    "processed": "records consumed from a model topic and handled",
    "responses": "ModelResponses published (errors included)",
    "errors": "ModelResponses that carry an error",
    "feedback": "QualityFeedback events published",
    "duplicates_skipped": "records skipped: their prompt_id was already answered",
    "dead_lettered": "records sent to the dead-letter topic",
    "forwarded": "failed calls whose prompt was forwarded to the next model (failover)",
}
_COUNTERS: dict[str, Counter] = {}


def counters() -> dict[str, Counter]:
    """Created once per process in the default registry, whatever the number of Workers."""
    if not _COUNTERS:
        for name, doc in _COUNTER_HELP.items():
            _COUNTERS[name] = Counter(f"ipr_worker_{name}", doc, ["model"])
    return _COUNTERS
