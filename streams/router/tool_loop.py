"""A tool loop stays on the model that made the call.

When a conversation's newest message is a tool result, the model that asked for the tool is
waiting for it: another model would not know the call, its arguments or why it was made (agents
break when a loop switches models; LiteLLM classifies such turns for the same reason). Workers
record which model made each tool call (``router.tool_calls``, compacted, keyed by the call id,
written before the answer is sent: ``streams.control.tool_calls``); every router follows that topic
(:class:`ToolCalls`) and pins such a request to the call's model (:func:`pinned_model`), saying
so in the decision (variant ``tool_loop``). A call the router does not know (made before the
topic existed, or by a model outside this deployment) is routed as a new turn, with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import OrderedDict
from collections.abc import Sequence

from schemas import ChatMessage
from streams.control.tool_calls import TOPIC_CONFIG, parse
from streams.kafka.settings import KafkaSettings
from streams.router.tenants import TopicFollower

MAX_CALLS = 200_000  # the most recent calls remembered by one router
VARIANT = "tool_loop"
_TOOL_ROLE = re.compile(rb'"role"\s*:\s*"tool"')


def answered_calls(messages: Sequence[ChatMessage] | None) -> list[str]:
    """The tool calls the conversation's newest messages answer (its trailing tool results)."""
    out: list[str] = []
    for m in reversed(messages or ()):
        if m.role != "tool":
            break
        out.append(m.tool_call_id)
    return out


def may_answer_a_call(value: bytes | None) -> bool:
    """A cheap look at a raw request: could it hold a tool result (then the index is caught up
    before it is routed)."""
    return bool(value) and _TOOL_ROLE.search(value) is not None


class ToolCalls:
    """Which model made each recent tool call, followed from ``router.tool_calls``."""

    def __init__(self, settings: KafkaSettings, max_calls: int = MAX_CALLS) -> None:
        self.settings = settings
        self.max_calls = max_calls
        self._model: OrderedDict[str, str] = OrderedDict()
        self.follower = TopicFollower(settings, settings.tool_calls, self._apply, TOPIC_CONFIG)

    def _apply(self, msg) -> None:
        call = parse(msg.key, msg.value)
        if call is not None:
            self.record(*call)

    def record(self, call_id: str, model_id: str) -> None:
        self._model[call_id] = model_id
        self._model.move_to_end(call_id)
        while len(self._model) > self.max_calls:
            self._model.popitem(last=False)

    def model_of(self, call_id: str) -> str | None:
        return self._model.get(call_id)

    async def caught_up(self, timeout: float) -> None:
        """Until every call recorded so far is read (a worker records a call before its answer
        leaves, so a tool result routed after this knows its call), or ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.follower.synced(), timeout)


def pinned_model(messages: Sequence[ChatMessage] | None, calls: ToolCalls | None,
                 allowed: Sequence[str] | None) -> tuple[str | None, str | None]:
    """(the model a request is pinned to, why) for a request answering tool calls; (None, why)
    when it is routed as a new turn; (None, None) when it answers none."""
    answered = answered_calls(messages)
    if not answered or calls is None:
        return None, None
    models = {calls.model_of(cid) for cid in answered}
    if None in models or len(models) != 1:
        return None, f"tool result for call {answered[0]!r}, whose model is not known: routed " \
                     "as a new turn"
    model = models.pop()
    if allowed is not None and model not in allowed:
        return None, f"tool result for call {answered[0]!r} made by {model}, which this " \
                     "request does not allow: routed as a new turn"
    return model, f"tool result for call {answered[0]!r} made by {model}: the loop stays on it"
