"""LLM workers on a real Kafka: one answer per prompt, duplicates skipped, garbage dead-lettered,
offsets committed only for what was answered; replay on real zeroeval rows; an OpenAI-compatible
server end to end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter

from aiohttp import web

from ipr_model.training.datasets import Dataset
from schemas import (
    DeadLetter,
    ModelHealth,
    ModelResponse,
    QualityFeedback,
    RoutedPrompt,
    decode,
    encode,
)
from schemas.topics import is_health_key, model_topic
from streams.kafka.admin import create_topics
from streams.worker.backends.base import Completion
from streams.worker.backends.replay import ReplayBackend
from streams.worker.run import serve
from streams.worker.service import Worker
from streams.worker.settings import WorkerSettings
from tests.integration.streams.worker.helpers import committed, end_offsets, produce, read_all
from tests.unit.streams.worker.test_backends import ChatServer, chat_error, chat_ok
from tests.waits import eventually


def routed(prompt_id: str, model_id: str, text: str, others: tuple[str, ...] = ()) -> RoutedPrompt:
    models = (model_id, *others)
    return RoutedPrompt(
        prompt_id=prompt_id, text=text, model_id=model_id, tolerance=0.2, threshold=0.5,
        predicted_quality={m: 0.7 for m in models},
        estimated_cost_usd={m: 0.001 for m in models},
        router_version="test-v1", routing_latency_ms=2.0, routed_at=time.time(),
    )


def worker_settings(bootstrap: str, unique: str, **extra: object) -> WorkerSettings:
    return WorkerSettings(
        kafka_bootstrap=bootstrap,
        responses=f"responses-{unique}",
        feedback=f"feedback-{unique}",
        prompts_dlq=f"dlq-{unique}",
        group_prefix=f"worker-{unique}",
        concurrency=8,
        drain_timeout_s=10.0,
        **extra,
    )


def processed(worker: Worker) -> int:
    return sum(s.processed for s in worker.stats.values())


class FakeBackend:
    """Canned answers after a random short delay (calls finish out of order)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

    async def complete(self, routed: RoutedPrompt) -> Completion:
        self.calls[(routed.model_id, routed.prompt_id)] += 1
        await asyncio.sleep(random.uniform(0, 0.05))
        return Completion(
            text=f"answer to {routed.prompt_id}", tokens_in=3, tokens_out=5, cost_usd=0.001,
            latency_ms=1.0,
        )


GARBAGE = [(b"g-json", b"{not json", "invalid_json"), (b"g-empty", b"", "empty"),
           (b"g-fields", b'{"prompt_id": "x"}', "validation")]


def test_worker_answers_each_prompt_once_dead_letters_garbage_and_commits(
    kafka_bootstrap: str, unique: str
) -> None:
    models = [f"m-{unique}-a", f"m-{unique}-b"]
    settings = worker_settings(kafka_bootstrap, unique)
    prompts = [routed(f"p{i}-{unique}", models[i % 2], f"question {i}") for i in range(50)]
    records = [(model_topic(p.model_id), p.prompt_id.encode(), encode(p)) for p in prompts]
    records += [(model_topic(models[0]), key, value) for key, value, _ in GARBAGE]
    # a prompt for model b on model a's topic: a collision of sanitised ids
    stray = routed(f"stray-{unique}", models[1], "misrouted", others=(models[0],))
    records.append((model_topic(models[0]), stray.prompt_id.encode(), encode(stray)))
    duplicates = [prompts[i] for i in (0, 1, 2, 10, 33)]
    records += [(model_topic(p.model_id), p.prompt_id.encode(), encode(p)) for p in duplicates]

    async def main() -> None:
        topics = [*map(model_topic, models), settings.responses, settings.feedback,
                  settings.prompts_dlq]
        await create_topics(kafka_bootstrap, topics, partitions=3)
        await produce(kafka_bootstrap, records)
        backend = FakeBackend()
        worker = Worker(settings, models, lambda _m: backend)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            await eventually(lambda: processed(worker) == len(records))
        finally:
            stop.set()
            await asyncio.wait_for(running, 60)

        responses = [decode(ModelResponse, r.value) for r in
                     await read_all(kafka_bootstrap, settings.responses)]
        by_id = Counter(r.prompt_id for r in responses)
        assert len(responses) == 50 and set(by_id) == {p.prompt_id for p in prompts}
        assert max(by_id.values()) == 1
        want_model = {p.prompt_id: p.model_id for p in prompts}
        for r in responses:
            assert r.model_id == want_model[r.prompt_id]
            assert r.text == f"answer to {r.prompt_id}" and r.error is None
            assert r.router_version == "test-v1" and r.cost_usd == 0.001
        assert max(backend.calls.values()) == 1 and len(backend.calls) == 50

        letters = [(r.key, decode(DeadLetter, r.value)) for r in
                   await read_all(kafka_bootstrap, settings.prompts_dlq)]
        kinds = {key: d.error_kind for key, d in letters}
        assert kinds == {**{key: kind for key, _, kind in GARBAGE},
                         stray.prompt_id.encode(): "wrong_model"}
        for _, d in letters:
            assert d.source_topic == model_topic(models[0]) and d.error
        assert next(d for k, d in letters if k == b"g-json").raw_bytes() == b"{not json"

        assert await read_all(kafka_bootstrap, settings.feedback) == []
        stats = worker.stats
        assert sum(s.duplicates_skipped for s in stats.values()) == 5
        assert stats[models[0]].dead_lettered == 4 and stats[models[1]].dead_lettered == 0
        assert stats[models[0]].responses == stats[models[1]].responses == 25
        assert sum(s.errors for s in stats.values()) == 0

        # every record was answered, so every partition is committed up to its end
        for m in models:
            assert await committed(kafka_bootstrap, worker.group_of(m)) == \
                await end_offsets(kafka_bootstrap, model_topic(m))

    asyncio.run(main())


def test_replay_worker_publishes_recorded_cost_and_quality(
    kafka_bootstrap: str, unique: str, zeroeval: Dataset
) -> None:
    # Two real zeroeval models under unique ids, so their topics are this test's own.
    columns = [zeroeval.model_ids.index("gpt-4o-2024-05-13"), 0]
    renamed = [dataclasses.replace(zeroeval.models[j], id=f"m-{unique}-{j}") for j in columns]
    data = dataclasses.replace(
        zeroeval, models=renamed, quality=zeroeval.quality[:, columns],
        cost=zeroeval.cost[:, columns],
    )
    models = [m.id for m in renamed]
    rows = list(range(0, len(zeroeval), len(zeroeval) // 50))[:50]
    prompts = [routed(data.ids[r], models[k % 2], data.prompts[r]) for k, r in enumerate(rows)]
    row_of = {p.prompt_id: r for p, r in zip(prompts, rows, strict=True)}
    records = [(model_topic(p.model_id), p.prompt_id.encode(), encode(p)) for p in prompts]
    records += [(model_topic(p.model_id), p.prompt_id.encode(), encode(p)) for p in prompts[:5]]
    records += [(model_topic(models[1]), key, value) for key, value, _ in GARBAGE]
    settings = worker_settings(kafka_bootstrap, unique)

    async def main() -> None:
        topics = [*map(model_topic, models), settings.responses, settings.feedback,
                  settings.prompts_dlq]
        await create_topics(kafka_bootstrap, topics, partitions=2)
        await produce(kafka_bootstrap, records)
        backend = ReplayBackend(data)
        async with Worker(settings, models, lambda _m: backend) as worker:
            await eventually(lambda: processed(worker) == len(records))

        responses = [decode(ModelResponse, r.value) for r in
                     await read_all(kafka_bootstrap, settings.responses)]
        feedback = [decode(QualityFeedback, r.value) for r in
                    await read_all(kafka_bootstrap, settings.feedback)]
        assert len(responses) == len({r.prompt_id for r in responses}) == 50
        assert len(feedback) == len(responses)
        for r in responses:
            j = models.index(r.model_id)
            assert r.error is None
            assert r.cost_usd == float(data.cost[row_of[r.prompt_id], j])
        for f in feedback:
            row, j = row_of[f.prompt_id], models.index(f.model_id)
            assert f.quality == float(data.quality[row, j])
            assert f.source == "replay" and f.task == data.tasks[row]
        assert sum(s.duplicates_skipped for s in worker.stats.values()) == 5
        assert sum(s.feedback for s in worker.stats.values()) == 50
        assert worker.stats[models[1]].dead_lettered == 3
        assert len(await read_all(kafka_bootstrap, settings.prompts_dlq)) == 3

    asyncio.run(main())


def test_openai_worker_end_to_end_publishes_an_error_response_not_a_lost_prompt(
    kafka_bootstrap: str, unique: str
) -> None:
    model = f"m-{unique}/chat"  # '/' is unsafe: the topic is prompts.routed.m-..._chat
    prompts = [routed(f"p{i}-{unique}", model, f"question {i}") for i in range(4)]
    prompts.append(routed(f"bad-{unique}", model, "please FAIL"))

    async def handler(body: dict, n: int) -> web.Response:
        text = body["messages"][0]["content"]
        assert body["model"] == model
        return chat_error(500) if "FAIL" in text else chat_ok(f"re: {text}", 4, 6)

    async def main() -> None:
        async with ChatServer(handler) as server:
            settings = worker_settings(
                kafka_bootstrap, unique, openai_base_url=server.base_url, max_retries=2,
                backoff_s=0.01, timeout_s=5.0, known_models=[model],
            )
            await create_topics(kafka_bootstrap, [model_topic(model), settings.responses])
            await produce(
                kafka_bootstrap,
                [(model_topic(model), p.prompt_id.encode(), encode(p)) for p in prompts],
            )
            stop = asyncio.Event()
            serving = asyncio.create_task(serve(settings, [model], "openai", stop_event=stop))

            async def five_responses() -> list:
                assert not serving.done(), serving
                found = await read_all(kafka_bootstrap, settings.responses)
                return found if len(found) >= 5 else []

            try:
                records = await eventually(five_responses)
            finally:
                stop.set()
                stats = await asyncio.wait_for(serving, 60)

        responses = {r.key.decode(): decode(ModelResponse, r.value) for r in records}
        assert len(records) == len(responses) == 5
        bad = responses.pop(f"bad-{unique}")
        assert bad.error == "HTTP 500 after 3 attempts" and bad.text == ""
        for i, p in enumerate(prompts[:4]):
            r = responses[p.prompt_id]
            assert r.error is None and r.text == f"re: question {i}"
            assert (r.tokens_in, r.tokens_out) == (4, 6)
        assert len(server.requests) == 4 + 3
        assert stats[model]["responses"] == 5 and stats[model]["errors"] == 1

    asyncio.run(main())


def test_a_failing_backend_is_reported_unhealthy_then_healthy_on_the_control_topic(
    kafka_bootstrap: str, unique: str
) -> None:
    model = f"h-{unique}"
    failing = [routed(f"f{i}-{unique}", model, f"FAIL {i}") for i in range(3)]
    recovered = routed(f"ok-{unique}", model, "fine now")

    async def handler(body: dict, n: int) -> web.Response:
        text = body["messages"][0]["content"]
        return chat_error(503) if "FAIL" in text else chat_ok("ok", 1, 1)

    async def main() -> list:
        async with ChatServer(handler) as server:
            settings = worker_settings(
                kafka_bootstrap, unique, openai_base_url=server.base_url, max_retries=0,
                timeout_s=5.0, control=f"control-{unique}", unhealthy_after=2, health_ttl_s=30.0,
                known_models=[model],
            )
            settings.concurrency = 1  # outcomes in the order produced
            await create_topics(kafka_bootstrap, [model_topic(model), settings.responses,
                                                  settings.control])
            await produce(kafka_bootstrap, [(model_topic(model), p.prompt_id.encode(), encode(p))
                                            for p in failing])
            stop = asyncio.Event()
            serving = asyncio.create_task(serve(settings, [model], "openai", stop_event=stop))

            async def reports(n: int) -> list:
                assert not serving.done(), serving
                found = [r for r in await read_all(kafka_bootstrap, settings.control)
                         if is_health_key(r.key)]  # not the worker's announcements
                return found if len(found) >= n else []

            try:
                await eventually(lambda: reports(1))
                await produce(kafka_bootstrap, [(model_topic(model), recovered.prompt_id.encode(),
                                                 encode(recovered))])
                found = await eventually(lambda: reports(2))
            finally:
                stop.set()
                await asyncio.wait_for(serving, 60)
        return found

    records = asyncio.run(main())
    assert len(records) == 2 and {r.key for r in records} == {f"health:{model}".encode()}
    down, up = (decode(ModelHealth, r.value) for r in records)
    # the second error in a row reports; the third, within ttl/2 of it, does not report again
    assert (down.model_id, down.healthy, down.consecutive_errors) == (model, False, 2)
    assert down.error == "HTTP 503 after 1 attempt" and down.ttl_s == 30.0
    assert (up.healthy, up.consecutive_errors) == (True, 0) and up.worker == down.worker


def test_a_health_report_that_cannot_be_sent_is_logged_and_answering_goes_on(caplog) -> None:
    from aiokafka.errors import KafkaTimeoutError

    class Producer:  # a cluster without the control topic, and no auto-creation
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, topic: str, value: bytes, key: bytes | None = None, headers=None):
            if topic == "control-x":
                raise KafkaTimeoutError()
            self.sent.append(topic)
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    settings = WorkerSettings(kafka_bootstrap="127.0.0.1:1", responses="r", control="control-x",
                              unhealthy_after=1)
    worker = Worker(settings, ["m"], lambda _m: FakeBackend())  # type: ignore[arg-type,return-value]
    loop = worker._loops["m"]

    async def main() -> list[str]:
        worker.publisher.producer = Producer()  # type: ignore[assignment]
        for i in range(3):
            failed = Completion("", 1, 0, 0.0, 1.0, error="x")
            await loop._publish(routed(f"p{i}", "m", "q"), failed)
        return worker.publisher.producer.sent

    assert asyncio.run(main()) == ["r"] * 3
    assert (loop.stats.responses, loop.stats.errors) == (3, 3)
    assert "could not report model m unhealthy on control-x (KafkaTimeoutError)" in caplog.text
