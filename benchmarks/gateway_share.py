"""The demo's share of prompts sent over HTTP: ``ipr gateway`` called with the official ``openai``
SDK, every other request streamed, beside the prompts produced to Kafka.

Each request carries an ``Idempotency-Key`` of ``{run}:{row id}``, so its prompt id is known in
advance (``idempotent_prompt_id``) and its answer can be found on ``responses.out`` too: the HTTP
figures and the topic reconcile.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from benchmarks.processes import Service
from ipr_model.evaluation.stats import percentiles
from ipr_model.training.datasets import Dataset
from streams.gateway.requests import idempotent_prompt_id
from streams.kafka.clients import Kafka, aiokafka_config
from streams.kafka.local import free_port


async def wait_healthy(gateway: Service, url: str, timeout: float = 180.0) -> None:
    """Until the gateway's /health is 200 (its reply channel positioned)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if not gateway.alive():
                raise RuntimeError(f"the gateway exited:\n{gateway.log_tail()}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway was not ready within {timeout:.0f} s")
            await asyncio.sleep(0.3)


async def count_keys(kafka: Kafka, topic: str, keys: set[str], timeout: float) -> int:
    """How many of ``keys`` ``topic`` holds a record of (read until all or the timeout)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, **aiokafka_config(kafka), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while seen < keys and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen.update(k for r in records
                            if (k := (r.key or b"").decode(errors="replace")) in keys)
    finally:
        await consumer.stop()
    return len(seen)


@dataclass
class Answer:
    row: int
    prompt_id: str
    streamed: bool
    model: str | None = None
    text: str = ""
    error: str | None = None
    latency_ms: float = 0.0
    first_token_ms: float | None = None  # streamed only
    chunks: int = 0


@dataclass
class Share:
    answers: list[Answer] = field(default_factory=list)
    on_responses_out: int = 0  # of their prompt ids


def split_share(test: Dataset, share: float) -> tuple[Dataset, Dataset]:
    """(the prompts for Kafka, every 1/share-th for the gateway)."""
    every = round(1 / share) if share > 0 else 0
    http = [i for i in range(len(test)) if every and i % every == every - 1]
    return test.subset([i for i in range(len(test)) if i not in set(http)]), test.subset(http)


def gateway_service(artifacts: Path, env: dict[str, str], instance: str, log_dir: Path) -> Service:
    """``ipr gateway`` on a free port (``service.url``)."""
    port = free_port()
    service = Service("gateway", ["gateway", "--port", str(port), "--artifacts", str(artifacts)],
                      {**env, "IPR_GATEWAY_INSTANCE_ID": instance}, log_dir)
    service.url = f"http://127.0.0.1:{port}"
    return service


async def send_and_count(gateway: Service, kafka: Kafka, responses: str, data: Dataset, run: str,
                         rate: float) -> Share:
    """Once the gateway is ready, ``data``'s prompts through it; then how many of their answers
    are on ``responses`` too."""
    await wait_healthy(gateway, gateway.url + "/health")
    share = await send_share(gateway.url + "/v1", data, list(range(len(data))), run, rate)
    share.on_responses_out = await count_keys(kafka, responses,
                                              {a.prompt_id for a in share.answers}, 60.0)
    return share


async def _one(client: openai.AsyncOpenAI, data: Dataset, row: int, run: str,
               streamed: bool) -> Answer:
    key = f"{run}:{data.ids[row]}"
    out = Answer(row, idempotent_prompt_id(None, key), streamed)
    messages = [{"role": "user", "content": data.prompts[row]}]
    began = time.perf_counter()
    try:
        if streamed:
            stream = await client.chat.completions.create(
                model="ipr", messages=messages, stream=True,
                extra_headers={"Idempotency-Key": key})
            pieces = []
            async for chunk in stream:
                out.model = chunk.model
                if chunk.choices and chunk.choices[0].delta.content:
                    if out.first_token_ms is None:
                        out.first_token_ms = (time.perf_counter() - began) * 1000
                    pieces.append(chunk.choices[0].delta.content)
                    out.chunks += 1
            out.text = "".join(pieces)
        else:
            done = await client.chat.completions.create(
                model="ipr", messages=messages, extra_headers={"Idempotency-Key": key})
            out.model, out.text = done.model, done.choices[0].message.content or ""
    except openai.APIError as e:
        out.error = f"{type(e).__name__}: {str(e)[:200]}"
    out.latency_ms = (time.perf_counter() - began) * 1000
    return out


async def send_share(base_url: str, data: Dataset, rows: list[int], run: str, rate: float,
                     concurrency: int = 16) -> Share:
    """Send ``rows`` at ``rate`` per second (0: at once, ``concurrency`` at a time), every other
    one streamed."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="demo", max_retries=0, timeout=300)
    gate = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()

    async def paced(i: int, row: int) -> Answer:
        if rate > 0:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        async with gate:
            return await _one(client, data, row, run, streamed=i % 2 == 1)

    try:
        answers = await asyncio.gather(*(paced(i, r) for i, r in enumerate(rows)))
    finally:
        await client.close()
    return Share(list(answers))


def summarize_share(share: Share, data: Dataset) -> dict:
    """What the HTTP path did, beside the Kafka path's figures."""
    ok = [a for a in share.answers if a.error is None]
    quality = [float(data.quality[a.row, data.model_ids.index(a.model)]) for a in ok
               if a.model in data.model_ids]
    return {
        "sent": len(share.answers),
        "answered": len(ok),
        "streamed": sum(a.streamed for a in ok),
        "errors": sorted({a.error for a in share.answers if a.error})[:5],
        "on_responses_out": share.on_responses_out,
        "quality": sum(quality) / len(quality) if quality else None,
        "latency_ms": percentiles([a.latency_ms for a in ok]),
        "first_token_ms": percentiles([a.first_token_ms for a in ok
                                       if a.first_token_ms is not None]),
        "chunks_per_stream": percentiles([a.chunks for a in ok if a.streamed]),
    }
