"""LLM backends of the workers: something that answers one RoutedPrompt.

    Backend        the protocol: `async complete(routed) -> Completion`, optional `aclose()`
    OpenAIBackend  any OpenAI-compatible chat-completions endpoint (vLLM, OpenAI, a gateway)
    ReplayBackend  answers from a dataset's recorded outcomes (cost and quality), for the demo
                   and the benchmarks

A backend never raises for a per-prompt failure: it returns a Completion with `error` set, so the
worker publishes an error response instead of losing the prompt. Prompt text and answers are user
data: they are never logged.

httpx exceptions handled by OpenAIBackend (all under httpx.HTTPError):
    TimeoutException (ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout)   retried
    TransportError (ConnectError, ReadError, RemoteProtocolError, ...)          retried
    HTTP 429 and 5xx responses                                                   retried
    other HTTP 4xx responses, an unparsable 2xx body                             not retried
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx
from pydantic import SecretStr

from ipr_model.datasets import Dataset, estimate_tokens
from schemas import RoutedPrompt
from schemas import limits as L

log = logging.getLogger(__name__)

MTOK = 1_000_000.0
REPLAY_UNKNOWN_PROMPT = "prompt_id not in replay dataset"


@dataclass
class Completion:
    """One answer (or failure) of a backend."""

    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float
    error: str | None = None
    quality: float | None = None  # a recorded quality label (replay only)
    task: str | None = None  # the prompt's task, when the backend knows it (replay only)


@runtime_checkable
class Backend(Protocol):
    async def complete(self, routed: RoutedPrompt) -> Completion: ...


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, to compute a call's cost from the `usage` the endpoint reports."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_usd_per_mtok + tokens_out * self.output_usd_per_mtok) / MTOK


def _elapsed_ms(began: float) -> float:
    return max(0.0, (time.monotonic() - began) * 1000.0)


def _clip_error(message: str) -> str:
    return (message or "unknown error")[: L.MAX_ERROR_CHARS]


# ------------------------------------------------------------------------------------- OpenAI


class _Retry(Exception):
    """A retriable failure of one attempt; `delay` is the server's Retry-After, if any."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class _Fatal(Exception):
    """A failure that another attempt would not fix (a 4xx, an unparsable answer)."""


class OpenAIBackend:
    """POST `{base_url}/chat/completions` with one user message; bounded retries with backoff.

    Attempts = max_retries + 1. Before retry k (k = 1, 2, ...) it sleeps backoff_s * 2**(k-1), or
    the server's Retry-After when present; either capped at max_backoff_s. `timeout_s` bounds each
    attempt. One httpx.AsyncClient is shared by every call (pass `client` to share it between
    backends; a client passed in is not closed by `aclose`).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr | None = None,
        *,
        served_name: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_tokens: int = 1024,
        prices: Prices | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.served_name = served_name
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_tokens = max_tokens
        self.prices = prices
        self._owns_client = client is None
        self._client = client
        self.attempts = 0  # HTTP attempts made, all calls together (for tests and stats)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # created lazily, inside the running loop
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        return self._client

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def complete(self, routed: RoutedPrompt) -> Completion:
        began = time.monotonic()
        body = {
            "model": self.served_name or routed.model_id,
            "messages": [{"role": "user", "content": routed.text}],
            "max_tokens": self.max_tokens,
        }
        attempts = self.max_retries + 1
        reason = "no attempt made"
        for attempt in range(1, attempts + 1):
            self.attempts += 1
            try:
                return self._parse(routed, await self._post(body), began)
            except _Fatal as exc:
                return self._failed(routed, str(exc), began)
            except _Retry as exc:
                reason, server_delay = exc.reason, exc.delay
            if attempt == attempts:
                break
            delay = self.backoff_s * 2 ** (attempt - 1) if server_delay is None else server_delay
            delay = min(max(0.0, delay), self.max_backoff_s)
            log.info(
                "model %s prompt %s: %s (attempt %d/%d); retrying in %.2f s",
                routed.model_id, routed.prompt_id, reason, attempt, attempts, delay,
            )
            await asyncio.sleep(delay)
        noun = "attempt" if attempts == 1 else "attempts"
        return self._failed(routed, f"{reason} after {attempts} {noun}", began)

    async def _post(self, body: dict) -> Any:
        try:
            response = await self.client.post(
                self.url, json=body, headers=self._headers, timeout=self.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise _Retry(f"timeout ({type(exc).__name__}, {self.timeout_s:g} s)") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection error ({type(exc).__name__})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}", _retry_after(response.headers.get("retry-after")))
        if status >= 400:
            raise _Fatal(f"HTTP {status}: {_server_message(response)}")
        try:
            return response.json()
        except ValueError:
            raise _Fatal(f"HTTP {status}: the body is not JSON") from None

    def _parse(self, routed: RoutedPrompt, doc: Any, began: float) -> Completion:
        try:
            message = doc["choices"][0]["message"]
            text = message.get("content") or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise _Fatal(
                f"unexpected chat-completions body ({type(exc).__name__}: {exc})"
            ) from None
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
        tokens_in = _count(usage.get("prompt_tokens"), estimate_tokens(routed.text))
        tokens_out = _count(usage.get("completion_tokens"), len(text) // 4)
        cost = self.prices.cost(tokens_in, tokens_out) if self.prices is not None else 0.0
        return Completion(
            text=text[: L.MAX_RESPONSE_CHARS],
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            latency_ms=_elapsed_ms(began),
        )

    def _failed(self, routed: RoutedPrompt, error: str, began: float) -> Completion:
        log.warning("model %s prompt %s failed: %s", routed.model_id, routed.prompt_id, error)
        return Completion(
            text="", tokens_in=estimate_tokens(routed.text), tokens_out=0, cost_usd=0.0,
            latency_ms=_elapsed_ms(began), error=_clip_error(error),
        )


def _count(value: Any, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return default


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: httpx.Response) -> str:
    """The `error.message` of an OpenAI-style error body, shortened; never the request."""
    try:
        doc = response.json()
        message = doc["error"]["message"] if isinstance(doc.get("error"), dict) else doc["error"]
        return str(message)[:300]
    except Exception:  # noqa: BLE001 - any other body: say nothing more than the status
        return response.reason_phrase or "error"


# ------------------------------------------------------------------------------------- Replay


Degrade = Callable[[str, str, str], bool]  # (model_id, task, prompt_id) -> report quality 0.0


class ReplayBackend:
    """Answers from a dataset's recorded outcomes: the recorded cost and quality of that model.

    The prompt is found by prompt_id (the demo uses the dataset's row ids), else by the sha256 of
    its text. tokens_in is the prompt's chars/4; tokens_out is backed out of the recorded cost
    where the dataset has prices, else 0. `degrade(model_id, task, prompt_id)`, when true, reports
    quality 0.0 instead of the recorded one (a model that degrades on one task, for drift tests).
    `latency_s` simulates the call's duration.
    """

    def __init__(
        self, dataset: Dataset, degrade: Degrade | None = None, *, latency_s: float = 0.0
    ) -> None:
        self.dataset = dataset
        self.degrade = degrade
        self.latency_s = latency_s
        self._row_by_id = {row_id: i for i, row_id in enumerate(dataset.ids)}
        self._row_by_text: dict[str, int] = {}
        for i, text in enumerate(dataset.prompts):
            self._row_by_text.setdefault(_sha256(text), i)
        self._column = {m: j for j, m in enumerate(dataset.model_ids)}
        self._prices = {
            m.id: Prices(m.input_usd_per_mtok, m.output_usd_per_mtok)
            for m in dataset.models
            if m.input_usd_per_mtok is not None and m.output_usd_per_mtok
        }

    def row_of(self, routed: RoutedPrompt) -> int | None:
        row = self._row_by_id.get(routed.prompt_id)
        return row if row is not None else self._row_by_text.get(_sha256(routed.text))

    async def complete(self, routed: RoutedPrompt) -> Completion:
        began = time.monotonic()
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        tokens_in = estimate_tokens(routed.text)
        row, column = self.row_of(routed), self._column.get(routed.model_id)
        error = None
        if row is None:
            error = REPLAY_UNKNOWN_PROMPT
        elif column is None:
            error = f"model {routed.model_id!r} not in replay dataset {self.dataset.name!r}"
        if error is not None:
            return Completion(
                text="", tokens_in=tokens_in, tokens_out=0, cost_usd=0.0,
                latency_ms=_elapsed_ms(began), error=error,
            )
        assert row is not None and column is not None
        task = self.dataset.tasks[row]
        cost = float(self.dataset.cost[row, column])
        quality = float(self.dataset.quality[row, column])
        if self.degrade is not None and self.degrade(routed.model_id, task, routed.prompt_id):
            quality = 0.0
        prices = self._prices.get(routed.model_id)
        tokens_out = 0
        if prices is not None:
            spent_out = cost - tokens_in * prices.input_usd_per_mtok / MTOK
            tokens_out = int(round(max(0.0, spent_out) * MTOK / prices.output_usd_per_mtok))
        return Completion(
            text=f"[replay] recorded answer (quality={quality:g})",
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            latency_ms=_elapsed_ms(began),
            quality=quality,
            task=task[: L.MAX_LABEL_CHARS] or None,
        )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
