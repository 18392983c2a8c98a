"""A ModelResponse as OpenAI's ``chat.completion`` object, and the ``x-ipr-*`` headers that say
how it was routed. Pure: no Kafka, no HTTP."""

from __future__ import annotations

from typing import Any

from schemas import ModelResponse, StreamChunk


def completion_id(prompt_id: str) -> str:
    return f"chatcmpl-{prompt_id}"


def chat_completion(response: ModelResponse, created: int) -> dict[str, Any]:
    """The answer in the chat-completions format; ``model`` is the model that answered."""
    message: dict[str, Any] = {"role": "assistant", "content": response.text, "refusal": None}
    finish = response.finish_reason
    if response.message is not None:
        message["content"] = response.message.content
        if response.message.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in response.message.tool_calls]
            finish = finish or "tool_calls"
    return {
        "id": completion_id(response.prompt_id),
        "object": "chat.completion",
        "created": created,
        "model": response.model_id,
        "choices": [{"index": 0, "message": message, "finish_reason": finish or "stop",
                     "logprobs": None}],
        "usage": usage_of(response),
    }


def usage_of(response: ModelResponse) -> dict[str, int]:
    """The backend's token counts, else the worker's estimate."""
    if response.usage is not None:
        return response.usage.model_dump()
    return {"prompt_tokens": response.tokens_in, "completion_tokens": response.tokens_out,
            "total_tokens": response.tokens_in + response.tokens_out}


def ipr_headers(prompt_id: str, response: ModelResponse | StreamChunk | None = None,
                tolerance: float | None = None) -> dict[str, str]:
    """``x-ipr-prompt-id`` always; the model, its version and attempts with an answer (or a
    stream's first chunk), its cost with an answer; ``x-ipr-tolerance`` when the request set one
    (otherwise the router's default applied)."""
    headers = {"x-ipr-prompt-id": prompt_id}
    if tolerance is not None:
        headers["x-ipr-tolerance"] = f"{tolerance:g}"
    if response is not None:
        headers["x-ipr-model"] = response.model_id
        headers["x-ipr-attempts"] = str(response.attempt)
        if isinstance(response, ModelResponse):
            headers["x-ipr-cost-usd"] = f"{response.cost_usd:.8f}"
        if response.router_version is not None:
            headers["x-ipr-router-version"] = response.router_version
    return headers


def model_list(alias: str, models: list[str], created: int) -> dict[str, Any]:
    """``GET /v1/models``: the alias first, then the artifacts' models."""
    return {"object": "list", "data": [
        {"id": m, "object": "model", "created": created, "owned_by": "ipr"}
        for m in [alias, *models]]}
