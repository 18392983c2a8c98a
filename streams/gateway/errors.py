"""Errors in OpenAI's format, and what a dead letter's kind means to an HTTP client.

Every error the gateway answers is ``{"error": {"message", "type", "param", "code"}}``, the body
OpenAI's API and its SDKs expect, with a status a client can act on: 400 a request to fix, 401 a
key to fix, 404 a model or prompt that does not exist, 413 a body too large, 429 a budget spent,
502 a backend or routing failure, 504 no answer in time.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import IprError

# error_kind of a dead letter (router, worker, codec) -> (HTTP status, OpenAI error type)
_DEAD_LETTER_STATUS: dict[str, tuple[int, str]] = {
    "budget_exceeded": (429, "insufficient_quota"),
    "budget_exhausted": (429, "insufficient_quota"),
    "unknown_model": (404, "invalid_request_error"),
    "not_allowed": (403, "permission_error"),
    "max_tokens_above_cap": (400, "invalid_request_error"),
    "unsupported": (400, "invalid_request_error"),
    "validation": (400, "invalid_request_error"),
    "key_mismatch": (400, "invalid_request_error"),
    "too_large": (413, "invalid_request_error"),
    "routing_error": (502, "api_error"),
    "wrong_model": (502, "api_error"),
}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
          502: "api_error", 503: "api_error", 504: "timeout"}


class ApiError(IprError):
    """An error answered to the client: status, message, and OpenAI's type, param and code."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, type_: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or _TYPES.get(status, "api_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def dead_letter_error(kind: str, error: str, prompt_id: str,
                      headers: dict[str, str] | None = None) -> ApiError:
    """The answer to a request the router or a worker dead-lettered: its kind as the code."""
    status, type_ = _DEAD_LETTER_STATUS.get(kind, (400, "invalid_request_error"))
    return ApiError(status, f"prompt {prompt_id} refused ({kind}): {error}", code=kind,
                    type_=type_, headers=headers)


def backend_error(prompt_id: str, model_id: str, error: str, status: int | None,
                  type_: str | None, headers: dict[str, str] | None = None) -> ApiError:
    """A ModelResponse with an error: the backend failed (after retries and failover)."""
    upstream = f" (HTTP {status})" if status else ""
    return ApiError(502, f"model {model_id} failed prompt {prompt_id}{upstream}: {error}",
                    code=type_ or "backend_error", type_="api_error", headers=headers)


def timeout_error(prompt_id: str, timeout_s: float,
                  headers: dict[str, str] | None = None) -> ApiError:
    return ApiError(504, f"no answer to prompt {prompt_id} within {timeout_s:g} s; it may still "
                    "be answered on responses.out", code="timeout", headers=headers)
