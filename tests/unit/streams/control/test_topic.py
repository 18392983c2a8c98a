"""What a starting router applies from the control topic's history: the latest of each key."""

from __future__ import annotations

from dataclasses import dataclass

from streams.control.topic import latest_per_key


@dataclass
class Msg:
    partition: int
    offset: int
    key: bytes | None


def test_only_the_latest_message_of_each_key_is_kept_in_offset_order():
    history = [
        Msg(0, 0, b"artifacts"), Msg(1, 0, b"health:a"), Msg(0, 1, b"artifacts"),
        Msg(1, 1, b"health:b"), Msg(0, 2, b"artifacts"), Msg(1, 2, b"health:a"),
    ]
    got = latest_per_key(reversed(history))  # order of arrival does not matter
    assert [(m.partition, m.offset, m.key) for m in got] == [
        (0, 2, b"artifacts"), (1, 1, b"health:b"), (1, 2, b"health:a")
    ]
    assert latest_per_key([]) == []
