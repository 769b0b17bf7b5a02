"""python -m producer: simulate users and publish JSON events to `user_activity`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer

from app import cli
from app.events import iso_utc
from app.settings import kafka_connection, parse_duration_ms
from producer.simulator import Simulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m producer", description=__doc__)
    p.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    p.add_argument("--users", type=int, default=500, help="simulated users (default 500)")
    p.add_argument("--count", type=int, default=None, help="stop after this many events")
    p.add_argument("--duration", default=None, help="stop after this long (e.g. 60s, 10m)")
    p.add_argument(
        "--late-ratio", type=float, default=0.05, help="share of late events (default 0.05)"
    )
    p.add_argument("--lateness", default="3m", help="how far late events lag (default 3m)")
    p.add_argument("--bad-ratio", type=float, default=0.0, help="share of malformed records")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated event-time seconds per wall second (default 1); above 1 the "
        "clock starts in the past so it never runs ahead of wall time",
    )
    p.add_argument("--no-key", action="store_true", help="send records without a key")
    p.add_argument(
        "--topic", default=None, help="topic (default: ACTIVITY_INPUT_TOPIC or user_activity)"
    )
    cli.add_kafka_options(p)
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines: only the LATE lines (one per late event) and the summary",
    )
    args = p.parse_args(argv)
    if args.rate <= 0 or args.users <= 0 or args.speed <= 0:
        p.error("--rate, --users and --speed must be positive")
    if not 0 <= args.late_ratio <= 1 or not 0 <= args.bad_ratio <= 1:
        p.error("--late-ratio and --bad-ratio must be between 0 and 1")
    return args


async def run(args: argparse.Namespace) -> int:
    settings = cli.settings_from(args)
    topic = args.topic or settings.input_topic
    duration_s = parse_duration_ms("--duration", args.duration) / 1000 if args.duration else None
    # A bounded run fits its whole simulated span in the past; an endless one starts
    # 20 simulated minutes back and is held at wall time once it catches up.
    planned_s = duration_s or (args.count / args.rate if args.count else 1200.0 / args.speed)
    now_ms = int(time.time() * 1000)
    span_ms = planned_s * 1000 * args.speed
    start_ms = now_ms - int(span_ms) if args.speed > 1 else now_ms
    sim = Simulator(
        args.users,
        args.seed,
        start_ms,
        step_ms=1000 * args.speed / args.rate,
        late_ratio=args.late_ratio,
        lateness_ms=parse_duration_ms("--lateness", args.lateness),
        bad_ratio=args.bad_ratio,
    )
    producer = AIOKafkaProducer(linger_ms=5, acks="all", **kafka_connection(settings))
    await producer.start()
    sent = late = bad = 0
    began = time.monotonic()
    last_progress = began
    try:
        for item in sim:
            sim.clock = min(sim.clock, time.time() * 1000)  # never ahead of wall time
            if args.count is not None and sent >= args.count:
                break
            elapsed = time.monotonic() - began
            if duration_s is not None and elapsed >= duration_s:
                break
            if isinstance(item.value, bytes):
                value, bad = item.value, bad + 1
            else:
                item.value["event_time"] = iso_utc(item.value["event_time"])
                value = orjson.dumps(item.value)
            key = None if args.no_key or item.user_id is None else item.user_id.encode()
            await producer.send(topic, value, key=key)
            sent += 1
            if item.late:
                late += 1
                print(
                    f"LATE event {item.value['event_id']} user={item.user_id} "
                    f"event_time={item.value['event_time']}",
                    flush=True,
                )
            ahead = sent / args.rate - (time.monotonic() - began)
            if ahead > 0.01:
                await asyncio.sleep(ahead)
            if not args.quiet and time.monotonic() - last_progress >= 2:
                last_progress = time.monotonic()
                rate = sent / (last_progress - began)
                print(
                    f"progress: sent={sent} rate={rate:.0f}/s late={late} bad={bad}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        await producer.stop()
    took = time.monotonic() - began
    print(
        f"done: sent={sent} late={late} bad={bad} in {took:.1f}s "
        f"({sent / max(took, 1e-9):.0f}/s) to {topic}",
        file=sys.stderr,
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
