"""Chat requests through the router's pure path: what is scored, what goes through, and a tool
loop kept on the model that made the call."""

from __future__ import annotations

import orjson

from schemas import PromptRequest, encode
from streams.kafka.settings import KafkaSettings
from streams.router.routing import route_records
from streams.router.tool_loop import ToolCalls, answered_calls, may_answer_a_call, pinned_model
from tests.unit.schemas.examples import CHAT, PARAMS
from tests.unit.streams.router.test_routing import TableScorer, rec


class TextsSeen(TableScorer):
    def __init__(self):
        super().__init__()
        self.texts: list[str] = []

    def score(self, texts):
        self.texts += texts
        return super().score(texts)


def chat(pid: str, messages, **kw) -> bytes:
    return encode(PromptRequest(prompt_id=pid, messages=messages, **kw))


CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_7", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
RESULT = {"role": "tool", "tool_call_id": "call_7", "content": "42"}
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum my rows."}]


def calls_made(**by_id: str) -> ToolCalls:
    calls = ToolCalls(KafkaSettings())
    for call_id, model in by_id.items():
        calls.record(call_id, model)
    return calls


def test_a_conversation_is_scored_by_its_view_and_goes_through_whole() -> None:
    scorer = TextsSeen()
    out = route_records([rec(0, chat("c", CHAT, params=PARAMS, session_id="s"))], scorer, 0.2)
    assert scorer.texts == ["And tomorrow?"]  # the newest user message
    routed = out.routed[0].prompt
    assert [m.model_dump(exclude_none=True) for m in routed.messages] == [
        {k: v for k, v in m.items() if v is not None} for m in CHAT]
    assert routed.params.for_backend() == PARAMS and routed.session_id == "s"
    assert routed.text is None and routed.scored_view == "last_user"
    decision = orjson.loads(encode(out.routed[0].decision))
    assert decision["scored_view"] == "last_user" and "messages" not in decision
    scorer = TextsSeen()
    route_records([rec(0, chat("c", CHAT))], scorer, 0.2, view="system_and_last_user")
    assert scorer.texts == ["Answer briefly.\n\nAnd tomorrow?"]


def test_a_tool_result_goes_to_the_model_that_made_the_call() -> None:
    loop = [*ASK, CALL, RESULT]
    # τ = 1 would pick the cheapest (small); the call was made by mid
    out = route_records([rec(0, chat("t", loop, tolerance=1.0))], TextsSeen(), 0.2,
                        tool_calls=calls_made(call_7="mid"))
    assert out.routed[0].prompt.model_id == "mid"
    d = out.routed[0].decision
    assert d.variant == "tool_loop" and "call 'call_7' made by mid" in d.reason
    assert d.ranking == ["mid"]


def test_an_unknown_call_or_a_disallowed_model_is_routed_as_a_new_turn() -> None:
    loop = [*ASK, CALL, RESULT]
    unknown = route_records([rec(0, chat("u", loop, tolerance=1.0))], TextsSeen(), 0.2,
                            tool_calls=calls_made())
    d = unknown.routed[0].decision
    assert d.model_id == "small" and d.variant != "tool_loop" and "not known" in d.reason
    barred = route_records([rec(0, chat("b", loop, tolerance=1.0, allowed_models=["big",
                                                                                  "small"]))],
                           TextsSeen(), 0.2, tool_calls=calls_made(call_7="mid"))
    assert barred.routed[0].decision.model_id == "small"
    assert "does not allow" in barred.routed[0].decision.reason


def test_a_new_user_turn_after_a_loop_is_routed_afresh() -> None:
    later = [*ASK, CALL, RESULT, {"role": "assistant", "content": "Done: 42."},
             {"role": "user", "content": "Thanks, now a haiku."}]
    out = route_records([rec(0, chat("n", later, tolerance=1.0))], TextsSeen(), 0.2,
                        tool_calls=calls_made(call_7="mid"))
    assert out.routed[0].decision.model_id == "small"
    assert out.routed[0].decision.reason is None


def test_the_pieces() -> None:
    msgs = PromptRequest(prompt_id="x", messages=[*ASK, CALL, RESULT]).messages
    assert answered_calls(msgs) == ["call_7"] and answered_calls(msgs[:2]) == []
    assert pinned_model(msgs, None, None) == (None, None)
    assert may_answer_a_call(chat("x", [*ASK, CALL, RESULT]))
    assert not may_answer_a_call(chat("y", ASK)) and not may_answer_a_call(None)
    calls = ToolCalls(KafkaSettings(), max_calls=2)
    for i in range(3):
        calls.record(f"c{i}", "m")
    assert calls.model_of("c0") is None and calls.model_of("c2") == "m"
