"""The view of a conversation the estimators score."""

from __future__ import annotations

import pytest

from ipr_model.serving.views import VIEWS, scored_text
from schemas import ChatMessage


def conv(*turns: tuple[str, str]) -> list[ChatMessage]:
    out = []
    for i, (role, text) in enumerate(turns):
        if role == "tool":
            out.append(ChatMessage(role="tool", content=text, tool_call_id=f"c{i}"))
        elif role == "call":
            out.append(ChatMessage(role="assistant", tool_calls=[{
                "id": f"c{i + 1}", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]))
        else:
            out.append(ChatMessage(role=role, content=text))
    return out


BASE = conv(("system", "You are terse."), ("user", "Prove that sqrt(2) is irrational."))


@pytest.mark.parametrize("tail", [
    [("call", ""), ("tool", "search results: ...")],
    [("assistant", "Suppose sqrt(2) = p/q ...")],
    [("assistant", "Let me look."), ("call", ""), ("tool", "{\"rows\": 12}")],
])
def test_tool_results_and_assistant_turns_do_not_move_the_default_view(tail) -> None:
    assert scored_text(BASE + conv(*tail)) == scored_text(BASE) == \
        "Prove that sqrt(2) is irrational."


def test_a_new_user_turn_moves_it() -> None:
    later = BASE + conv(("assistant", "Done."), ("user", "Now translate it to French."))
    assert scored_text(later) == "Now translate it to French."


def test_the_other_views() -> None:
    loop = BASE + conv(("call", ""), ("tool", "result 42"))
    assert scored_text(loop, "last_message") == "result 42"
    assert scored_text(loop, "system_and_last_user") == \
        "You are terse.\n\nProve that sqrt(2) is irrational."


def test_text_parts_are_joined_and_a_conversation_without_a_user_falls_back() -> None:
    parts = [ChatMessage(role="user", content=[{"type": "text", "text": "a"},
                                               {"type": "text", "text": "b"}])]
    assert scored_text(parts) == "a\nb"
    assert scored_text(conv(("system", "only a system prompt"))) == "only a system prompt"


def test_an_unknown_view_is_named() -> None:
    with pytest.raises(ValueError, match="view must be one of last_user"):
        scored_text(BASE, "everything")  # type: ignore[arg-type]
    assert len(VIEWS) == 3
