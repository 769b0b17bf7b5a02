"""The lake's columns: buffered rows as Arrow record batches, and those as one table."""

from __future__ import annotations

from collections.abc import Mapping
from operator import attrgetter, methodcaller
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from app.sinks.lake.rows import PartitionRows

DAY_MS = 86_400_000
PARTITION_COLUMN = "event_date"
# Delta's timestamp type is microseconds (UTC-adjusted); the values are whole milliseconds.
TIMESTAMP = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("event_time", TIMESTAMP),
        ("user_id", pa.string()),
        ("event_type", pa.string()),
        ("page_url", pa.string()),
        ("event_id", pa.string()),
        ("extra", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("processing_time", TIMESTAMP),
        ("late", pa.bool_()),
        (PARTITION_COLUMN, pa.date32()),
    ]
)
# LakeRows keeps STRIDE items per row in one flat list: offset, Event, processing ms, late
STRIDE = 4
_KNOWN = frozenset({"event_time", "user_id", "event_type", "page_url", "event_id"})
_EVENT_TIME, _USER_ID, _EVENT_TYPE, _PAGE_URL, _FIELDS = map(
    attrgetter, ("event_time", "user_id", "event_type", "page_url", "fields")
)
_EVENT_ID = methodcaller("get", "event_id")


def _event_ids(fields: list[dict]) -> list:
    ids = list(map(_EVENT_ID, fields))
    try:
        pa.array(ids, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):  # an id sent as a number (or other JSON)
        return [v if v is None or isinstance(v, str) else str(v) for v in ids]
    return ids


def _extras(fields: list[dict]) -> list:
    """JSON of the fields the contract does not name, None where there are none."""
    plain = list(map(_KNOWN.issuperset, fields))
    if all(plain):
        return [None] * len(plain)
    return [
        None if known else orjson.dumps({k: v for k, v in f.items() if k not in _KNOWN}).decode()
        for known, f in zip(plain, fields, strict=True)
    ]


def derive_columns(flat: list) -> dict[str, list]:
    """The columns of LakeRows' flat rows (see STRIDE) as Python lists: every column of
    SCHEMA but kafka_partition and event_date, which come from the partition and event_time."""
    events = flat[1::STRIDE]
    fields = list(map(_FIELDS, events))
    return {
        "event_time": list(map(_EVENT_TIME, events)),
        "user_id": list(map(_USER_ID, events)),
        "event_type": list(map(_EVENT_TYPE, events)),
        "page_url": list(map(_PAGE_URL, events)),
        "event_id": _event_ids(fields),
        "extra": _extras(fields),
        "kafka_offset": flat[0::STRIDE],
        "processing_time": flat[2::STRIDE],
        "late": flat[3::STRIDE],
    }


def _timestamps(ms: list[int]) -> pa.Array:
    return pa.array(ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC")).cast(TIMESTAMP)


def to_arrow(batches: Mapping[int, PartitionRows]) -> pa.Table:
    """All rows of `batches` as one table in SCHEMA (their record batches, not copied)."""
    return pa.Table.from_batches(
        [batch for rows in batches.values() for batch in rows.batches], schema=SCHEMA
    )


def to_record_batch(partition: int, flat: list) -> pa.RecordBatch:
    """LakeRows' flat rows of one source partition (see STRIDE) in SCHEMA."""
    columns = derive_columns(flat)
    event_ms = pa.array(columns["event_time"], pa.int64())
    arrays = {
        "event_time": event_ms.cast(pa.timestamp("ms", tz="UTC")).cast(TIMESTAMP),
        "user_id": pa.array(columns["user_id"], pa.string()),
        "event_type": pa.array(columns["event_type"], pa.string()),
        "page_url": pa.array(columns["page_url"], pa.string()),
        "event_id": pa.array(columns["event_id"], pa.string()),
        "extra": pa.array(columns["extra"], pa.string()),
        "kafka_partition": pa.repeat(pa.scalar(partition, pa.int32()), len(flat) // STRIDE),
        "kafka_offset": pa.array(columns["kafka_offset"], pa.int64()),
        "processing_time": _timestamps(columns["processing_time"]),
        "late": pa.array(columns["late"], pa.bool_()),
        PARTITION_COLUMN: pc.divide(event_ms, DAY_MS).cast(pa.int32()).cast(pa.date32()),
    }
    return pa.record_batch([arrays[f.name] for f in SCHEMA], schema=SCHEMA)
