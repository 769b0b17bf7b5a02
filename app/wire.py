"""The user-keyed topic's wire format: what the source stage tells the stateful stage.

One Kafka record carries either a batch of on-time events of one source batch bound
for one user-keyed partition, or one source partition's watermark mark. Both are
JSON arrays tagged by their first element; `encode_*` and `decode` are the only
code that knows the layout.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

EVENTS, MARK = 0, 1


class ForwardedEvent(NamedTuple):
    """An on-time event, judged at its source partition."""

    source: int  # source partition of the input topic
    offset: int  # its offset there
    event_time: int  # epoch ms
    user_id: str
    event_type: str
    page_url: str | None


class WatermarkMark(NamedTuple):
    """How far one source partition has got, sent in order after its events."""

    source: int
    sources: int  # partitions of the input topic, as the source stage sees them
    watermark: int
    idle: bool


def encode_events(events: list[ForwardedEvent] | list[tuple]) -> bytes:
    """Plain tuples (what the source stage builds) go through orjson's fast path."""
    return orjson.dumps([EVENTS, events], option=orjson.OPT_PASSTHROUGH_SUBCLASS, default=tuple)


def encode_events_bounded(events: list, max_bytes: int) -> list[bytes]:
    """`events` as one record, or as several when one would pass `max_bytes` (a whole
    source batch bound for one partition: long URLs, or PARTITIONS=1)."""
    value = encode_events(events)
    if len(value) <= max_bytes or len(events) == 1:
        return [value]
    half = len(events) // 2
    return encode_events_bounded(events[:half], max_bytes) + encode_events_bounded(
        events[half:], max_bytes
    )


def encode_mark(mark: WatermarkMark) -> bytes:
    return orjson.dumps([MARK, *mark])


def decode(value: bytes) -> list[list] | WatermarkMark:
    """A list of events, each a list in ForwardedEvent's field order (no object per
    event: the stateful stage passes them on as arguments), or a mark."""
    record = orjson.loads(value)
    if record[0] == EVENTS:
        return record[1]
    return WatermarkMark(*record[1:])
