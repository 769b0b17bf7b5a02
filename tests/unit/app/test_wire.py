"""The user-keyed topic's records round-trip through their encode/decode pair."""

from app.wire import ForwardedEvent, WatermarkMark, decode, encode_events, encode_mark


def test_events_round_trip():
    events = [ForwardedEvent(1, 7, 1_800_000_000_000, "u1", "page_view", "/a")]
    events.append(ForwardedEvent(2, 8, 1_800_000_000_001, "u2", "session_end", None))
    assert decode(encode_events(events)) == events


def test_a_mark_round_trips():
    mark = WatermarkMark(source=3, sources=4, watermark=1_800_000_000_000, idle=True)
    assert decode(encode_mark(mark)) == mark
