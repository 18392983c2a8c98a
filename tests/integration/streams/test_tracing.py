"""One prompt, one trace across processes, read back from a real trace backend (Zipkin's server):
a prompt produced with a ``traceparent`` is continued by the router's process, the worker's
(and its model call) and the feedback service's, each span the child of the one before, with
the messaging and GenAI attributes and no prompt text; a prompt without one starts a trace of
its own at the router; a bad prompt's span is marked failed."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
from aiokafka import AIOKafkaProducer

from benchmarks.zipkin import Zipkin
from schemas import PromptRequest, encode
from schemas.topics import ROUTED_PREFIX
from streams.kafka.clients import aiokafka_config
from streams.kafka.settings import KafkaSettings
from tests.integration.streams.kafka import system
from tests.waits import wait_until


@pytest.fixture
def env(kafka_bootstrap, unique, tmp_path, monkeypatch) -> KafkaSettings:
    for k, v in {"IPR_KAFKA_BOOTSTRAP": kafka_bootstrap, "IPR_ROUTER_APP_ID": f"router-{unique}",
                 "IPR_ROUTER_WEB_ENABLED": "false", "IPR_ROUTER_DATA_DIR": str(tmp_path / "r"),
                 "IPR_WORKER_GROUP_PREFIX": f"worker-{unique}",
                 "IPR_FEEDBACK_APP_ID": f"feedback-{unique}",
                 "IPR_FEEDBACK_DATA_DIR": str(tmp_path / "f"),
                 "IPR_PROMPTS_IN": f"prompts.in.{unique}", "IPR_PROMPTS_DLQ": f"dlq.{unique}",
                 "IPR_DECISIONS": f"decisions.{unique}", "IPR_RESPONSES": f"responses.{unique}",
                 "IPR_FEEDBACK": f"feedback.{unique}", "IPR_CONTROL": f"control.{unique}"}.items():
        monkeypatch.setenv(k, v)
    return KafkaSettings()


async def send(settings: KafkaSettings, events: list[tuple[bytes, bytes, list | None]]) -> None:
    producer = AIOKafkaProducer(**aiokafka_config(settings), acks="all")
    await producer.start()
    try:
        for key, value, headers in events:
            await producer.send_and_wait(settings.prompts_in, value, key=key, headers=headers)
    finally:
        await producer.stop()


def by_service(spans: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in spans:
        out.setdefault(s["localEndpoint"]["serviceName"], []).append(s)
    return out


def key(span: dict) -> str | None:
    return span.get("tags", {}).get("messaging.kafka.message.key")


def own_trace(zipkin: Zipkin, wanted: str) -> dict[str, list[dict]] | None:
    """The trace whose router span processed the record keyed ``wanted``, once the worker's
    spans are in it too."""
    for spans in zipkin.traces("ipr-router"):
        if any(key(s) == wanted for s in spans):
            got = by_service(spans)
            return got if "ipr-worker" in got else None
    return None


def test_a_prompt_is_one_trace_through_router_worker_and_feedback(
    env, unique, small_artifacts, data_dir, zeroeval, tmp_path, monkeypatch
):
    models, _ = system.prepare(env, small_artifacts)
    text = zeroeval.split("test").prompts[0]
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = [("traceparent", f"00-{trace_id}-{parent_id}-01".encode())]
    traced = (b"t-1", encode(PromptRequest(prompt_id="t-1", text=text)), traceparent)
    untraced = (b"u-1", encode(PromptRequest(prompt_id="u-1", text=text)), None)
    bad = (b"b-1", b'{"prompt_id": "b-1"}', traceparent)
    with Zipkin(tmp_path / "zipkin.log") as zipkin:
        for k, v in zipkin.env().items():
            monkeypatch.setenv(k, v)
        services = system.start(small_artifacts, data_dir / "zeroeval", models, tmp_path)
        try:
            system.wait_until_up(services, models)
            asyncio.run(send(env, [traced, untraced, bad]))

            def whole() -> dict[str, list[dict]] | None:
                for s in services:
                    assert s.alive(), s.log_tail()
                got = by_service(zipkin.trace(trace_id))
                names = {s["name"] for spans in got.values() for s in spans}
                done = ({"ipr-router", "ipr-worker", "ipr-feedback"} <= got.keys()
                        and {"t-1", "b-1"} <= {key(s) for s in got["ipr-router"]}
                        and any(n.startswith("chat ") for n in names))
                return got if done else None

            trace = wait_until(whole, 180, lambda: zipkin.trace(trace_id))
            own = wait_until(lambda: own_trace(zipkin, "u-1"), 60, lambda: "no trace keyed u-1")
        finally:
            for s in services:
                s.stop()
    spans = [s for group in trace.values() for s in group]
    assert {s["traceId"] for s in spans} == {trace_id}
    assert text[:40] not in json.dumps(spans)  # never the prompt's text

    (routed,) = [s for s in trace["ipr-router"] if key(s) == "t-1"]
    (dead,) = [s for s in trace["ipr-router"] if key(s) == "b-1"]
    assert routed["parentId"] == parent_id and routed["kind"] == "CONSUMER"
    tags = routed["tags"]
    assert tags["messaging.system"] == "kafka"
    assert tags["messaging.destination.name"] == env.prompts_in
    assert tags["messaging.consumer.group.name"] == f"router-{unique}"
    assert int(tags["messaging.kafka.offset"]) >= 0 and "messaging.destination.partition.id" \
        in tags
    model = tags["ipr.model"]
    assert model in models
    assert dead["parentId"] == parent_id and dead["tags"]["error.type"] == "validation"

    (worker,) = [s for s in trace["ipr-worker"] if s["kind"] == "CONSUMER"]
    assert worker["parentId"] == routed["id"]
    assert worker["tags"]["messaging.consumer.group.name"] == \
        f"worker-{unique}.{worker['tags']['messaging.destination.name'][len(ROUTED_PREFIX):]}"
    (call,) = [s for s in trace["ipr-worker"] if s["kind"] == "CLIENT"]
    assert call["parentId"] == worker["id"] and call["name"] == f"chat {model}"
    assert call["tags"]["gen_ai.request.model"] == model
    assert call["tags"]["gen_ai.operation.name"] == "chat"
    assert int(call["tags"]["gen_ai.usage.input_tokens"]) > 0

    (start,) = own["ipr-router"]  # no traceparent: the router's span begins the trace
    assert "parentId" not in start and start["traceId"] != trace_id
    assert {s["parentId"] for s in own["ipr-worker"]} >= {start["id"]}

    (label,) = trace["ipr-feedback"]
    assert label["parentId"] == worker["id"] and label["kind"] == "CONSUMER"
    assert label["tags"]["messaging.destination.name"] == env.feedback
    assert label["tags"]["ipr.model"] == model
