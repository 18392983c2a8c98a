"""Example events and payload builders shared by the schema tests."""

import orjson

from schemas import (
    DeadLetter,
    FailedAttempt,
    ModelHealth,
    ModelResponse,
    ModelUpdate,
    PromptRequest,
    QualityFeedback,
    RoutedPrompt,
    StreamChunk,
    TenantPolicy,
    TenantReservation,
    TenantSpend,
    WorkerServing,
)


def request(**overrides):
    fields = {"prompt_id": "p-1", "text": "What is 2+2?"} | overrides
    return orjson.dumps(fields)


def routed(**overrides):
    fields = dict(
        prompt_id="p-1",
        text="What is 2+2?",
        metadata={"user": "u1", "n": 3},
        model_id="small",
        tolerance=0.3,
        threshold=0.61,
        predicted_quality={"small": 0.7, "large": 0.8},
        estimated_cost_usd={"small": 0.0001, "large": 0.002},
        feedback_adjustment={"small": 0.05},
        router_version="2025-01-01.1",
        routing_latency_ms=4.2,
        routed_at=1_700_000_000.5,
        sent_at=1_700_000_000.1,
        tenant="acme",
        policy={"tenant": "acme", "revision": 3, "budget_usd": 0.05, "period": "day"},
        tenant_spend_usd=0.012,
        reserved_usd=0.0001,
    )
    return RoutedPrompt(**(fields | overrides))


CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "4 degrees, rain"},
    {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
]
PARAMS = {
    "max_completion_tokens": 200, "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n"], "seed": 7,
    "tools": [{"type": "function", "function": {
        "name": "weather", "description": "today's weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "tool_choice": "auto", "presence_penalty": 0.1, "frequency_penalty": -0.1, "user": "u-7",
    "response_format": {"type": "text"},
}

EXAMPLES = [
    PromptRequest(
        prompt_id="p-1",
        text="Summarise this.",
        tolerance=0.25,
        tenant="acme",
        allowed_models=["a", "b"],
        metadata={"s": "x", "i": 1, "f": 0.5, "b": True},
        sent_at=1.5,
    ),
    routed(),
    routed().to_decision(reason="cheapest feasible", variant="ipr"),
    DeadLetter.build(
        source_topic="prompts.in", partition=2, offset=17, key=b"p-9",
        value=b"{not json", error="bad", error_kind="invalid_json", at=2.0,
    ),
    ModelResponse(
        prompt_id="p-1", model_id="small", text="4", tokens_in=7, tokens_out=1,
        cost_usd=0.00001, latency_ms=120.0, router_version="v1", tenant="acme",
    ),
    # failover: the second attempt, after "small" failed, and its answer
    routed(model_id="large", ranking=["small", "large"], attempt=2,
           failed=[FailedAttempt(model_id="small", error="HTTP 503 after 4 attempts")]),
    ModelResponse(
        prompt_id="p-1", model_id="large", text="4", tokens_in=7, tokens_out=1, cost_usd=0.0002,
        latency_ms=300.0, router_version="v1", attempt=2,
        failed=[FailedAttempt(model_id="small", error="HTTP 503 after 4 attempts")],
    ),
    # a chat request with tools, its routing, and an answer that calls a tool
    PromptRequest(prompt_id="c-1", messages=CHAT, params=PARAMS, session_id="s-1",
                  reply_to={"topic": "gateway.replies.g1"}, stream=True, tolerance=0.2,
                  sent_at=2.5),
    routed(prompt_id="c-1", text=None, messages=CHAT, params=PARAMS, scored_view="last_user"),
    ModelResponse(
        prompt_id="c-1", model_id="small", text="", tokens_in=30, tokens_out=12, cost_usd=0.00002,
        latency_ms=410.0, finish_reason="tool_calls",
        message={"content": None, "tool_calls": [{"id": "call_2", "type": "function", "function": {
            "name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        usage={"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
    ),
    ModelResponse(
        prompt_id="c-2", model_id="small", text="", tokens_in=30, tokens_out=0, cost_usd=0.0,
        latency_ms=90.0, error="HTTP 400: bad request", error_status=400,
        error_type="invalid_request_error", retryable=False,
    ),
    # a streamed answer's chunks on the gateway's reply channel: text, then a tool call's pieces
    StreamChunk(prompt_id="c-1", model_id="small", seq=0, content="Let me check",
                router_version="v1"),
    StreamChunk(prompt_id="c-1", model_id="small", attempt=2, seq=1, tool_calls=[
        {"index": 0, "id": "call_2", "type": "function",
         "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]),
    QualityFeedback(prompt_id="p-1", model_id="small", quality=1.0, source="judge", task="math"),
    ModelUpdate(version="v2", location="/artifacts/v2", sha256="ab" * 32, models=["a", "b"]),
    WorkerServing(worker="host:12", models=["small", "large"], announced_at=3.0, ttl_s=30.0),
    ModelHealth(model_id="small", healthy=False, worker="host:12", consecutive_errors=5,
                error="HTTP 503 after 4 attempts", reported_at=3.0, ttl_s=60.0),
    TenantPolicy(tenant="acme", tolerance=0.3, allowed_models=["a", "b"], budget_usd=0.05,
                 period="day", on_exhausted="reject", updated_at=4.0),
    TenantSpend(tenant="acme", period="day", period_start=86_400.0, partition=1, spend_usd=0.02,
                responses=4, offset=41, updated_at=5.0),
    # a budgeted tenant's answer settles what its routing reserved, counted on both sides
    ModelResponse(
        prompt_id="p-3", model_id="small", text="4", tokens_in=7, tokens_out=1, cost_usd=0.00012,
        latency_ms=900.0, tenant="acme", reservation={"usd": 0.0001, "at": 1_700_000_000.5},
    ),
    TenantSpend(tenant="acme", period="day", period_start=86_400.0, partition=1, spend_usd=0.02,
                responses=5, offset=42, updated_at=6.0, settled_usd=0.0001),
    TenantReservation(tenant="acme", period="day", period_start=86_400.0, partition=3,
                      reserved_usd=0.0003, prompts=3, offset=17, updated_at=6.0),
]
