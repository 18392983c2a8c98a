"""Chat requests in the OpenAI chat-completions format, and what a model call gives back.

A request carries either one ``text`` (a single user message) or ``messages``: roles ``system``,
``developer``, ``user``, ``assistant`` (with ``tool_calls``) and ``tool`` (with
``tool_call_id``); content a string or a list of text parts. ``GenerationParams`` holds the
parameters a model call needs, passed to the backend unchanged. What the system cannot honour is
refused by name with the error type ``unsupported`` (the codec's dead-letter kind of the same
name; the gateway's 400): ``n`` above 1, image, audio or file parts, audio output.

Every list, string and JSON value is bounded (``schemas.limits``): a conversation fits in one
event.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas import limits as L
from schemas.fields import Count, Label, Number, PositiveCount

UNSUPPORTED = "unsupported"  # the error type (and dead-letter kind) of a refused feature

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
ToolCallId = Annotated[str, StringConstraints(min_length=1, max_length=L.MAX_ID_CHARS)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=L.MAX_TOOL_NAME_CHARS)]
MessageText = Annotated[str, StringConstraints(max_length=L.MAX_MESSAGE_CHARS)]


def unsupported(what: str) -> PydanticCustomError:
    return PydanticCustomError(UNSUPPORTED, "{what} is not supported", {"what": what})


def _json_depth(value: Any, depth: int = 1) -> int:
    if isinstance(value, dict):
        return max((_json_depth(v, depth + 1) for v in value.values()), default=depth)
    if isinstance(value, list):
        return max((_json_depth(v, depth + 1) for v in value), default=depth)
    return depth


def _bounded_json(value: Any) -> Any:
    if _json_depth(value) > L.MAX_PARAM_DEPTH:
        raise ValueError(f"nested deeper than {L.MAX_PARAM_DEPTH} levels")
    return value


# A JSON object passed through as it is (a tool's parameters, a response format), bounded in depth.
JsonObject = Annotated[dict[str, Any], Field(max_length=L.MAX_JSON_KEYS),
                       BeforeValidator(_bounded_json)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _only_text_parts(value: Any) -> Any:
    """Refuse non-text content parts by name (image_url, input_audio, file, ...)."""
    if isinstance(value, list):
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind != "text":
                raise unsupported(f"content part type {kind[:40]!r} (only text parts)")
    return value


class TextPart(_Strict):
    type: Literal["text"]
    text: MessageText


Content = Annotated[
    MessageText | Annotated[list[TextPart], Field(min_length=1, max_length=L.MAX_PARTS)],
    BeforeValidator(_only_text_parts),
]


class FunctionCall(_Strict):
    name: Name
    arguments: Annotated[str, StringConstraints(max_length=L.MAX_MESSAGE_CHARS)]


class ToolCall(_Strict):
    id: ToolCallId
    type: Literal["function"] = "function"
    function: FunctionCall


ToolCalls = Annotated[list[ToolCall], Field(min_length=1, max_length=L.MAX_TOOL_CALLS)]


class ChatMessage(_Strict):
    """One message of a conversation."""

    role: Role
    content: Content | None = None
    name: Name | None = None
    tool_calls: ToolCalls | None = Field(default=None, description="assistant messages only")
    tool_call_id: ToolCallId | None = Field(
        default=None, description="tool messages only: the call this message answers")

    @model_validator(mode="after")
    def _fits_its_role(self) -> Self:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError(f"tool_calls on a {self.role} message (assistant messages only)")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a tool message needs tool_call_id, and only a tool message has one")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        """The content as one string (text parts joined by a newline)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content)


Messages = Annotated[list[ChatMessage], Field(min_length=1, max_length=L.MAX_MESSAGES)]


class FunctionDef(_Strict):
    name: Name
    description: Annotated[str, StringConstraints(max_length=L.MAX_MESSAGE_CHARS)] | None = None
    parameters: JsonObject | None = None
    strict: StrictBool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Strict):
    name: Name


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Strict):
    include_usage: StrictBool = False


def _n_is_one(value: Any) -> Any:
    if value is not None and value != 1:
        raise unsupported("n other than 1 (one choice per request)")
    return value


def _text_modality_only(value: Any) -> Any:
    if isinstance(value, list) and any(m != "text" for m in value):
        raise unsupported("an output modality other than text")
    return value


def _no_audio(value: Any) -> Any:
    if value is not None:
        raise unsupported("audio output")
    return value


Penalty = Annotated[Number, Field(ge=-2.0, le=2.0)]
Stop = (Annotated[str, StringConstraints(min_length=1, max_length=L.MAX_STOP_CHARS)]
        | Annotated[list[Annotated[str, StringConstraints(min_length=1,
                                                          max_length=L.MAX_STOP_CHARS)]],
                    Field(min_length=1, max_length=L.MAX_STOP)])


class GenerationParams(_Strict):
    """The chat-completions parameters a model call takes, passed to the backend unchanged."""

    max_tokens: PositiveCount | None = None
    max_completion_tokens: PositiveCount | None = None
    temperature: Annotated[Number, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Number, Field(ge=0.0, le=1.0)] | None = None
    stop: Stop | None = None
    seed: Annotated[StrictInt, Field(ge=L.MIN_INT, le=L.MAX_INT)] | None = None
    response_format: JsonObject | None = None
    tools: Annotated[list[Tool], Field(min_length=1, max_length=L.MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: Annotated[dict[Annotated[str, StringConstraints(max_length=20)],
                               Annotated[Number, Field(ge=-100.0, le=100.0)]],
                          Field(max_length=L.MAX_JSON_KEYS)] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    user: Annotated[str, StringConstraints(max_length=L.MAX_ID_CHARS)] | None = None
    reasoning_effort: Label | None = None
    n: Annotated[StrictInt | None, BeforeValidator(_n_is_one)] = None
    modalities: Annotated[list[Label] | None, BeforeValidator(_text_modality_only)] = None
    audio: Annotated[JsonObject | None, BeforeValidator(_no_audio)] = None
    stream_options: StreamOptions | None = None

    def requested_tokens(self) -> int | None:
        """The output tokens asked for (max_completion_tokens wins over the older max_tokens)."""
        return self.max_completion_tokens or self.max_tokens

    def for_backend(self) -> dict[str, Any]:
        """The parameters that were set, as the chat-completions API takes them."""
        return self.model_dump(exclude_none=True, exclude={"stream_options"})


class Usage(_Strict):
    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count


class AssistantMessage(_Strict):
    """What the model answered: its content and the tools it called."""

    role: Literal["assistant"] = "assistant"
    content: Annotated[str, StringConstraints(max_length=L.MAX_RESPONSE_CHARS)] | None = None
    tool_calls: ToolCalls | None = None


class FunctionDelta(_Strict):
    name: Name | None = None
    arguments: Annotated[str, StringConstraints(max_length=L.MAX_MESSAGE_CHARS)] | None = None


class ToolCallDelta(_Strict):
    """A piece of a streamed tool call: the pieces of one ``index`` concatenate to the call."""

    index: Annotated[StrictInt, Field(ge=0, lt=L.MAX_TOOL_CALLS)]
    id: ToolCallId | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


def merge_tool_calls(pieces: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Streamed pieces of the same call (``index``) as one: the first id, type and name; the
    arguments concatenated in order."""
    merged: dict[int, ToolCallDelta] = {}
    for p in pieces:
        m = merged.get(p.index)
        if m is None:
            merged[p.index] = p.model_copy(deep=True)
            continue
        m.id = m.id or p.id
        m.type = m.type or p.type
        if p.function is not None:
            f = m.function or FunctionDelta()
            f.name = f.name or p.function.name
            if p.function.arguments:
                f.arguments = (f.arguments or "") + p.function.arguments
            m.function = f
    return [merged[i] for i in sorted(merged)]


def user_message(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)
