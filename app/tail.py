"""python -m app.tail TOPIC: the newest records of a topic, as a `read_committed` reader sees them.

    python -m app.tail enriched_activity            # the newest 5 records, then exit
    python -m app.tail user_activity_dlq -n 3       # dead letters, with their reason header
    python -m app.tail enriched_activity --late     # the newest 5 with "late": true
    python -m app.tail enriched_activity --follow   # then every new one until Ctrl-C

One line per record: `partition/offset key value`, then the headers (a dead letter's
`reason`, its source partition and offset) when it has any. The broker comes from the
settings (ACTIVITY_KAFKA_BOOTSTRAP_SERVERS, .env) or --bootstrap-servers. Only committed
records are shown: the enriched and dead-letter topics are written in transactions.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from app import cli
from app.aiokafka_internals import consumer_client
from app.settings import kafka_connection

# --late looks this far back in each partition for late records
LATE_SCAN = 200_000
READ_FOR_S = 30.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m app.tail", description=__doc__.split("\n")[0].split(": ", 1)[1]
    )
    p.add_argument("topic", help="e.g. enriched_activity, user_activity_dlq, user_activity")
    p.add_argument("-n", "--max", type=int, default=5, help="how many records (default 5)")
    p.add_argument("--late", action="store_true", help='only records whose value has "late": true')
    p.add_argument("--follow", action="store_true", help="then print new records until Ctrl-C")
    cli.add_kafka_options(p)
    args = p.parse_args(argv)
    if args.max < 1:
        p.error("-n must be at least 1")
    return args


def is_late(value: bytes | None) -> bool:
    try:
        return bool(orjson.loads(value or b"null").get("late"))
    except (orjson.JSONDecodeError, AttributeError):
        return False


def line(record) -> str:
    key = record.key.decode(errors="replace") if record.key is not None else "-"
    value = (record.value or b"").decode(errors="replace")
    text = f"{record.partition}/{record.offset} {key} {value}"
    if record.headers:
        shown = {k: v.decode(errors="replace") for k, v in record.headers}
        text += f"  headers={orjson.dumps(shown).decode()}"
    return text


async def tail(args: argparse.Namespace, out=sys.stdout) -> int:
    settings = cli.settings_from(args)
    consumer = AIOKafkaConsumer(
        isolation_level="read_committed", enable_auto_commit=False, **kafka_connection(settings)
    )
    await consumer.start()
    try:
        # the cluster's metadata: an unsubscribed consumer keeps none
        cluster = await consumer_client(consumer).fetch_all_metadata()
        partitions = cluster.partitions_for_topic(args.topic)
        if not partitions:
            print(f"no topic {args.topic!r} at {settings.kafka_bootstrap_servers}", file=sys.stderr)
            return 1
        tps = [TopicPartition(args.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offset
        back = LATE_SCAN if args.late else args.max * 2 + 2  # commit markers take offsets
        for tp in tps:
            consumer.seek(tp, max(starts[tp], ends[tp] - back))
        found = []
        deadline = time.monotonic() + READ_FOR_S
        while time.monotonic() < deadline and any(
            [await _behind(consumer, tp, ends[tp]) for tp in tps]
        ):
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                found += [
                    r for r in records if r.offset < ends[TopicPartition(r.topic, r.partition)]
                ]
        if args.late:
            found = [r for r in found if is_late(r.value)]
        found.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        for record in found[-args.max :]:
            print(line(record), file=out, flush=True)
        if not found:
            print(f"({args.topic}: no{' late' if args.late else ''} records)", file=sys.stderr)
        while args.follow:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    if not args.late or is_late(record.value):
                        print(line(record), file=out, flush=True)
    finally:
        await consumer.stop()
    return 0


async def _behind(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
    return await consumer.position(tp) < end


def main(argv: list[str] | None = None) -> int:
    return cli.run(tail(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
