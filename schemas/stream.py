"""A streamed answer on a reply channel: the pieces a worker sends to the gateway that took the
request, before the answer itself (docs/design.md, "Streaming")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from schemas import limits as L
from schemas.chat import ToolCallDelta
from schemas.fields import Attempt, Count, Event, Label, ModelId, PromptId


class StreamChunk(Event):
    """A piece of a streamed answer, on the request's ``reply_to`` only (header
    ``ipr-event: StreamChunk``): the contents of a prompt's chunks, in ``seq`` order, concatenate
    to its answer; its ModelResponse follows them there and on `responses.out`."""

    prompt_id: PromptId
    model_id: ModelId = Field(description="the model that is answering")
    attempt: Attempt = 1
    seq: Count = Field(description="0, 1, 2, ... within one attempt")
    content: Annotated[str, StringConstraints(max_length=L.MAX_RESPONSE_CHARS)] = ""
    tool_calls: Annotated[list[ToolCallDelta], Field(max_length=L.MAX_TOOL_CALLS)] | None = None
    router_version: Label | None = None
