"""Fuzzing the source stage's boundary (docs/contract.md, Input, Limits, Bad input):
random bytes, random JSON, deep and wide objects, huge and strange strings. Reading
never raises anything but bad input, and every record it accepts can be written to
every sink: its enriched record fits its topic, its user-keyed record too, its lake
row converts to the lake's schema and Parquet, and its PostgreSQL keys hold no U+0000
and fit their indexes. Seeded by hypothesis and bounded in examples."""

from __future__ import annotations

import io
import json
from typing import NamedTuple

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import event, given, settings
from hypothesis import strategies as st

from app.limits import MAX_PAGE_URL_BYTES, MAX_USER_ID_BYTES, RecordLimits, headers_bytes
from app.sinks.lake import LakeRows
from app.sinks.lake.schema import SCHEMA
from app.source.outputs import fit
from app.source.partitioner import KeyPartitioner
from app.source.reader import BatchReader, PartitionReader
from app.wire import encode_events_bounded
from tables.watermark import SourceClock

NOW = 1_800_000_000_000
LIMITS = RecordLimits(enriched=20_000, dead_letter=20_000, user_keyed=20_000)


class Record(NamedTuple):
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = NOW


strange_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "'", '"', "\\", "🙂", "é"]),
    max_size=40,
)
huge_text = st.integers(0, 30_000).map(lambda n: "ü" * n) | st.integers(0, 30_000).map(
    lambda n: "x" * n
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | strange_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(strange_text, inner, max_size=6),
    max_leaves=40,
)
times = (
    st.integers(0, NOW + 10**7)
    | st.floats(allow_nan=True)
    | st.sampled_from(["2026-12-07T01:02:03Z", "2026-12-07T01:02:03.5+05:30", "2026-12-07 01:02"])
    | strange_text
)
events = st.fixed_dictionaries(
    {
        "event_time": times,
        "user_id": strange_text | huge_text | st.integers(),
        "event_type": st.sampled_from(["page_view", "click", "session_start", "session_end"]),
    },
    optional={
        "page_url": strange_text | huge_text,
        "event_id": json_values,
        "extra": json_values,
        "blob": huge_text,
    },
)


likely_valid = st.fixed_dictionaries(
    {
        "event_time": st.integers(NOW - 10**8, NOW),
        "user_id": st.text(min_size=1, max_size=300) | st.integers(-(2**63), 2**64),
        "event_type": st.sampled_from(["page_view", "click", "session_start", "session_end"]),
        "page_url": strange_text.filter(bool) | huge_text.filter(bool),
    },
    optional={"event_id": json_values, "extra": json_values, "blob": huge_text},
)


def dumps(value) -> bytes:
    """As a producer would send it: big integers, NaN and non-ASCII included."""
    return json.dumps(value, ensure_ascii=False).encode()


def deep(levels: int) -> bytes:
    return b'{"event_time":1,"user_id":"u","event_type":"click","x":' + (
        b"[" * levels + b"]" * levels + b"}"
    )


raw_values = (
    st.binary(max_size=300)
    | events.map(dumps)
    | likely_valid.map(dumps)
    | likely_valid.map(dumps)
    | json_values.map(dumps)
    | st.integers(1, 1_100).map(deep)
    | st.dictionaries(strange_text, scalars, min_size=200, max_size=400).map(dumps)
)


def check_every_sink_takes(out, rows: LakeRows) -> None:
    for dead in out.dead_letters:  # the dead-letter topic never refuses one
        headers = [("reason", dead.reason.encode()), ("detail", dead.detail.encode()[:500])]
        key, value, headers = fit(dead.key, dead.value, headers, 2_000)
        assert len(key or b"") + len(value or b"") + headers_bytes(headers) <= 2_000
    for records in out.enriched.values():
        for key, value in records:
            assert len(key) + len(value) <= LIMITS.enriched
            enriched = orjson.loads(value)
            user_id, page_url = enriched["user_id"], enriched.get("page_url")
            assert "\x00" not in user_id and len(user_id.encode()) <= MAX_USER_ID_BYTES
            if enriched["event_type"] in ("page_view", "click"):
                assert "\x00" not in page_url and len(page_url.encode()) <= MAX_PAGE_URL_BYTES
    for events_ in out.forward.values():
        for record in encode_events_bounded(events_, LIMITS.user_keyed):
            assert len(record) <= LIMITS.user_keyed
    taken = rows.take()
    if taken:
        table = pa.Table.from_batches([b for r in taken.values() for b in r.batches], SCHEMA)
        pq.write_table(table, io.BytesIO())  # what the lake writes, in memory


@settings(max_examples=300, deadline=None)
@given(st.lists(raw_values, min_size=1, max_size=8))
def test_reading_raises_only_bad_input_and_what_it_accepts_every_sink_takes(values):
    rows = LakeRows()
    reader = BatchReader(300_000, KeyPartitioner(4), KeyPartitioner(4), rows, LIMITS)
    partition = PartitionReader(0, SourceClock(120_000), 0, 0, 0)
    records = [Record(i, v, key=v[:3000] if i % 3 == 0 else None) for i, v in enumerate(values)]
    out = reader.read(partition, records, NOW)
    accepted = sum(len(r) for r in out.enriched.values())
    assert accepted + len(out.dead_letters) == len(values)
    assert all(d.reason for d in out.dead_letters)
    event(f"accepted: {'some' if accepted else 'none'}")
    for dead in out.dead_letters:
        event(f"reason: {dead.reason}")
    check_every_sink_takes(out, rows)
