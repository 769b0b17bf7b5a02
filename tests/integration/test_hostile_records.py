"""No single record stops the pipeline (docs/contract.md, Limits; Bad input).

A keyed scenario of about 2,000 events on 4 partitions runs through one worker with
one class of hostile records sent in the middle of it:

- `output-too-large`: valid JSON whose outputs cannot be written: a `user_id` of 600 kB
  (the enriched record carries it twice), and a 1.2 MB record that the input topic
  takes (its limit is 2 MiB here) and the enriched topic (Kafka's 1 MiB) cannot;
- `dead-letter-too-large`: a 1.5 MB record without its required fields, sent gzip
  compressed (the broker takes it), whose dead-letter copy cannot be sent whole;
- `postgres-cannot-store`: strings PostgreSQL cannot hold or index: U+0000 in a
  `page_url` and a `user_id`, a 6,000-character URL.

Legal but unusual values ride along in every run (a `user_id` and a `page_url` of
exactly the longest allowed length, quotes, SQL keywords, emoji, non-ASCII) and must
be carried exactly. Afterwards the PostgreSQL tables equal the expectation computed
from the accepted events, each hostile record is in the dead-letter topic once with
its reason (truncated, with its size and digest, where it did not fit), and the lake
and `enriched_activity` (read_committed) hold every accepted record once.
"""

from __future__ import annotations

import hashlib
import zlib

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import scenario
from tests.integration.checks import diff, lake_offsets, produce, read_rows, read_topic
from tests.integration.conftest import create_topic, wait_for
from tests.integration.web_support import api

PARTITIONS = 4
MAX_USER_ID_BYTES = 256
MAX_PAGE_URL_BYTES = 2048
# a user and pages a careless sink would mangle: quotes, SQL, emoji, non-ASCII
ODD_USER = "Ünïcødé-用户-🙂 'o''neil' \"dq\"; DROP TABLE user_sessions;--"
ODD_PAGES = [
    '/p?q=\'; DELETE FROM page_view_counts;--&x="ü🙂"',
    "/search?q=%00&name=O'Brien\\",
]


def padded(text: str, size: int) -> str:
    """`text` padded with ASCII to exactly `size` UTF-8 bytes."""
    return text + "x" * (size - len(text.encode()))


def add_unusual_events(per_partition: list[list[scenario.Sent]], start_ms: int) -> None:
    """Sessions of users with unusual but legal ids and pages, in time order."""
    users = [ODD_USER, padded("longest-", MAX_USER_ID_BYTES)]
    pages = [*ODD_PAGES, padded("/longest?", MAX_PAGE_URL_BYTES)]
    for n, user in enumerate(users):
        partition = zlib.crc32(user.encode()) % PARTITIONS
        t = start_ms + 5 * scenario.MIN + n * 7_001
        events = [scenario.Sent(t, user, "session_start", None, partition)]
        for i, page in enumerate(pages):
            events.append(scenario.Sent(t + (i + 1) * 10_003, user, "page_view", page, partition))
        events.append(scenario.Sent(t + 60_007, user, "session_end", None, partition))
        seq = per_partition[partition]
        for event in events:
            at = next((k for k, e in enumerate(seq) if e.t > event.t), len(seq))
            seq.insert(at, event)


def event(t_ms: int, user_id, page_url="/home", event_type="page_view", **extra) -> dict:
    body = scenario.Sent(t_ms, "x", event_type, None, 0).value()
    body["user_id"] = user_id
    if page_url is not None:
        body["page_url"] = page_url
    return {**body, **extra}


def hostile_records(kind: str, t_ms: int) -> list[tuple[dict | bytes, str, str | None]]:
    """(value, expected reason, producer compression) of the hostile records of `kind`."""
    if kind == "output-too-large":
        return [
            # under 1 MiB, but its enriched record carries the id twice (key and value)
            (event(t_ms, "u" * 600_000), "user_id_too_long", None),
            # the input topic takes 2 MiB here; the enriched topic keeps Kafka's 1 MiB
            (event(t_ms, "big-user", blob="b" * 1_200_000), "too_large", None),
        ]
    if kind == "dead-letter-too-large":
        missing = event(t_ms, None, blob="z" * 1_500_000)
        return [(missing, "missing_field", "gzip")]
    if kind == "postgres-cannot-store":
        return [
            (event(t_ms, "nul-user", page_url="/home\u0000evil"), "nul_character", None),
            (event(t_ms, "nul\u0000user"), "nul_character", None),
            (event(t_ms, "long-url-user", page_url="/" + "a" * 5_999), "page_url_too_long", None),
        ]
    raise AssertionError(kind)


async def send_hostile(bootstrap: str, topic: str, records) -> list[tuple[int, int, bytes, str]]:
    """Send each record to a partition of its own; (partition, offset, value, reason)."""
    sent = []
    for i, (value, reason, compression) in enumerate(records):
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            compression_type=compression,
            max_request_size=4 << 20,
        )
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, raw, key=b"hostile", partition=i % 4)
        finally:
            await producer.stop()
        sent.append((meta.partition, meta.offset, raw, reason))
    return sent


def headers_of(record) -> dict[str, bytes]:
    return dict(record.headers)


def position_of_enriched(record) -> tuple[int, int]:
    value = orjson.loads(record.value)
    return value["kafka_partition"], value["kafka_offset"]


@pytest.mark.parametrize(
    "kind", ["output-too-large", "dead-letter-too-large", "postgres-cannot-store"]
)
async def test_one_hostile_record_stops_nothing(kind, bootstrap, pipeline_env, start_worker):
    per_partition, _, _ = scenario.in_the_past(
        seed=27, users=120, partitions=PARTITIONS, keyed=True, hours_ago=3, offset_ms=31
    )
    start_ms = min(seq[0].t for seq in per_partition)
    add_unusual_events(per_partition, start_ms)
    expected = scenario.expect(per_partition)
    odd_rows = [k for k in expected.sessions if k[0] == ODD_USER]
    assert odd_rows and any(url in ODD_PAGES for _, url in expected.page_views)

    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS, {"max.message.bytes": str(2 << 20)})
    first = [seq[: len(seq) // 2] for seq in per_partition]
    rest = [seq[len(seq) // 2 :] for seq in per_partition]
    worker = start_worker(IDLE_ADVANCE="1h")
    await produce(bootstrap, topic, first, keyed=True)
    # on time everywhere: accepted, they would count in the windows and sessions
    on_time = max(e.t for seq in first for e in seq) + 1_000
    hostile = await send_hostile(bootstrap, topic, hostile_records(kind, on_time))
    await produce(bootstrap, topic, rest, keyed=True)
    hostile_at = {(p, o): (raw, reason) for p, o, raw, reason in hostile}
    every = {(r.partition, r.offset) for r in await read_topic(bootstrap, topic)}
    accepted = every - set(hostile_at)
    assert len(accepted) == sum(len(seq) for seq in per_partition)

    url = pipeline_env["DATABASE_URL"]

    async def converged():
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        return diff(expected, await read_rows(url)) or True

    await wait_for(converged, timeout=180, interval=2, what="rows to equal the expectation")

    dlq_topic = pipeline_env["DLQ_TOPIC"]

    async def dead_lettered():
        got = {
            (int(headers_of(r)["source_partition"]), int(headers_of(r)["source_offset"]))
            for r in await read_topic(bootstrap, dlq_topic)
        }
        return True if set(hostile_at) <= got else f"{len(got)} of {len(hostile_at)}"

    await wait_for(dead_lettered, timeout=60, interval=2, what="the hostile records' dead letters")
    problems = []
    dead = {}
    for record in await read_topic(bootstrap, dlq_topic):
        h = headers_of(record)
        position = (int(h["source_partition"]), int(h["source_offset"]))
        if position in dead:
            problems.append(f"{position} dead-lettered twice")
        dead[position] = record
    for position, (raw, reason) in hostile_at.items():
        record = dead[position]
        h = headers_of(record)
        if h["reason"] != reason.encode():
            problems.append(f"{position}: reason {h['reason']!r}, want {reason!r}")
        if h["source_topic"] != topic.encode():
            problems.append(f"{position}: source_topic {h['source_topic']!r}")
        if record.value == raw:
            continue
        # too large for the dead-letter topic: a prefix, with the size and digest of all
        if not (record.value and raw.startswith(record.value)):
            problems.append(f"{position}: the dead letter is not a prefix of the record")
        if h.get("truncated") != b"value":
            problems.append(f"{position}: truncated header {h.get('truncated')!r}")
        if h.get("value_size") != str(len(raw)).encode():
            problems.append(f"{position}: value_size {h.get('value_size')!r} != {len(raw)}")
        if h.get("value_sha256") != hashlib.sha256(raw).hexdigest().encode():
            problems.append(f"{position}: value_sha256 does not match the record")

    enriched = [
        position_of_enriched(r) for r in await read_topic(bootstrap, pipeline_env["ENRICHED_TOPIC"])
    ]
    if sorted(enriched) != sorted(accepted):
        problems.append(
            f"enriched: {len(enriched)} records, {len(set(enriched))} distinct, "
            f"{len(accepted - set(enriched))} accepted missing, "
            f"{len(set(enriched) - accepted)} not accepted"
        )
    odd = [
        orjson.loads(r.value)
        for r in await read_topic(bootstrap, pipeline_env["ENRICHED_TOPIC"])
        if r.key == ODD_USER.encode()
    ]
    if {e.get("page_url") for e in odd} - {None} != set(ODD_PAGES) | {
        padded("/longest?", MAX_PAGE_URL_BYTES)
    }:
        problems.append(f"the odd user's pages were not carried exactly: {odd[:2]}")

    async def lake_complete():
        got = lake_offsets(pipeline_env["LAKE_DIR"])
        return True if set(got) >= accepted else f"{len(set(got))} of {len(accepted)} offsets"

    await wait_for(lake_complete, timeout=60, interval=2, what="every accepted record in the lake")
    in_lake = lake_offsets(pipeline_env["LAKE_DIR"])
    if sorted(in_lake) != sorted(accepted):
        problems.append(
            f"lake: {len(in_lake)} rows, {len(set(in_lake))} distinct, "
            f"{len(set(in_lake) - accepted)} not accepted"
        )
    status, health = await api(worker, "/api/health")
    stages = health["checks"]["stages"] if isinstance(health, dict) else health
    if status != 200 or any(s["loop_errors"] or s["stuck_partitions"] for s in stages.values()):
        problems.append(f"/api/health {status}: {stages}")
    assert worker.alive(), f"worker died:\n{worker.tail()}"
    assert not problems, "\n".join(problems)
