"""The gateway's integration stack on a real Kafka: a router process (``ipr router``), workers
for every model in this process calling LiteLLM's proxy (a real OpenAI-compatible server this
project did not write; mock answers), and two gateway processes (``ipr gateway``): ``a`` without
keys, ``b`` with a keys file and a short request timeout. What the workers sent to LiteLLM is
recorded, to check that a request reaches the backend as the client wrote it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.processes import Service, router_env
from ipr_model.artifacts.manifest import read_manifest
from schemas.topics import model_topic
from streams.gateway.keys import add_key
from streams.kafka.admin import create_topics
from streams.kafka.local import free_port
from streams.worker.backends.openai import OpenAIBackend
from streams.worker.service import Worker
from streams.worker.settings import WorkerSettings
from tests.integration.streams.worker.litellm_server import model_entry
from tests.integration.streams.worker.test_failover import prepare_worker_topics

SLOW_S = 20  # the slow model's delay: well above gateway b's timeout
B_TIMEOUT_S = 8
TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def topics(u: str) -> dict[str, str]:
    return {"IPR_PROMPTS_IN": f"prompts.in.{u}", "IPR_PROMPTS_DLQ": f"dlq.{u}",
            "IPR_DECISIONS": f"decisions.{u}", "IPR_RESPONSES": f"responses.{u}",
            "IPR_POLICIES": f"policies.{u}", "IPR_SPEND": f"spend.{u}",
            "IPR_CONTROL": f"control.{u}", "IPR_FEEDBACK": f"feedback.{u}"}


@dataclass
class Stack:
    u: str
    bootstrap: str
    ids: list[str]
    env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)  # tenant -> key
    urls: dict[str, str] = field(default_factory=dict)  # gateway -> base url (…/v1)
    services: dict[str, Service] = field(default_factory=dict)
    received: list[dict] = field(default_factory=list)  # bodies the workers sent to LiteLLM
    artifacts: Path | None = None

    @property
    def tool_model(self) -> str:
        return self.ids[0]

    @property
    def slow_model(self) -> str:
        return self.ids[-1]

    @property
    def failing_model(self) -> str:
        return self.ids[-2]

    def reply_topic(self, name: str) -> str:
        return f"gateway.replies.{name}-{self.u}"


def litellm_models(stack: Stack) -> list[dict]:
    out = []
    for m in stack.ids:
        if m == stack.failing_model:
            out.append(model_entry(m, "litellm.InternalServerError"))
        elif m == stack.slow_model:
            out.append(model_entry(m, f"from {m}", mock_delay=SLOW_S))
        elif m == stack.tool_model:
            out.append(model_entry(m, f"from {m}", mock_tool_calls=[TOOL_CALL]))
        else:
            out.append(model_entry(m, f"from {m}"))
    return out


class BackgroundLoop:
    """An event loop in a thread, for the workers while the tests call over HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def worker_settings(stack: Stack) -> WorkerSettings:
    t = stack.env
    return WorkerSettings(
        kafka_bootstrap=stack.bootstrap, responses=t["IPR_RESPONSES"], feedback=t["IPR_FEEDBACK"],
        prompts_dlq=t["IPR_PROMPTS_DLQ"], control=t["IPR_CONTROL"],
        group_prefix=f"worker-{stack.u}", concurrency=16, drain_timeout_s=5.0, max_retries=0,
        backoff_s=0.01, timeout_s=30.0, failover_attempts=1, unhealthy_after=1000)


async def start_workers(stack: Stack, url: str, key: str):
    async def record(request: httpx.Request) -> None:
        stack.received.append(json.loads(request.content))

    client = httpx.AsyncClient(event_hooks={"request": [record]})
    backends = {m: OpenAIBackend(url, key, client=client, max_retries=0, timeout_s=30.0)
                for m in stack.ids}
    worker = Worker(worker_settings(stack), stack.ids, backends.__getitem__)
    await worker.__aenter__()
    return worker, client


async def stop_workers(worker, client) -> None:
    await worker.__aexit__(None, None, None)
    await client.aclose()


def prepare(stack: Stack, artifacts: Path) -> None:
    t = stack.env
    asyncio.run(create_topics(stack.bootstrap, [
        t["IPR_PROMPTS_IN"], t["IPR_PROMPTS_DLQ"], t["IPR_DECISIONS"], t["IPR_RESPONSES"],
        t["IPR_FEEDBACK"], *sorted({model_topic(m) for m in stack.ids})], partitions=2))
    asyncio.run(create_topics(stack.bootstrap, [t["IPR_CONTROL"]], partitions=1))
    asyncio.run(create_topics(stack.bootstrap, [t["IPR_POLICIES"]], partitions=1,
                              configs={"cleanup.policy": "compact"}))
    asyncio.run(prepare_worker_topics(stack.bootstrap, worker_settings(stack), stack.ids))


def new_stack(u: str, bootstrap: str, artifacts: Path) -> Stack:
    env = {"IPR_KAFKA_BOOTSTRAP": bootstrap, "IPR_TOPIC_PARTITIONS": "2", **topics(u)}
    return Stack(u, bootstrap, list(read_manifest(artifacts).models), env)


def start_router(stack: Stack, artifacts: Path, tmp: Path) -> None:
    env = router_env(stack.bootstrap, f"router-{stack.u}", **stack.env)
    env["IPR_ROUTER_DATA_DIR"] = str(tmp / "faust-router")
    stack.services["router"] = Service(
        "router", ["router", "--artifacts", str(artifacts), "--tolerance", "0.3"], env, tmp)


def start_gateways(stack: Stack, artifacts: Path, tmp: Path) -> None:
    keys = tmp / "keys.json"
    stack.keys = {t: add_key(keys, t) for t in ("acme", "broke")}
    stack.artifacts = artifacts
    _start_gateway(stack, "a", tmp, {})
    _start_gateway(stack, "b", tmp, {"IPR_GATEWAY_KEYS_FILE": str(keys),
                                     "IPR_GATEWAY_REQUEST_TIMEOUT_S": str(B_TIMEOUT_S)})
    for name in ("a", "b"):
        wait_healthy(stack, name)


def start_gateway(stack: Stack, name: str, tmp: Path) -> str:
    """One more gateway (no keys), ready; its name."""
    _start_gateway(stack, name, tmp, {})
    wait_healthy(stack, name)
    return name


def _start_gateway(stack: Stack, name: str, tmp: Path, extra: dict[str, str]) -> None:
    port = free_port()
    env = {**stack.env, "IPR_GATEWAY_INSTANCE_ID": f"{name}-{stack.u}", **extra}
    stack.services[name] = Service(
        f"gateway-{name}", ["gateway", "--port", str(port), "--artifacts", str(stack.artifacts)],
        env, tmp)
    stack.urls[name] = f"http://127.0.0.1:{port}/v1"


def wait_healthy(stack: Stack, name: str, timeout: float = 120.0) -> None:
    service, url = stack.services[name], stack.urls[name].removesuffix("/v1")
    deadline = time.monotonic() + timeout
    while True:
        assert service.alive(), service.log_tail()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                assert "ipr gateway ready at" in service.log_tail()
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.3)
