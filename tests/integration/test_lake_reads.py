"""The lake (a Delta table) as deltalake/pyarrow and DuckDB see it while a worker writes.

A few thousand valid events whose event times span three past UTC dates (most
of them late by the time they are read: late events still belong in the lake)
are produced while one worker runs, so readers poll the lake while files are
being written. Once every offset is there, both readers must agree with what
was produced (docs/contract.md, Lake):

- one Hive partition `event_date=YYYY-MM-DD` per UTC date, holding exactly the
  events of that UTC date (also those sent with a non-UTC offset near midnight);
- `event_time` round-trips to the millisecond; `kafka_partition`,
  `kafka_offset` and `processing_time` are columns;
- each (kafka_partition, kafka_offset) appears once; no temporary or hidden
  file is left behind.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
from aiokafka import AIOKafkaProducer
from deltalake import DeltaTable

from tests.integration.conftest import create_topic, wait_for

PARTITIONS = 4
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE = timezone(timedelta(hours=-5))


@dataclass
class Sent:
    event_time_ms: int
    user_id: str
    event_type: str
    partition: int = -1
    offset: int = -1

    @property
    def utc_date(self) -> str:
        return (EPOCH + timedelta(milliseconds=self.event_time_ms)).date().isoformat()


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def written(moment: datetime, style: int):
    """The same instant in the input shapes docs/contract.md, Input, accepts."""
    if style == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if style == 1:
        return moment.isoformat(timespec="milliseconds")  # +00:00
    if style == 2:
        return epoch_ms(moment)
    # A local time whose calendar date can differ from the UTC date near midnight.
    zone = PLUS_TWO if style == 3 else MINUS_FIVE
    return moment.astimezone(zone).isoformat(timespec="milliseconds")


def build_events(today: date, per_day: dict[int, int], seed: int = 21) -> list[tuple[Sent, dict]]:
    """(what to expect, the record value) for `per_day[k]` events k days before today."""
    rng = random.Random(seed)
    events = []
    for days_ago, count in per_day.items():
        midnight = datetime.combine(today - timedelta(days=days_ago), time(), tzinfo=UTC)
        offsets_ms = [0, 86_399_999, 1, 86_399_000]  # the edges of the UTC day
        offsets_ms += [rng.randrange(86_400_000) for _ in range(count - len(offsets_ms))]
        for n, offset_ms in enumerate(offsets_ms):
            moment = midnight + timedelta(milliseconds=offset_ms)
            event_type = rng.choice(["page_view", "click", "session_start", "session_end"])
            value = {
                "event_time": written(moment, n % 5),
                "user_id": f"user-{rng.randrange(300)}",
                "event_type": event_type,
                "event_id": f"{days_ago}-{n}",
            }
            if event_type in ("page_view", "click"):
                value["page_url"] = rng.choice(["/home", "/cart", "/p/1"])
            events.append((Sent(epoch_ms(moment), value["user_id"], event_type), value))
    rng.shuffle(events)
    return events


async def produce_paced(bootstrap: str, topic: str, events: list[tuple[Sent, dict]]) -> None:
    """Send in slices with pauses, so the worker flushes several files per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(events), 400):
            futures = []
            for i, (sent, value) in enumerate(events[start : start + 400], start):
                keyed = i % 2 == 0
                futures.append(
                    await producer.send(
                        topic,
                        orjson.dumps(value),
                        key=sent.user_id.encode() if keyed else None,
                        partition=None if keyed else i % PARTITIONS,
                    )
                )
            for (sent, _), meta in zip(
                events[start : start + 400], await asyncio.gather(*futures), strict=True
            ):
                sent.partition, sent.offset = meta.partition, meta.offset
            await asyncio.sleep(0.7)
    finally:
        await producer.stop()


def read_with_pyarrow(lake_dir: str) -> pa.Table:
    return DeltaTable(lake_dir).to_pyarrow_dataset().to_table()


def read_with_duckdb(lake_dir: str, select: str) -> list[tuple]:
    lake = DeltaTable(lake_dir).to_pyarrow_dataset()
    with duckdb.connect() as con:
        con.register("lake", lake)
        return con.execute(select.format(lake="lake")).fetchall()


def hidden_or_temporary_files(lake_dir: str) -> list[str]:
    found = []
    for folder, _, names in os.walk(lake_dir):
        if os.path.basename(folder) == "_delta_log":
            continue
        found += [os.path.join(folder, n) for n in names if n.startswith(".") or "tmp" in n]
    return found


async def test_lake_reads_back_per_utc_date_with_pyarrow_and_duckdb(
    bootstrap, pipeline_env, start_worker
):
    started = datetime.now(UTC)
    per_day = {3: 1300, 2: 900, 1: 1100}
    events = build_events(started.date(), per_day)
    total = len(events)
    sent_by_date = Counter(sent.utc_date for sent, _ in events)
    assert len(sent_by_date) == 3 and sum(sent_by_date.values()) == total

    topic = pipeline_env["INPUT_TOPIC"]
    lake_dir = pipeline_env["LAKE_DIR"]
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker()
    producing = asyncio.create_task(produce_paced(bootstrap, topic, events))

    async def lake_complete():
        """Both readers poll the lake while it is being written: no half file may show."""
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        if not (Path(lake_dir) / "_delta_log").exists():
            return "no lake table yet"
        rows = read_with_pyarrow(lake_dir).num_rows
        (distinct,) = read_with_duckdb(
            lake_dir, "SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM {lake}"
        )[0]
        if producing.done() and distinct == total and rows == total:
            return True
        return f"pyarrow sees {rows} rows, duckdb {distinct} distinct offsets, of {total}"

    await wait_for(lake_complete, timeout=120, interval=1, what="every event in the lake")
    await producing
    finished = datetime.now(UTC)
    expected = {(sent.partition, sent.offset): sent for sent, _ in events}
    assert len(expected) == total

    # -- the files ------------------------------------------------------------------
    assert hidden_or_temporary_files(lake_dir) == []
    folders = sorted(p.name for p in Path(lake_dir).iterdir() if p.name != "_delta_log")
    assert folders == sorted(f"event_date={d}" for d in sent_by_date)
    for folder in Path(lake_dir).glob("event_date=*"):
        assert all(f.suffix == ".parquet" for f in folder.iterdir()), list(folder.iterdir())

    # -- pyarrow.dataset ---------------------------------------------------------------
    table = read_with_pyarrow(lake_dir)
    for column in ("event_time", "user_id", "event_type", "event_date"):
        assert column in table.column_names
    for column in ("kafka_partition", "kafka_offset", "processing_time"):
        assert column in table.column_names
        assert table[column].null_count == 0, column
    # Delta's timestamp is in microseconds; the values are whole milliseconds
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    rows = zip(
        table["kafka_partition"].to_pylist(),
        table["kafka_offset"].to_pylist(),
        [t // 1000 for t in table["event_time"].cast(pa.int64()).to_pylist()],
        [str(d) for d in table["event_date"].to_pylist()],
        table["user_id"].to_pylist(),
        table["event_type"].to_pylist(),
        table["processing_time"].to_pylist(),
        strict=True,
    )
    seen: Counter = Counter()
    by_date: Counter = Counter()
    for partition, offset, event_time_ms, event_date, user_id, event_type, processed in rows:
        seen[(partition, offset)] += 1
        by_date[event_date] += 1
        sent = expected.get((partition, offset))
        assert sent is not None, f"lake row for {(partition, offset)} that was never sent"
        assert event_time_ms == sent.event_time_ms, (partition, offset)
        assert event_date == sent.utc_date, (partition, offset, event_time_ms)
        assert (user_id, event_type) == (sent.user_id, sent.event_type)
        assert started - timedelta(seconds=1) <= processed <= finished
    assert set(seen) == set(expected)
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]
    assert by_date == sent_by_date

    # -- DuckDB --------------------------------------------------------------------------
    columns = {name for name, *_ in read_with_duckdb(lake_dir, "DESCRIBE SELECT * FROM {lake}")}
    assert {"kafka_partition", "kafka_offset", "processing_time", "event_date"} <= columns
    duck_by_date = read_with_duckdb(
        lake_dir, "SELECT CAST(event_date AS VARCHAR), count(*) FROM {lake} GROUP BY 1"
    )
    assert dict(duck_by_date) == dict(sent_by_date)
    duplicated = read_with_duckdb(
        lake_dir,
        "SELECT kafka_partition, kafka_offset, count(*) FROM {lake} "
        "GROUP BY 1, 2 HAVING count(*) > 1",
    )
    assert duplicated == []
    duck_rows = read_with_duckdb(
        lake_dir,
        "SELECT kafka_partition, kafka_offset, epoch_ms(event_time), "
        "CAST(event_date AS VARCHAR), processing_time IS NOT NULL FROM {lake}",
    )
    assert len(duck_rows) == total
    for partition, offset, event_time_ms, event_date, has_processing_time in duck_rows:
        sent = expected[(partition, offset)]
        assert (event_time_ms, event_date) == (sent.event_time_ms, sent.utc_date)
        assert has_processing_time
    print(f"\nlake: {total} rows over {dict(sorted(sent_by_date.items()))}, read back exactly")
