"""Model health through a real router: a model reported unhealthy on router.control is left out
of every prompt's candidates (and named in the decision) until it is reported healthy again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np

from benchmarks.traffic import produce
from ipr_model.serving.rule import route_batch
from ipr_model.serving.scorer import Scorer
from schemas import ModelHealth, PromptRequest, encode
from schemas.topics import health_key
from tests.integration.streams.router.test_router import (
    TEXT_CHARS,
    prepare_with_control,
    start_router,
    stream_and_collect,
)
from tests.waits import wait_for_log

N = 120


def test_an_unhealthy_model_is_left_out_until_reported_healthy(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path, monkeypatch
):
    control, settings, model_topics = prepare_with_control(
        kafka_bootstrap, unique, small_artifacts, monkeypatch)
    scorer = Scorer.load(small_artifacts)
    ids = scorer.model_ids
    sample = [t[:TEXT_CHARS] for t in texts[:N]]
    # the model that tau = 0 sends most of these prompts to
    best = Counter(ids[i] for i in scorer.score(sample).quality.argmax(axis=1)).most_common(1)[0][0]

    def events(run):
        reqs = [PromptRequest(prompt_id=f"{run}:{i}", text=t, tolerance=0.0)
                for i, t in enumerate(sample)]
        return [(r.prompt_id.encode(), encode(r)) for r in reqs]

    def report(healthy: bool) -> None:
        h = ModelHealth(model_id=best, healthy=healthy, worker="test", reported_at=time.time(),
                        consecutive_errors=0 if healthy else 5, ttl_s=600.0,
                        error=None if healthy else "HTTP 503 after 4 attempts")
        asyncio.run(produce(kafka_bootstrap, control, [(health_key(best), encode(h))], 0))

    def stream(run):
        return asyncio.run(stream_and_collect(kafka_bootstrap, settings, run, events(run),
                                              model_topics, N))

    router = start_router("router", small_artifacts, kafka_bootstrap, unique, tmp_path)
    try:
        report(healthy=False)
        wait_for_log(router, f"model {best} reported unhealthy")
        down = stream(f"{unique}-down")
        report(healthy=True)
        wait_for_log(router, f"model {best} reported healthy")
        up = stream(f"{unique}-up")
        assert router.alive(), router.log_tail()
    finally:
        router.stop()

    def carried(got):
        routed = [got.routed[k] for k in sorted(got.routed)]
        q = np.array([[r.predicted_quality[m] for m in ids] for r in routed])
        c = np.array([[r.estimated_cost_usd[m] for m in ids] for r in routed])
        return routed, q, c

    assert len(down.routed) == N and not down.dead
    routed, q, c = carried(down)
    assert all(r.model_id != best and r.unhealthy_models == [best] for r in routed)
    # each is the rule's choice among the other models, on the scores it carries
    chosen, _ = route_batch(q, c, 0.0, ids, np.array([m != best for m in ids]))
    assert [ids[i] for i in chosen] == [r.model_id for r in routed]

    assert len(up.routed) == N and not up.dead
    routed, q, c = carried(up)
    assert all(r.unhealthy_models is None for r in routed)
    chosen, _ = route_batch(q, c, 0.0, ids)
    assert [ids[i] for i in chosen] == [r.model_id for r in routed]
    assert sum(r.model_id == best for r in routed) > N // 4
