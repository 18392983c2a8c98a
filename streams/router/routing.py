"""The router's decision path as a pure function: a batch of raw records in, routed prompts,
decisions and dead letters out. No Kafka, no Faust: the agent only calls :func:`route_records`.

Every record ends in exactly one of ``routed`` or ``dead``: nothing is dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Collection, Sequence

from ipr_model.errors import RoutingInputError
from ipr_model.rule import Variant
from schemas import DeadLetter, PromptRequest, RoutedPrompt, RoutingDecision, SchemaError, decode
from streams.topics import model_topic
from streams.vectors import pack


@dataclass(frozen=True)
class Record:
    """A consumed record, as the agent hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Routed:
    topic: str
    key: bytes
    prompt: RoutedPrompt
    decision: RoutingDecision


@dataclass
class BatchResult:
    routed: list[Routed] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    scoring_ms: float = 0.0


def _dead(rec: Record, error: str, kind: str) -> DeadLetter:
    return DeadLetter.build(
        source_topic=rec.topic, partition=rec.partition, offset=rec.offset, key=rec.key,
        value=rec.value, error=error, error_kind=kind,
    )


def route_records(
    records: Sequence[Record],
    scorer,
    default_tolerance: float,
    variant: Variant = "ipr",
    delta: float = 0.0,
    unhealthy: Collection[str] = (),
) -> BatchResult:
    """Validate, score (one scorer call for the batch) and route every record, leaving the
    ``unhealthy`` models out where a prompt has other candidates (``streams.health``)."""
    out = BatchResult()
    valid: list[tuple[Record, PromptRequest]] = []
    known = set(scorer.model_ids)
    for rec in records:
        try:
            req = decode(PromptRequest, rec.value)
        except SchemaError as e:
            out.dead.append(_dead(rec, str(e), e.kind))
            continue
        unknown = sorted(set(req.allowed_models or ()) - known)
        if unknown:
            out.dead.append(_dead(
                rec,
                f"unknown model(s) in allowed_models: {', '.join(unknown)}; "
                f"this router knows {len(known)} models",
                "unknown_model",
            ))
            continue
        valid.append((rec, req))
    if not valid:
        return out

    t0 = time.perf_counter()
    scores = scorer.score([req.text for _, req in valid])
    decisions = scorer.decide(
        scores,
        [default_tolerance if req.tolerance is None else req.tolerance for _, req in valid],
        [req.allowed_models for _, req in valid],
        variant=variant,
        delta=delta,
        unhealthy=unhealthy,
    )
    out.scoring_ms = (time.perf_counter() - t0) * 1000.0
    now = time.time()
    for (rec, req), d, emb in zip(valid, decisions, scores.embeddings):
        try:
            prompt = RoutedPrompt(
                prompt_id=req.prompt_id, tenant=req.tenant, allowed_models=req.allowed_models,
                sent_at=req.sent_at, model_id=d.model_id, tolerance=d.tolerance,
                threshold=d.threshold, predicted_quality=d.predicted_quality,
                estimated_cost_usd=d.estimated_cost_usd,
                feedback_adjustment=d.feedback_adjustment, unhealthy_models=d.unhealthy_models,
                router_version=scorer.version,
                routing_latency_ms=max(0.0, (now - rec.received_at) * 1000.0), routed_at=now,
                text=req.text, metadata=req.metadata,
            )
        except (ValueError, RoutingInputError) as e:  # a routing bug must not lose the prompt
            out.dead.append(_dead(rec, f"could not build the routed prompt: {e}", "routing_error"))
            continue
        out.routed.append(
            Routed(
                topic=model_topic(d.model_id),
                key=req.prompt_id.encode(),
                prompt=prompt,
                decision=prompt.to_decision(variant=variant, embedding=pack(emb)),
            )
        )
    return out
