"""Input records (docs/contract.md, Input and Bad input): decode, event-time parsing, ISO output."""

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import BadEvent
from app.events import MAX_WRITABLE_DEPTH, Event, decode, iso_utc, parse_event_time
from app.limits import MAX_PAGE_URL_BYTES, MAX_USER_ID_BYTES

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_FUTURE = 5 * 60_000


def epoch_ms(*args: int) -> int:
    """Exact epoch ms of a UTC datetime, in integer arithmetic."""
    return (datetime(*args, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


T = epoch_ms(2026, 1, 29, 9, 31, 3, 27_000)  # 2026-01-29T09:31:03.027Z
NOW = epoch_ms(2026, 1, 29, 10, 0)


def record(**fields) -> bytes:
    """A valid page_view as JSON bytes; override fields, or pass `...` to leave one out."""
    base = {"event_time": "2026-01-29T09:31:03.027Z", "user_id": "u1", "event_type": "page_view"}
    base["page_url"] = "/home"
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def nested(levels: int) -> list:
    """Lists `levels` deep: [[[]]] is 3."""
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def reason(raw: bytes | None) -> str:
    with pytest.raises(BadEvent) as info:
        decode(raw, NOW, MAX_FUTURE)
    return info.value.reason


# -- event_time ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-29T09:31:03.027Z",
        "2026-01-29T09:31:03.027+00:00",
        "2026-01-29T11:31:03.027+02:00",
        "2026-01-29T04:01:03.027-05:30",
        "2026-01-29T09:31:03.027",  # naive: read as UTC
        "2026-01-29T09:31:03.027999Z",  # microseconds are cut, not rounded
    ],
)
def test_iso_event_times_in_any_offset_mean_the_same_instant(text):
    assert parse_event_time(text) == T


def test_epoch_seconds_int_and_float():
    assert parse_event_time(1_769_679_063) == T - 27
    assert parse_event_time(1_769_679_063.027) == T


def test_epoch_milliseconds_above_1e11():
    assert parse_event_time(1_769_679_063_027) == T
    assert parse_event_time(100_000_000_001) == 100_000_000_001
    assert parse_event_time(100_000_000_000) == 100_000_000_000_000  # 1e11 itself: seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2004-03-15T07:55:47.472Z", epoch_ms(2004, 3, 15, 7, 55, 47, 472_000)),
        ("2039-03-08T19:46:13.411Z", epoch_ms(2039, 3, 8, 19, 46, 13, 411_000)),
        (1.001, 1_001),
        (1_079_337_347.472, epoch_ms(2004, 3, 15, 7, 55, 47, 472_000)),
    ],
)
def test_milliseconds_are_exact_not_lost_to_float_rounding(value, expected):
    assert parse_event_time(value) == expected


@given(st.integers(min_value=0, max_value=epoch_ms(9999, 12, 31, 23, 59, 59, 999_000)))
def test_iso_utc_round_trips_through_parse_event_time(ms):
    assert parse_event_time(iso_utc(ms)) == ms


def test_iso_utc_writes_milliseconds_and_z():
    assert iso_utc(T) == "2026-01-29T09:31:03.027Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(epoch_ms(9999, 12, 31, 23, 59, 59, 999_000)) == "9999-12-31T23:59:59.999Z"


# -- decode: valid records -----------------------------------------------------


def test_decode_returns_the_normalised_event():
    event = decode(record(), NOW, MAX_FUTURE)
    assert event == Event(T, "u1", "page_view", "/home", json.loads(record()))


def test_numeric_user_id_becomes_its_decimal_string():
    assert decode(record(user_id=42), NOW, MAX_FUTURE).user_id == "42"
    assert decode(record(user_id=12345678901234), NOW, MAX_FUTURE).user_id == "12345678901234"


def test_unknown_extra_fields_and_event_id_are_kept():
    event = decode(record(event_id="e-1", campaign={"id": 7}), NOW, MAX_FUTURE)
    assert event.fields["event_id"] == "e-1"
    assert event.fields["campaign"] == {"id": 7}


@pytest.mark.parametrize("kind", ["session_start", "session_end"])
def test_session_events_need_no_page_url(kind):
    event = decode(record(event_type=kind, page_url=...), NOW, MAX_FUTURE)
    assert (event.event_type, event.page_url) == (kind, None)


def test_event_time_exactly_max_future_ahead_is_accepted():
    edge = NOW + MAX_FUTURE
    assert decode(record(event_time=edge), NOW, MAX_FUTURE).event_time == edge


# -- decode: bad input, one reason each ----------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "empty_value"),
        (b"", "empty_value"),
        (b'{"user_id": "\xff\xfe"}', "not_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_object"),
        (b'"page_view"', "not_object"),
        (b"42", "not_object"),
        (b"null", "not_object"),
        (record(event_time=...), "missing_field"),
        (record(user_id=...), "missing_field"),
        (record(event_type=...), "missing_field"),
        (record(user_id=None), "missing_field"),
        (record(page_url=...), "missing_field"),
        (record(event_type="click", page_url=...), "missing_field"),
        (record(event_type=7), "wrong_type"),
        (record(user_id=["u1"]), "wrong_type"),
        (record(user_id=True), "wrong_type"),
        (record(event_time=True), "wrong_type"),
        (record(event_time=[2026]), "wrong_type"),
        (record(page_url=5), "wrong_type"),
        (record(event_type="purchase"), "unknown_event_type"),
        (record(event_time="yesterday"), "bad_event_time"),
        (record(event_time="2026-13-01T00:00:00Z"), "bad_event_time"),
        (record(event_time=-5), "bad_event_time"),
        (record(event_time="1969-12-31T23:59:59Z"), "bad_event_time"),
        (record(event_time=NOW + MAX_FUTURE + 1), "future_event_time"),
        (record(event_time="2026-01-29T10:05:00.001Z"), "future_event_time"),
        (record(page_url="/" + "x" * 1_000_000), "page_url_too_long"),
        (record(page_url="/" + "x" * MAX_PAGE_URL_BYTES), "page_url_too_long"),
        (record(page_url="/" + "é" * (MAX_PAGE_URL_BYTES // 2)), "page_url_too_long"),
        (record(user_id="u" * (MAX_USER_ID_BYTES + 1)), "user_id_too_long"),
        (record(user_id="🙂" * (MAX_USER_ID_BYTES // 4 + 1)), "user_id_too_long"),
        (record(page_url="/home\u0000"), "nul_character"),
        (record(user_id="\u0000"), "nul_character"),
        (record(user_id=..., padding="x" * 1_000_000), "missing_field"),
        (record(nested=nested(MAX_WRITABLE_DEPTH)), "too_deep"),
        # the shortest object that deep: the check's length bound must not skip it
        (b'{"":' + b"[" * MAX_WRITABLE_DEPTH + b"]" * MAX_WRITABLE_DEPTH + b"}", "too_deep"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(raw, expected):
    assert reason(raw) == expected


def test_a_record_nested_as_deep_as_can_be_written_again_is_valid():
    raw = record(nested=nested(MAX_WRITABLE_DEPTH - 1))  # the record's own object is one
    event = decode(raw, NOW, MAX_FUTURE)
    assert event.fields == orjson.loads(raw)  # all of it, nesting included
    assert orjson.loads(orjson.dumps(event.fields)) == event.fields  # and it can be written
    text = decode(record(text="[" * 300), NOW, MAX_FUTURE)  # brackets in a string nest nothing
    assert text.fields["text"] == "[" * 300


def test_the_longest_storable_strings_and_unusual_ones_are_carried_exactly():
    longest_user = "🙂" * (MAX_USER_ID_BYTES // 4)
    longest_url = "/" + "é" * ((MAX_PAGE_URL_BYTES - 1) // 2)
    odd_url = '/p?q=\'; DROP TABLE page_view_counts;--&x="ü"\\'
    for user_id, page_url in ((longest_user, longest_url), ('O\'Brien "dq"', odd_url)):
        event = decode(record(user_id=user_id, page_url=page_url), NOW, MAX_FUTURE)
        assert (event.user_id, event.page_url) == (user_id, page_url)
    assert len(longest_user.encode()) == MAX_USER_ID_BYTES
    assert MAX_PAGE_URL_BYTES - 1 <= len(longest_url.encode()) <= MAX_PAGE_URL_BYTES


def test_missing_page_url_detail_names_the_field():
    with pytest.raises(BadEvent) as info:
        decode(record(event_type="click", page_url=...), NOW, MAX_FUTURE)
    assert info.value.detail == "page_url"


# -- properties: nothing but Event or BadEvent ---------------------------------


def decodes_or_rejects(raw: bytes) -> None:
    try:
        assert isinstance(decode(raw, NOW, MAX_FUTURE), Event)
    except BadEvent as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_bad_event(raw):
    decodes_or_rejects(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
times = (
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    | st.integers()
    | st.floats()
    | json_values
)
records = st.fixed_dictionaries(
    {},
    optional={
        "event_time": times,
        "user_id": st.text(max_size=5) | st.integers() | st.floats() | json_values,
        "event_type": st.sampled_from(["page_view", "click", "session_start", "session_end"])
        | json_values,
        "page_url": st.text(max_size=10) | json_values,
        "event_id": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(records | st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_arbitrary_json_objects_decode_or_raise_bad_event(obj):
    decodes_or_rejects(json.dumps(obj).encode())
