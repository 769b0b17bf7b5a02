"""Bad input goes to the DLQ as sent; valid input next to it flows on.

A seeded corpus of malformed records (docs/contract.md, Bad input) mixed with valid
ones in every accepted shape (docs/contract.md, Input) is produced to a 4-partition input topic,
part before and part after one worker starts. Then:

- every bad record is in the DLQ exactly once, with its original key and value
  bytes, the expected `reason` header (the codes of app/events.py), a `detail`
  header, and `source_topic/partition/offset` equal to where it was produced;
- every valid record is in the enriched topic exactly once (matched by
  `kafka_partition/kafka_offset`), keyed by `user_id`, with `event_time`
  normalised to ISO-8601 UTC with `Z` and milliseconds, a `processing_time`,
  and its extra fields; and in the lake with the same event time;
- no valid record is dead-lettered, no bad record reaches the enriched topic
  or the lake, and the worker is still alive.

"Future" is measured from the instant the corpus was built (MAX_FUTURE_FROM), not from
the wall clock when the worker reads a record: no race with the reading.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pyarrow as pa
from aiokafka import AIOKafkaProducer
from deltalake import DeltaTable

from tests.integration.checks import lake_offsets, read_topic
from tests.integration.conftest import create_topic, wait_for

PARTITIONS = 4
ISO_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DROP = object()  # a field left out of the record
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Record:
    name: str
    key: bytes | None
    value: bytes | None
    reason: str | None = None  # expected DLQ reason; None for a valid record
    fields: dict = field(default_factory=dict)  # valid: the enriched fields expected
    partition: int | None = None  # where it was produced (RecordMetadata)
    offset: int | None = None

    @property
    def valid(self) -> bool:
        return self.reason is None

    @property
    def position(self) -> tuple[int, int]:
        return self.partition, self.offset


def iso_ms(moment: datetime) -> str:
    """The normalised form the pipeline must emit: `2026-01-29T09:31:03.027Z`."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def as_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Corpus:
    """Builds the records; `now` anchors 'the past' and 'the future'."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        # A recent past instant with a non-zero millisecond part.
        self.base = (now - timedelta(minutes=20)).replace(microsecond=123_000)
        self.records: list[Record] = []
        self.n = 0

    def event(self, **overrides) -> dict:
        """A valid page_view; `field=DROP` removes a field."""
        self.n += 1
        event = {
            "event_time": iso_ms(self.base + timedelta(seconds=self.n)),
            "user_id": f"user-{self.n % 7}",
            "event_type": "page_view",
            "page_url": "/home",
            "event_id": f"e-{self.n}",
        }
        event.update(overrides)
        return {k: v for k, v in event.items() if v is not DROP}

    def bad(self, name: str, value: bytes | None, reason: str, key: bytes | None = b"k") -> None:
        self.records.append(Record(name, key, value, reason))

    def bad_event(self, name: str, reason: str, keyed: bool = True, **overrides) -> None:
        key = f"bad-{name}".encode() if keyed else None
        self.bad(name, as_json(self.event(**overrides)), reason, key)

    def good(
        self, name: str, event_time, expected_time: datetime, keyed: bool = True, **overrides
    ) -> None:
        sent = self.event(event_time=event_time, **overrides)
        expected = {**sent, "user_id": str(sent["user_id"]), "event_time": iso_ms(expected_time)}
        key = expected["user_id"].encode() if keyed else None
        self.records.append(Record(name, key, as_json(sent), None, expected))


def build_corpus(now: datetime, seed: int = 4) -> list[Record]:
    rng = random.Random(seed)
    c = Corpus(now)
    t = c.base

    # -- not UTF-8, not JSON, not an object -----------------------------------
    for i in range(6):
        noise = rng.randbytes(rng.randint(16, 600))
        try:
            noise.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:  # pragma: no cover - the seed makes this impossible
            raise AssertionError("seeded noise happens to be UTF-8; change the seed")
        c.bad(f"random-bytes-{i}", noise, "not_utf8", key=None if i % 2 else b"noise")
    c.bad("latin-1-text", '{"user_id": "café"}'.encode("latin-1"), "not_utf8")
    c.bad("lone-continuation-byte", b'{"event_time": "\x80"}', "not_utf8")
    c.bad("overlong-encoding", b'{"user_id": "\xc0\xaf"}', "not_utf8")
    c.bad("truncated-json", b'{"event_time": "2026-01-29T09:31', "invalid_json")
    c.bad("trailing-garbage", as_json(c.event()) + b" trailing", "invalid_json")
    c.bad(
        "json-nan-literal",
        b'{"event_time": NaN, "user_id": "u", "event_type": "click"}',
        "invalid_json",
    )
    c.bad("number-overflows-double", b'{"event_time": 1e400}', "invalid_json")
    c.bad(
        "lone-surrogate-escape", as_json(c.event()).replace(b'"user-', b'"\\ud800-'), "invalid_json"
    )
    c.bad("whitespace-only", b"   \n", "invalid_json")
    c.bad("utf8-bom", b"\xef\xbb\xbf" + as_json(c.event()), "invalid_json")
    c.bad("json-array", as_json([1, 2, 3]), "not_object")
    c.bad("json-array-of-event", as_json([c.event()]), "not_object")
    c.bad("json-string", as_json("page_view"), "not_object")
    c.bad("json-integer", b"42", "not_object", key=None)
    c.bad("json-float", b"-3.5e2", "not_object")
    c.bad("json-true", b"true", "not_object")
    c.bad("json-null", b"null", "not_object")
    c.bad("empty-value", b"", "empty_value", key=b"empty")
    c.bad("null-key-and-null-value", None, "empty_value", key=None)

    # -- missing and wrongly typed fields --------------------------------------
    for name in ("event_time", "user_id", "event_type"):
        c.bad_event(f"missing-{name}", "missing_field", **{name: DROP})
        c.bad_event(f"null-{name}", "missing_field", keyed=False, **{name: None})
    c.bad_event("page-view-without-page-url", "missing_field", page_url=DROP)
    c.bad_event("click-without-page-url", "missing_field", event_type="click", page_url=DROP)
    c.bad_event(
        "empty-object",
        "missing_field",
        event_time=DROP,
        user_id=DROP,
        event_type=DROP,
        page_url=DROP,
        event_id=DROP,
    )
    c.bad_event("event-time-true", "wrong_type", event_time=True)
    c.bad_event("event-time-false", "wrong_type", event_time=False)
    c.bad_event("event-time-object", "wrong_type", event_time={"iso": iso_ms(t)})
    c.bad_event("event-time-list", "wrong_type", event_time=[iso_ms(t)])
    c.bad_event("user-id-list", "wrong_type", user_id=["u1"])
    c.bad_event("user-id-bool", "wrong_type", user_id=True)
    c.bad_event("user-id-object", "wrong_type", keyed=False, user_id={"id": 1})
    c.bad_event("user-id-empty", "bad_user_id", user_id="")
    c.bad_event("event-type-number", "wrong_type", event_type=1)
    c.bad_event("event-type-list", "wrong_type", event_type=["click"])
    c.bad_event("page-url-number", "wrong_type", page_url=404)
    c.bad_event("page-url-empty", "wrong_type", event_type="click", page_url="")
    c.bad_event(
        "session-start-page-url-bool", "wrong_type", event_type="session_start", page_url=False
    )

    # -- unknown event types ---------------------------------------------------
    for event_type in ("purchase", "PAGE_VIEW", "page-view", " click", ""):
        c.bad_event(f"event-type-{event_type!r}", "unknown_event_type", event_type=event_type)

    # -- absurd and future timestamps ------------------------------------------
    far = now + timedelta(minutes=10)
    c.bad_event("year-9999", "future_event_time", event_time="9999-12-31T23:59:59.999Z")
    c.bad_event("year-9999-epoch-ms", "future_event_time", event_time=253_402_300_799_999)
    c.bad_event(
        "year-9999-west-offset", "future_event_time", event_time="9999-12-31T23:59:59-23:59"
    )
    c.bad_event("ten-minutes-ahead", "future_event_time", event_time=iso_ms(far))
    c.bad_event("ten-minutes-ahead-epoch-s", "future_event_time", event_time=int(far.timestamp()))
    c.bad_event(
        "six-minutes-ahead-naive",
        "future_event_time",
        keyed=False,
        event_time=(now + timedelta(minutes=6)).replace(tzinfo=None).isoformat(),
    )
    c.bad_event("1e30", "bad_event_time", event_time=1e30)
    c.bad_event("huge-integer", "bad_event_time", event_time=10**30)
    c.bad_event("beyond-year-9999-ms", "bad_event_time", event_time=253_402_300_800_000)
    c.bad_event("negative-seconds", "bad_event_time", event_time=-1)
    c.bad_event("negative-ms", "bad_event_time", event_time=-1_700_000_000_000)
    c.bad_event("before-1970-iso", "bad_event_time", event_time="1969-12-31T23:59:59.999Z")
    c.bad_event("year-1", "bad_event_time", event_time="0001-01-01T00:00:00Z")
    for text in (
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "yesterday",
        "",
        "2026-13-45T00:00:00Z",
        "29/01/2026 09:31",
    ):
        c.bad_event(f"event-time-{text!r}", "bad_event_time", event_time=text)

    # -- JSON that orjson reads (up to 1,024 levels) but cannot write (over 254) ----
    deep: list = []
    for _ in range(300):
        deep = [deep]
    c.bad_event("nested-301-levels", "too_deep", nested=deep)

    # -- about 1 MB -------------------------------------------------------------
    c.bad_event(
        "one-megabyte-without-user-id", "missing_field", user_id=DROP, padding="x" * 999_800
    )
    big = next(r for r in c.records if r.name == "one-megabyte-without-user-id")
    assert 990_000 < len(big.value) <= 1_000_000

    # -- valid records, every accepted shape -------------------------------------
    def at(minutes: float) -> datetime:
        return (c.base + timedelta(minutes=minutes)).replace(microsecond=456_000)

    c.good("iso-z", iso_ms(at(1)), at(1))
    c.good("iso-plus-00", at(2).isoformat(timespec="milliseconds"), at(2), keyed=False)
    ahead = at(3).astimezone(timezone(timedelta(hours=5, minutes=30)))
    c.good("iso-plus-05-30", ahead.isoformat(timespec="milliseconds"), at(3))
    c.good(
        "iso-naive",
        at(4).replace(tzinfo=None).isoformat(timespec="milliseconds"),
        at(4),
        keyed=False,
    )
    c.good("iso-micro-naive", at(5).replace(tzinfo=None, microsecond=456_789).isoformat(), at(5))
    whole = at(6).replace(microsecond=0)
    c.good("epoch-seconds", int(whole.timestamp()), whole, keyed=False)
    c.good(
        "epoch-seconds-float", int(whole.timestamp()) + 0.456, whole.replace(microsecond=456_000)
    )
    c.good("epoch-ms", int(at(7).timestamp()) * 1000 + 456, at(7), keyed=False)
    c.good("numeric-user-id", iso_ms(at(8)), at(8), user_id=9_876_543_210)
    c.good("numeric-user-id-unkeyed", iso_ms(at(9)), at(9), keyed=False, user_id=42)
    c.good("unicode-user-id", iso_ms(at(10)), at(10), user_id="ünïcødé-用户-🙂")
    c.good(
        "click-full-url",
        iso_ms(at(11)),
        at(11),
        event_type="click",
        page_url="https://example.com/p?q=1&r=ü",
    )
    c.good(
        "session-start-no-page", iso_ms(at(12)), at(12), event_type="session_start", page_url=DROP
    )
    c.good(
        "session-end-no-event-id",
        iso_ms(at(13)),
        at(13),
        keyed=False,
        event_type="session_end",
        page_url=DROP,
        event_id=DROP,
    )
    c.good(
        "extra-fields-kept",
        iso_ms(at(14)),
        at(14),
        extra={"nested": [1, {"a": None}]},
        referrer="/ads",
        score=1.5,
    )
    c.good("numeric-event-id", iso_ms(at(15)), at(15), event_id=777)
    c.good("one-minute-ahead", iso_ms(now + timedelta(minutes=1)), now + timedelta(minutes=1))
    c.good(
        "three-days-old", iso_ms(at(0) - timedelta(days=3)), at(0) - timedelta(days=3), keyed=False
    )
    c.good("900-kb-extra-field", iso_ms(at(16)), at(16), blob="y" * 900_000)
    for i in range(40):
        moment = at(17) + timedelta(milliseconds=137 * i)
        c.good(f"plain-{i}", iso_ms(moment), moment, keyed=i % 3 != 0, event_type="click")

    records = c.records
    rng.shuffle(records)
    # Each partition ends with a valid record: the worker must keep going after the bad ones.
    for p in range(PARTITIONS):
        moment = at(18) + timedelta(seconds=p)
        c.records = []
        c.good(f"tail-{p}", iso_ms(moment), moment, keyed=False)
        tail = c.records[0]
        tail.partition = p
        records.append(tail)
    return records


async def produce_records(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Send each record; note where it landed. Unkeyed ones go round robin."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_request_size=2 << 20
    )
    await producer.start()
    try:
        for i, record in enumerate(records):
            partition = record.partition
            if partition is None and record.key is None:
                partition = i % PARTITIONS
            if record.key is None and record.value is None:
                # send() refuses a record with neither key nor value; a raw batch does not.
                batch = producer.create_batch()
                batch.append(key=None, value=None, timestamp=None)
                meta = await (await producer.send_batch(batch, topic, partition=partition))
            else:
                meta = await producer.send_and_wait(
                    topic, record.value, key=record.key, partition=partition
                )
            record.partition, record.offset = meta.partition, meta.offset
    finally:
        await producer.stop()


def agent_crashes(worker) -> list[str]:
    """Faust restarts a crashed agent in the same process; the log still tells."""
    return [line for line in worker.tail(100_000).splitlines() if "Crashed reason=" in line]


def headers_of(record) -> dict[str, bytes]:
    return {name: value for name, value in record.headers}


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def expected_lateness(good: list) -> dict[tuple[int, int], bool]:
    """Late = older than its partition's largest earlier event_time minus 2 minutes."""
    late = {}
    stream_time: dict[int, int] = {}
    for sent in sorted(good, key=lambda r: r.position):
        t = epoch_ms(datetime.fromisoformat(str(sent.fields["event_time"]).replace("Z", "+00:00")))
        top = stream_time.get(sent.partition)
        late[sent.position] = top is not None and t < top - 120_000
        stream_time[sent.partition] = t if top is None else max(top, t)
    return late


def lake_rows(lake_dir) -> dict[tuple[int, int], tuple[int, str | None]]:
    """(kafka_partition, kafka_offset) -> (event_time in epoch ms, extra) for every lake row."""
    table = DeltaTable(str(lake_dir)).to_pyarrow_table(
        columns=["kafka_partition", "kafka_offset", "event_time", "extra"]
    )
    times = table["event_time"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
    return {
        (p, o): (t, extra)
        for p, o, t, extra in zip(
            table["kafka_partition"].to_pylist(),
            table["kafka_offset"].to_pylist(),
            times,
            table["extra"].to_pylist(),
            strict=True,
        )
    }


async def test_bad_records_are_dead_lettered_as_sent_and_valid_ones_flow_on(
    bootstrap, pipeline_env, start_worker
):
    started = datetime.now(UTC)
    records = build_corpus(started)
    bad = [r for r in records if not r.valid]
    good = [r for r in records if r.valid]
    assert len(bad) >= 70 and len(good) >= 60
    assert len({r.name for r in records}) == len(records)

    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    half = len(records) // 2
    await produce_records(bootstrap, topic, records[:half])  # a backlog...
    # "future" is judged against the corpus's own now, however late the worker reads a
    # record (a record six minutes ahead of wall time is valid once a minute has passed)
    worker = start_worker(MAX_FUTURE="5m", MAX_FUTURE_FROM=iso_ms(started))
    await asyncio.sleep(3)
    await produce_records(bootstrap, topic, records[half:])  # ...and live records
    assert {r.partition for r in records} == set(range(PARTITIONS))
    by_position = {r.position: r for r in records}
    assert len(by_position) == len(records)
    bad_at = {r.position for r in bad}
    good_at = {r.position for r in good}

    lake_dir = pipeline_env["LAKE_DIR"]
    dlq_topic, enriched_topic = pipeline_env["DLQ_TOPIC"], pipeline_env["ENRICHED_TOPIC"]

    def dlq_position(record) -> tuple[int, int]:
        h = headers_of(record)
        return int(h.get("source_partition", b"-1")), int(h.get("source_offset", b"-1"))

    def enriched_position(record) -> tuple[int, int]:
        value = orjson.loads(record.value)
        return value["kafka_partition"], value["kafka_offset"]

    async def everything_arrived():
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        assert not agent_crashes(worker), "an agent crashed on bad input:\n" + "\n".join(
            agent_crashes(worker)
        )
        dlq = {dlq_position(r) for r in await read_topic(bootstrap, dlq_topic)}
        enriched = {enriched_position(r) for r in await read_topic(bootstrap, enriched_topic)}
        lake = set(lake_offsets(lake_dir))
        missing = {
            "dlq": sorted(by_position[p].name for p in bad_at - dlq),
            "enriched": sorted(by_position[p].name for p in good_at - enriched),
            "lake": sorted(by_position[p].name for p in good_at - lake),
        }
        if not any(missing.values()):
            return True
        counts = ", ".join(f"{sink}={len(names)}" for sink, names in missing.items())
        first = {sink: names[:8] for sink, names in missing.items()}
        return f"missing {counts}; first: {first}"

    await wait_for(everything_arrived, timeout=120, interval=2, what="DLQ, enriched and lake")
    await asyncio.sleep(3)  # a flush more: anything extra or duplicated would show now

    problems: list[str] = []

    # -- the DLQ: every bad record once, exactly as sent ------------------------
    dlq_by_source: dict[tuple[int, int], list] = defaultdict(list)
    for dead in await read_topic(bootstrap, dlq_topic):
        dlq_by_source[dlq_position(dead)].append(dead)
    for position in dlq_by_source:
        sent = by_position.get(position)
        if sent is None or sent.valid:
            problems.append(f"DLQ holds {position}: {sent.name if sent else 'nothing sent there'}")
    for sent in bad:
        copies = dlq_by_source.get(sent.position, [])
        if len(copies) != 1:
            problems.append(f"{sent.name}: {len(copies)} DLQ records, want 1")
            continue
        dead = copies[0]
        h = headers_of(dead)
        if dead.key != sent.key:
            problems.append(f"{sent.name}: DLQ key {dead.key!r:.60} != sent {sent.key!r:.60}")
        if dead.value != sent.value:
            problems.append(
                f"{sent.name}: DLQ value {dead.value!r:.60} ({len(dead.value or b'')} bytes) "
                f"!= sent {sent.value!r:.60} ({len(sent.value or b'')} bytes)"
            )
        if h.get("reason") != sent.reason.encode():
            problems.append(f"{sent.name}: reason {h.get('reason')!r}, want {sent.reason!r}")
        if "detail" not in h:
            problems.append(f"{sent.name}: no detail header")
        if h.get("source_topic") != topic.encode():
            problems.append(f"{sent.name}: source_topic {h.get('source_topic')!r}")

    # -- the enriched topic: every valid record once, normalised ------------------
    enriched_by_source: dict[tuple[int, int], list] = defaultdict(list)
    for out in await read_topic(bootstrap, enriched_topic):
        enriched_by_source[enriched_position(out)].append(out)
    finished = datetime.now(UTC)
    for position in enriched_by_source:
        sent = by_position.get(position)
        if sent is None or not sent.valid:
            problems.append(f"enriched holds {position}: {sent.name if sent else 'nothing'}")
    late = expected_lateness(good)
    for sent in good:
        copies = enriched_by_source.get(sent.position, [])
        if len(copies) != 1:
            problems.append(f"{sent.name}: {len(copies)} enriched records, want 1")
            continue
        out = copies[0]
        value = orjson.loads(out.value)
        processing = value.pop("processing_time", None)
        want = {
            **sent.fields,
            "kafka_partition": sent.partition,
            "kafka_offset": sent.offset,
            "late": late[sent.position],
        }
        if value != want:
            differ = {
                k: (value.get(k), want.get(k))
                for k in set(value) | set(want)
                if value.get(k) != want.get(k)
            }
            problems.append(f"{sent.name}: enriched (got, want) differ: {differ!s:.300}")
        if out.key != sent.fields["user_id"].encode():
            problems.append(f"{sent.name}: enriched key {out.key!r}")
        if not (isinstance(processing, str) and ISO_UTC_MS.match(processing)):
            problems.append(f"{sent.name}: processing_time {processing!r}")
        elif not started - timedelta(seconds=1) <= datetime.fromisoformat(processing) <= finished:
            problems.append(f"{sent.name}: processing_time {processing} outside the test run")
        if not ISO_UTC_MS.match(value.get("event_time", "")):
            problems.append(f"{sent.name}: event_time {value.get('event_time')!r} not normalised")

    # -- the lake: the valid records once, no bad one --------------------------------
    in_lake = lake_offsets(lake_dir)
    if len(in_lake) != len(set(in_lake)):
        problems.append("a source offset is in the lake twice")
    for position in set(in_lake) - good_at:
        sent = by_position.get(position)
        problems.append(f"lake holds {position}: {sent.name if sent else 'nothing sent there'}")
    rows = lake_rows(lake_dir)
    for sent in good:
        row = rows.get(sent.position)
        want_ms = epoch_ms(datetime.fromisoformat(sent.fields["event_time"]))
        if row is None:
            problems.append(f"{sent.name}: not in the lake")
        elif row[0] != want_ms:
            problems.append(f"{sent.name}: lake event_time {row[0]} != {want_ms}")
    blob = next(r for r in good if r.name == "900-kb-extra-field")
    extra = orjson.loads(rows.get(blob.position, (0, "{}"))[1] or "{}")
    if len(extra.get("blob", "")) != 900_000:
        problems.append("the 900 KB extra field did not reach the lake's extra column whole")

    assert worker.alive(), f"worker died:\n{worker.tail()}"
    assert not agent_crashes(worker)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:60])
    print(f"\n{len(bad)} bad records dead-lettered as sent, {len(good)} valid ones flowed on")
