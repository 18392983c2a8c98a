"""An OpenAI-compatible chat-completions endpoint as a worker backend (vLLM, OpenAI, a gateway).

httpx exceptions handled by OpenAIBackend (all under httpx.HTTPError):
    TimeoutException (ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout)   retried
    TransportError (ConnectError, ReadError, RemoteProtocolError, ...)          retried
    HTTP 429 and 5xx responses                                                   retried
    other HTTP 4xx responses, an unparsable 2xx body                             not retried

A per-prompt failure is returned as a Completion with `error` set, never raised; `retryable` is set
when the retries ran out (the worker may fail over to another model), not for a 4xx.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from typing import Any

import httpx
from pydantic import SecretStr

from ipr_model.serving.costs import Prices
from ipr_model.training.datasets import estimate_tokens
from schemas import RoutedPrompt
from schemas import limits as L
from streams.worker.backends.base import Completion, clip_error, elapsed_ms

log = logging.getLogger(__name__)


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
        self.server_delays = 0  # retries that waited the server's Retry-After (all calls)

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
            self.server_delays += server_delay is not None
            delay = min(max(0.0, delay), self.max_backoff_s)
            log.info(
                "model %s prompt %s: %s (attempt %d/%d); retrying in %.2f s",
                routed.model_id, routed.prompt_id, reason, attempt, attempts, delay,
            )
            await asyncio.sleep(delay)
        noun = "attempt" if attempts == 1 else "attempts"
        return self._failed(routed, f"{reason} after {attempts} {noun}", began, retryable=True)

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
            latency_ms=elapsed_ms(began),
        )

    def _failed(
        self, routed: RoutedPrompt, error: str, began: float, retryable: bool = False
    ) -> Completion:
        log.warning("model %s prompt %s failed: %s", routed.model_id, routed.prompt_id, error)
        return Completion(
            text="", tokens_in=estimate_tokens(routed.text), tokens_out=0, cost_usd=0.0,
            latency_ms=elapsed_ms(began), error=clip_error(error), retryable=retryable,
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
