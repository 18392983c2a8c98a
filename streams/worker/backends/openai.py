"""An OpenAI-compatible chat-completions endpoint as a worker backend (vLLM, OpenAI, a gateway).

httpx exceptions handled by OpenAIBackend (all under httpx.HTTPError):
    TimeoutException (ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout)   retried
    TransportError (ConnectError, ReadError, RemoteProtocolError, ...)          retried
    HTTP 429 and 5xx responses                                                   retried
    other HTTP 4xx responses, an unparsable 2xx body                             not retried

A per-prompt failure is returned as a Completion with `error` set, never raised; `retryable` is set
when the retries ran out (the worker may fail over to another model), not for a 4xx. The
failure's HTTP status (0 when no answer came) and error type go with it.

The request is the routed prompt's conversation and its generation parameters, as they came; the
worker's `max_tokens` is added only when the request asks for no length. The answer is the
assistant message (content and tool calls), its finish reason and the backend's token counts.

A streamed request (`deltas` given) is sent with `stream: true` and usage asked for; each
server-sent chunk's content and tool-call pieces go to `deltas` as they come, and the answer is
assembled from them. A failure before the first piece is retried as any other; after it, the
client has part of an answer, so it is an error that is neither retried nor failed over.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
from pydantic import SecretStr, ValidationError

from ipr_model.serving.costs import Prices
from schemas import RoutedPrompt
from schemas import limits as L
from schemas.chat import AssistantMessage, FinishReason, ToolCallDelta, merge_tool_calls
from streams import tracing
from streams.retry import Backoff, retry
from streams.worker.backends.base import (
    Completion,
    Deltas,
    clip_error,
    elapsed_ms,
    prompt_tokens,
)

FINISH_REASONS = set(FinishReason.__args__)

log = logging.getLogger(__name__)


class _Retry(Exception):
    """A retriable failure of one attempt; `delay` is the server's Retry-After, if any."""

    def __init__(self, reason: str, delay: float | None = None, status: int = 0,
                 kind: str = "server_error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.status = status
        self.kind = kind


class _Fatal(Exception):
    """A failure that another attempt would not fix (a 4xx, an unparsable answer)."""

    def __init__(self, reason: str, status: int, kind: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind


class OpenAIBackend:
    """POST `{base_url}/chat/completions` with the request's messages and parameters; bounded
    retries with backoff.

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

    def body(self, routed: RoutedPrompt) -> dict[str, Any]:
        """The chat-completions request: the conversation and the parameters, unchanged."""
        params = routed.params.for_backend() if routed.params is not None else {}
        if routed.params is None or routed.params.requested_tokens() is None:
            params["max_tokens"] = self.max_tokens
        messages = [m.model_dump(exclude_none=True) for m in routed.conversation()]
        return {"model": self.served_name or routed.model_id, "messages": messages, **params}

    async def complete(self, routed: RoutedPrompt, deltas: Deltas | None = None) -> Completion:
        began = time.monotonic()
        body = self.body(routed)
        attempts = self.max_retries + 1

        async def attempt() -> Completion:
            self.attempts += 1
            if deltas is None:
                return self._parse(routed, await self._post(body), began)
            try:
                return self._parse(routed, await self._stream(body, deltas), began)
            except _Retry as exc:
                if not deltas.started:
                    raise
                raise _Fatal(f"{exc.reason} after the stream began", exc.status,
                             exc.kind) from None

        def retrying(exc: BaseException, n: int, delay: float) -> None:
            assert isinstance(exc, _Retry)
            self.server_delays += exc.delay is not None
            log.info(
                "model %s prompt %s: %s (attempt %d/%d); retrying in %.2f s",
                routed.model_id, routed.prompt_id, exc.reason, n, attempts, delay,
            )

        try:
            return await retry(
                attempt, retry_on=_Retry, attempts=attempts,
                backoff=Backoff(self.backoff_s, self.max_backoff_s),
                asked_delay=lambda exc: exc.delay if isinstance(exc, _Retry) else None,
                on_retry=retrying,
            )
        except _Fatal as exc:
            return self._failed(routed, str(exc), began, exc.status, exc.kind)
        except _Retry as exc:
            noun = "attempt" if attempts == 1 else "attempts"
            return self._failed(routed, f"{exc.reason} after {attempts} {noun}", began,
                                exc.status, exc.kind, retryable=True)

    @contextlib.contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """A timeout or a connection error of the call as a retriable failure."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise _Retry(f"timeout ({type(exc).__name__}, {self.timeout_s:g} s)",
                         kind="timeout") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection error ({type(exc).__name__})",
                         kind="connection_error") from None

    async def _post(self, body: dict) -> Any:
        with self._transport_errors():
            response = await self.client.post(
                self.url, json=body, headers={**self._headers, **tracing.http_headers()},
                timeout=self.timeout_s,
            )
        _raise_for_status(response)
        try:
            return response.json()
        except ValueError:
            raise _Fatal(f"HTTP {response.status_code}: the body is not JSON",
                         response.status_code, "bad_response") from None

    async def _stream(self, body: dict, deltas: Deltas) -> dict:
        """POST with ``stream: true``; each piece to ``deltas``; the answer assembled in the
        shape of a chat-completions body."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        content: list[str] = []
        calls: list[ToolCallDelta] = []
        finish, usage, model = None, None, None
        headers = {**self._headers, **tracing.http_headers()}
        with self._transport_errors():
            async with self.client.stream("POST", self.url, json=body, headers=headers,
                                          timeout=self.timeout_s) as response:
                if response.status_code >= 400:
                    await response.aread()
                _raise_for_status(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    doc = _stream_event(data)
                    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else usage
                    model = doc.get("model") or model
                    for choice in doc.get("choices") or ():
                        delta = choice.get("delta") or {}
                        piece = delta.get("content")
                        pieces = [_tool_call_delta(t) for t in delta.get("tool_calls") or ()]
                        if piece or pieces:
                            content.append(piece or "")
                            calls.extend(pieces)
                            await deltas.add(piece, pieces or None)
                        finish = choice.get("finish_reason") or finish
        tool_calls = [{"id": c.id, "type": "function", "function": c.function.model_dump()}
                      for c in merge_tool_calls(calls) if c.function is not None]
        return {"choices": [{"message": {"content": "".join(content) or None,
                                         "tool_calls": tool_calls},
                             "finish_reason": finish}],
                "usage": usage, "model": model}

    def _parse(self, routed: RoutedPrompt, doc: Any, began: float) -> Completion:
        try:
            choice = doc["choices"][0]
            raw = choice["message"]
            message = AssistantMessage(content=raw.get("content"),
                                       tool_calls=raw.get("tool_calls") or None)
        except (KeyError, IndexError, TypeError, AttributeError, ValidationError) as exc:
            raise _Fatal(f"unexpected chat-completions body ({type(exc).__name__})", 200,
                         "bad_response") from None
        text = message.content or ""
        finish = choice.get("finish_reason")
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
        reported = _count(usage.get("prompt_tokens"), -1) >= 0
        tokens_in = _count(usage.get("prompt_tokens"), prompt_tokens(routed))
        tokens_out = _count(usage.get("completion_tokens"), len(text) // 4)
        cost = self.prices.cost(tokens_in, tokens_out) if self.prices is not None else 0.0
        return Completion(
            text=text[: L.MAX_RESPONSE_CHARS],
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost,
            latency_ms=elapsed_ms(began),
            message=message,
            finish_reason=finish if finish in FINISH_REASONS else None,
            usage_reported=reported,
            response_model=str(doc["model"])[: L.MAX_LABEL_CHARS] if doc.get("model") else None,
        )

    def _failed(self, routed: RoutedPrompt, error: str, began: float, status: int, kind: str,
                retryable: bool = False) -> Completion:
        log.warning("model %s prompt %s failed: %s", routed.model_id, routed.prompt_id, error)
        return Completion(
            text="", tokens_in=prompt_tokens(routed), tokens_out=0, cost_usd=0.0,
            latency_ms=elapsed_ms(began), error=clip_error(error), retryable=retryable,
            error_status=status, error_type=kind[: L.MAX_LABEL_CHARS],
        )


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retry(f"HTTP {status}", _retry_after(response.headers.get("retry-after")),
                     status, "rate_limit" if status == 429 else _error_type(response))
    if status >= 400:
        raise _Fatal(f"HTTP {status}: {_server_message(response)}", status,
                     _error_type(response, "invalid_request_error"))


def _stream_event(data: str) -> dict:
    """One server-sent event's JSON; an error event is a retriable failure (a 5xx that came
    after the 200), a body that is not a JSON object a fatal one."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise _Fatal("a streamed event is not a JSON object", 200, "bad_response")
    error = doc.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else error
        kind = error.get("type") if isinstance(error, dict) else None
        raise _Retry(f"error event in the stream: {str(message)[:300]}",
                     kind=kind if isinstance(kind, str) and kind else "server_error")
    return doc


def _tool_call_delta(raw: Any) -> ToolCallDelta:
    """A streamed tool-call piece, its known fields only (servers add their own)."""
    try:
        function = raw.get("function") or {}
        return ToolCallDelta(
            index=raw.get("index", 0), id=raw.get("id"), type=raw.get("type"),
            function={k: function[k] for k in ("name", "arguments") if function.get(k)
                      is not None} or None)
    except (AttributeError, TypeError, ValidationError) as exc:
        raise _Fatal(f"unexpected streamed tool call ({type(exc).__name__})", 200,
                     "bad_response") from None


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


def _error_type(response: httpx.Response, default: str = "server_error") -> str:
    """The `error.type` of an OpenAI-style error body, else ``default``."""
    try:
        kind = response.json()["error"]["type"]
        return kind if isinstance(kind, str) and kind.strip() else default
    except Exception:  # noqa: BLE001 - any other body
        return default


def _server_message(response: httpx.Response) -> str:
    """The `error.message` of an OpenAI-style error body, shortened; never the request."""
    try:
        doc = response.json()
        message = doc["error"]["message"] if isinstance(doc.get("error"), dict) else doc["error"]
        return str(message)[:300]
    except Exception:  # noqa: BLE001 - any other body: say nothing more than the status
        return response.reason_phrase or "error"
