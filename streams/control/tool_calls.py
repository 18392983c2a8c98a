"""Which model made each tool call: the record workers write to ``router.tool_calls`` (key the
call id, value the model id; compacted, kept a day) before the answer with the calls leaves, and
every router follows (``streams.router.tool_loop``), so that a tool result goes back to the model
that asked for it. No Kafka here: both sides of the record."""

from __future__ import annotations

from collections.abc import Sequence

TOPIC_CONFIG = {"cleanup.policy": "compact,delete", "retention.ms": str(86_400_000)}


def tool_call_records(model_id: str, call_ids: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """(key, value) of each call a model made."""
    return [(cid.encode("utf-8"), model_id.encode("utf-8")) for cid in call_ids]


def parse(key: bytes | None, value: bytes | None) -> tuple[str, str] | None:
    """(call id, model id) of a record; None for a tombstone or a record without a key."""
    if key is None or value is None:
        return None
    return key.decode("utf-8", "replace"), value.decode("utf-8", "replace")
