"""Size limits of the event contracts, in one place.

Every bound an event enforces is a constant here, so a deployment that needs other limits changes
one file (and regenerates the JSON Schemas with `python -m schemas.generate`).
"""

SCHEMA_VERSION = 1

MAX_TEXT_CHARS = 32_000  # prompt text
# Chat requests (schemas.chat): a conversation, its tools and parameters.
MAX_MESSAGES = 256  # messages in one conversation
MAX_MESSAGE_CHARS = 100_000  # one message's content (a tool call's arguments, a description)
MAX_CONVERSATION_CHARS = 400_000  # all messages' content together (an event is at most 1 MiB)
MAX_PARTS = 64  # text parts of one message
MAX_TOOLS = 128  # tool definitions
MAX_TOOL_CALLS = 64  # tool calls of one assistant message
MAX_TOOL_NAME_CHARS = 64  # a function's or a message author's name
MAX_JSON_KEYS = 256  # keys of a JSON object passed through (tool parameters, response format)
MAX_PARAM_DEPTH = 32  # nesting of such a JSON object
MAX_STOP = 4  # stop sequences
MAX_STOP_CHARS = 256
MAX_RESPONSE_CHARS = 200_000  # a model's answer
MAX_ID_CHARS = 200  # prompt_id, model_id, tenant
MAX_MODELS = 64  # allowed_models, and the per-model score maps
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 1_024
MAX_LABEL_CHARS = 100  # router_version, variant, source, task, version
MAX_ERROR_CHARS = 2_000
MAX_LOCATION_CHARS = 2_000
MAX_KEY_CHARS = 1_024  # a dead letter's original key
MAX_EMBEDDING_CHARS = 4 * ((2 * 4096 + 2) // 3)  # base64 of up to 4096 float16 values

# A dead letter keeps at most this many bytes of the raw value; base64 grows it by 4/3.
MAX_DLQ_RAW_BYTES = 16 * 1024
MAX_DLQ_RAW_CHARS = 4 * ((MAX_DLQ_RAW_BYTES + 2) // 3)

# `decode` refuses larger payloads before parsing them (Kafka's default message.max.bytes is ~1 MB).
MAX_EVENT_BYTES = 1_048_576

# Integers (counts, offsets, metadata values) stay in the signed 64-bit range that orjson can write.
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1

# Not a setting: the depth at which pydantic-core's JSON parser (jiter) stops with "recursion limit
# exceeded"; `decode` reports that as error kind "too_deep". A unit test pins the number. (A valid
# event is at most 3 levels deep: the object, its lists or maps, a failed attempt in `failed`.)
MAX_JSON_DEPTH = 200
