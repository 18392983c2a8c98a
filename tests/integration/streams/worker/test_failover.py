"""Failover end to end on a real Kafka: a real router ranks each prompt's feasible models, workers
call a real OpenAI-compatible server this project did not write (LiteLLM's proxy, mock answers)
where one model fails with HTTP 500, and that model's prompts are answered by the next model of
their ranking. Every prompt in is answered once (or dead-lettered), and the failing model is
reported unhealthy on the control topic as before."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from aiokafka import AIOKafkaConsumer

from ipr_model.serving.decision import decide
from ipr_model.serving.scorer import Scorer
from schemas import DeadLetter, ModelHealth, ModelResponse, PromptRequest, decode, encode
from schemas.topics import health_key, model_topic, safe_name
from streams.kafka.admin import create_topics
from streams.worker.backends.openai import OpenAIBackend
from streams.worker.service import Worker
from streams.worker.settings import WorkerSettings
from tests.integration.streams.router.test_router import (
    TEXT_CHARS,
    prepare_with_control,
    start_router,
    stream_and_collect,
)
from tests.integration.streams.worker.helpers import (
    committed,
    end_offsets,
    partitions,
    read_all,
)
from tests.integration.streams.worker.litellm_server import install, model_entry, serve
from tests.waits import eventually

N = 60  # prompts any model may answer (tolerance 1: every model feasible)
ONLY = 4  # prompts allowed only the failing model: nothing to fail over to
UNHEALTHY_AFTER = 3


async def skip_history(bootstrap: str, group: str, topic: str) -> None:
    """Commit ``group`` at the end of ``topic``: model topics are shared by the tests, and this
    worker is to answer this test's prompts only."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions(bootstrap, topic)
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.commit(end)
    finally:
        await consumer.stop()


def worker_settings(bootstrap: str, unique: str, control: str) -> WorkerSettings:
    return WorkerSettings(
        kafka_bootstrap=bootstrap, responses=f"responses-{unique}",
        feedback=f"feedback-{unique}", prompts_dlq=f"dlq-{unique}", control=control,
        group_prefix=f"worker-{unique}", concurrency=8, drain_timeout_s=10.0,
        max_retries=1, backoff_s=0.01, timeout_s=30.0, failover_attempts=3,
        unhealthy_after=UNHEALTHY_AFTER,
    )


async def prepare_worker_topics(bootstrap: str, ws: WorkerSettings, ids: list[str]) -> None:
    await create_topics(bootstrap, [ws.responses, ws.feedback, ws.prompts_dlq,
                                    f"{ws.group_prefix}.answered"], partitions=2)
    for m in ids:
        await skip_history(bootstrap, f"{ws.group_prefix}.{safe_name(m)}", model_topic(m))


def route_all(bootstrap, unique, artifacts, tmp_path, settings, model_topics, requests) -> dict:
    """The real router ranks and routes every request; its RoutedPrompts by prompt id."""
    router = start_router("router", artifacts, bootstrap, unique, tmp_path)
    try:
        events = [(r.prompt_id.encode(), encode(r)) for r in requests]
        got = asyncio.run(stream_and_collect(bootstrap, settings, unique, events, model_topics,
                                             len(requests)))
        assert router.alive(), router.log_tail()
    finally:
        router.stop()
    assert len(got.routed) == len(requests) and not got.dead and got.routed_dupes == 0
    return got.routed


def answer_all(ws: WorkerSettings, ids: list[str], failing: str, expect: int, tmp_path) -> Worker:
    """Workers for every model on LiteLLM, where ``failing`` answers HTTP 500, until ``expect``
    prompts are answered or dead-lettered."""
    models = [model_entry(m, "litellm.InternalServerError" if m == failing else f"from {m}")
              for m in ids]
    with serve(install(), models, tmp_path) as (url, key):

        async def answer() -> Worker:
            async with httpx.AsyncClient() as client:
                backends = {m: OpenAIBackend(url, key, client=client, max_retries=1,
                                             backoff_s=0.01, timeout_s=30.0) for m in ids}
                async with Worker(ws, ids, backends.__getitem__) as worker:
                    await eventually(lambda: sum(
                        s.responses + s.dead_lettered for s in worker.stats.values()
                    ) >= expect, timeout=180)
                return worker

        return asyncio.run(answer())


def is_only(prompt_id: str) -> bool:
    return prompt_id.split(":")[-1].startswith("only")


def test_a_failing_models_prompts_are_answered_by_the_next_model_of_their_ranking(
    kafka_bootstrap, unique, small_artifacts, texts, tmp_path, monkeypatch
):
    control, settings, model_topics = prepare_with_control(
        kafka_bootstrap, unique, small_artifacts, monkeypatch)
    scorer = Scorer.load(small_artifacts)
    ids = scorer.model_ids
    sample = [t[:TEXT_CHARS] for t in texts[:N]]
    # the model tau = 1 sends most of these prompts to (the cheapest) is the one that fails
    decided = decide(scorer, scorer.score(sample), [1.0] * N)
    failing = Counter(d.model_id for d in decided).most_common(1)[0][0]
    requests = [PromptRequest(prompt_id=f"{unique}:{i}", text=t, tolerance=1.0)
                for i, t in enumerate(sample)]
    requests += [PromptRequest(prompt_id=f"{unique}:only{i}", text=sample[i], tolerance=1.0,
                               allowed_models=[failing]) for i in range(ONLY)]
    ws = worker_settings(kafka_bootstrap, unique, control)
    asyncio.run(prepare_worker_topics(kafka_bootstrap, ws, ids))

    routed = route_all(kafka_bootstrap, unique, small_artifacts, tmp_path, settings,
                       model_topics, requests)
    to_failing = [pid for pid, r in routed.items() if r.model_id == failing]
    assert len(to_failing) > UNHEALTHY_AFTER + ONLY  # enough to fail over and to report
    for pid, r in routed.items():
        assert r.ranking[0] == r.model_id and r.attempt == 1 and r.failed is None
        # tolerance 1: every allowed model is feasible
        assert sorted(r.ranking) == ([failing] if is_only(pid) else sorted(ids))

    worker = answer_all(ws, ids, failing, len(requests), tmp_path)
    forwarded = len(to_failing) - ONLY
    stats = worker.stats
    assert stats[failing].forwarded == sum(s.forwarded for s in stats.values()) == forwarded
    assert sum(s.responses for s in stats.values()) == len(requests)
    assert sum(s.processed for s in stats.values()) == len(requests) + forwarded
    check_outputs(kafka_bootstrap, ws, routed, failing, len(requests))
    # Every record of every model topic was handled and committed, the forwarded ones included.
    for m in ids:
        done = asyncio.run(committed(kafka_bootstrap, worker.group_of(m)))
        assert {tp: o for tp, o in done.items() if o > 0} == \
            asyncio.run(end_offsets(kafka_bootstrap, model_topic(m)))


def check_outputs(bootstrap: str, ws: WorkerSettings, routed: dict, failing: str, n: int) -> None:
    responses = [decode(ModelResponse, r.value)
                 for r in asyncio.run(read_all(bootstrap, ws.responses))]
    dead = [decode(DeadLetter, r.value) for r in asyncio.run(read_all(bootstrap, ws.prompts_dlq))]
    by_id = {r.prompt_id: r for r in responses}

    # Counts reconcile: prompts in = responses out (answers + final errors) + dead letters.
    errors = [r for r in responses if r.error is not None]
    assert len(by_id) == len(responses) == n and not dead
    assert (n - len(errors), len(errors)) == (n - ONLY, ONLY)

    for pid, r in routed.items():
        resp = by_id[pid]
        if is_only(pid):  # every attempt failed: the error goes out
            assert (resp.model_id, resp.attempt, resp.failed) == (failing, 1, None)
            assert resp.error.startswith("HTTP 500 after 2 attempts") and resp.text == ""
        elif r.model_id == failing:  # answered by the next model of its ranking
            assert (resp.model_id, resp.attempt, resp.error) == (r.ranking[1], 2, None)
            assert resp.text == f"from {r.ranking[1]}"
            assert [f.model_id for f in resp.failed] == [failing]
            assert resp.failed[0].error.startswith("HTTP 500 after 2 attempts")
        else:  # its first model answered
            assert (resp.model_id, resp.attempt, resp.failed) == (r.model_id, 1, None)
            assert resp.text == f"from {r.model_id}"

    # The failing model was reported unhealthy on the control topic, as without failover.
    reports = [decode(ModelHealth, r.value) for r in asyncio.run(read_all(bootstrap, ws.control))
               if r.key == health_key(failing)]
    assert reports and not reports[0].healthy
    assert reports[0].consecutive_errors == UNHEALTHY_AFTER
    assert reports[0].error.startswith("HTTP 500 after 2 attempts")
