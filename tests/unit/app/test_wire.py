"""The user-keyed topic's records round-trip through their encode/decode pair."""

from app.wire import (
    ForwardedEvent,
    WatermarkMark,
    decode,
    encode_events,
    encode_events_bounded,
    encode_mark,
)


def test_events_round_trip():
    events = [ForwardedEvent(1, 7, 1_800_000_000_000, "u1", "page_view", "/a")]
    events.append(ForwardedEvent(2, 8, 1_800_000_000_001, "u2", "session_end", None))
    assert [ForwardedEvent._make(e) for e in decode(encode_events(events))] == events


def test_a_large_batch_is_split_into_records_below_the_limit():
    events = [ForwardedEvent(0, i, 1_800_000_000_000, f"u{i}", "page_view", "/" + "x" * 500)
              for i in range(3000)]  # fmt: skip
    records = encode_events_bounded(events, 256 << 10)
    assert len(records) > 1 and all(len(r) <= 256 << 10 for r in records)
    assert [ForwardedEvent._make(e) for r in records for e in decode(r)] == events


def test_a_mark_round_trips():
    mark = WatermarkMark(source=3, sources=4, watermark=1_800_000_000_000, idle=True)
    assert decode(encode_mark(mark)) == mark
