"""What the estimators score of a conversation: a bounded view of it, not the whole history.

The estimators were trained on single prompts (the shipped datasets are single-turn), so the
default view is the prompt a single-turn dataset holds: the newest message a person wrote.

- ``last_user`` (default): the newest ``user`` message. Tool results, assistant turns, system and
  developer prompts do not move it, so a tool loop or a long system prompt scores as the user's
  request does. vLLM Semantic Router and LiteLLM score this way (the newest human-written turn).
- ``last_message``: the newest message with content, whoever wrote it (RouteLLM's
  ``messages[-1]``): a tool result is scored as if it were the request.
- ``system_and_last_user``: the system and developer prompts, then the newest user message (the
  encoder keeps the head of a long text, so a long system prompt can crowd the request out).

A conversation without a user message falls back to its newest message with content.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from schemas.chat import ChatMessage

View = Literal["last_user", "last_message", "system_and_last_user"]
VIEWS: tuple[View, ...] = ("last_user", "last_message", "system_and_last_user")
DEFAULT_VIEW: View = "last_user"


def _newest(messages: Sequence[ChatMessage], roles: tuple[str, ...] | None) -> str:
    for m in reversed(messages):
        if (roles is None or m.role in roles) and m.text().strip():
            return m.text()
    return ""


def scored_text(messages: Sequence[ChatMessage], view: View = DEFAULT_VIEW) -> str:
    """The text the encoder sees for this conversation under ``view``."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    user = _newest(messages, ("user",)) or _newest(messages, None)
    if view == "last_user":
        return user
    if view == "last_message":
        return _newest(messages, None)
    system = [m.text() for m in messages if m.role in ("system", "developer") and m.text().strip()]
    return "\n\n".join([*system, user])
