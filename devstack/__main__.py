"""python -m devstack {infra,up,down,env,status}: the local stack without Docker."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
import time

from devstack import live, stack
from devstack.process import Background, StackError, say, tail

APPS = {
    "worker": [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "info"],
    "producer": [sys.executable, "-m", "producer"],
}


def _app(name: str) -> Background:
    """The worker or the producer `up` runs, its log in the state folder's logs/."""
    state = stack.state_dir()
    return Background(state / "logs" / f"{name}.log", state / f"{name}.pid")


def cmd_infra(_: argparse.Namespace) -> None:
    info = stack.up()
    say("# the local stack is up; use it with:")
    print(info.exports())


READY_TIMEOUT_S = 180.0


def step(text: str) -> None:
    say(f"==> {text}")


def cmd_up(args: argparse.Namespace) -> None:
    from dotenv import load_dotenv

    from app.settings import Settings

    load_dotenv(override=False)
    # an unknown or bad ACTIVITY_* variable stops here; STATE_DIR is devstack's own
    settings = Settings.from_env({k: v for k, v in os.environ.items() if k != "STATE_DIR"})
    info = stack.up(progress=step)
    step(f"Kafka: topic {settings.input_topic} ({settings.partitions} partitions)")
    settings = dataclasses.replace(settings, kafka_bootstrap_servers=info.bootstrap)
    asyncio.run(_create_input_topic(settings))
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
    web = f"http://{host}:{settings.web_port}"
    env = {
        **os.environ,
        "ACTIVITY_KAFKA_BOOTSTRAP_SERVERS": info.bootstrap,
        "ACTIVITY_DATABASE_URL": info.database_url,
        **(info.s3.environment() if info.s3 else {}),
    }
    # devstack's own folder, not the worker's RocksDB state (ACTIVITY_STATE_DIR)
    env.pop("STATE_DIR", None)
    logs = stack.state_dir() / "logs"
    for name, argv in APPS.items():
        app = _app(name)
        pid = app.running_pid()
        if pid is None:
            step(f"{name}: starting, log {app.log}")
            app.start(argv + (args.producer_args if name == "producer" else []), env=env)
        else:
            step(f"{name}: already running (pid {pid}), log {app.log}")
        if name == "worker":
            step(f"worker: waiting until {web}/readyz says ready (partitions assigned)")
            _wait_ready(web, app)

    def stopped() -> int | None:
        for name in APPS:
            app = _app(name)
            if app.running_pid() is None:
                say(f"\n{name} has stopped; last lines of its log:\n{tail(app.log)}")
                if name == "worker":
                    return 1
        return None

    print(live.guide(web, info.bootstrap, info.database_url, logs, stack.ROOT), flush=True)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        live.watch(web, stopped)
    except KeyboardInterrupt:
        print(flush=True)
    finally:
        stopped_apps = _stop_apps()
        if stopped_apps:
            step(
                f"stopped: {', '.join(stopped_apps)} (Kafka and PostgreSQL still run: `make down`)"
            )


async def _create_input_topic(settings) -> None:
    """Made before the worker subscribes: a topic the producer's first send makes later
    would reach the worker only at its next metadata refresh (minutes)."""
    from aiokafka.admin import NewTopic

    from app.kafka_clients import KafkaClients, create_topics

    admin = KafkaClients(settings).admin()
    await admin.start()
    try:
        topic = NewTopic(settings.input_topic, settings.partitions, settings.replication_factor)
        await create_topics(admin, [topic])
    finally:
        await admin.close()


def _wait_ready(web: str, worker: Background) -> None:
    log = worker.log
    began = time.monotonic()
    while time.monotonic() - began < READY_TIMEOUT_S:
        if worker.running_pid() is None:
            raise StackError(
                f"the worker stopped while starting; last lines of {log}:\n{tail(log)}"
            )
        status, _ = live.get_json(f"{web}/readyz")
        if status == 200:
            step(f"worker: ready in {time.monotonic() - began:.0f}s")
            return
        time.sleep(1)
    step(f"worker: not ready after {READY_TIMEOUT_S:.0f}s; going on (see {log})")


def cmd_psql(args: argparse.Namespace) -> None:
    """psql on the stack's database (the URL `make infra`/`make up` printed)."""
    from devstack.postgres import find_bindir

    path = stack.state_dir() / "stack.env"
    url = None
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("export DATABASE_URL="):
                url = line.split("=", 1)[1]
    url = url or stack.configured("DATABASE_URL") or stack.DEFAULT_DATABASE_URL
    psql = str(find_bindir() / "psql")
    os.execv(psql, [psql, url, *args.psql_args])


def _stop_apps() -> list[str]:
    return [name for name in APPS if _app(name).stop()]


def cmd_down(_: argparse.Namespace) -> None:
    stopped = _stop_apps() + stack.down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def cmd_env(_: argparse.Namespace) -> None:
    path = stack.state_dir() / "stack.env"
    print(path.read_text() if path.exists() else "# the stack is not up: run `make infra`")


def cmd_status(_: argparse.Namespace) -> None:
    running = stack.started()
    if running:
        print(
            "still running (started by devstack): "
            + ", ".join(running)
            + ". `make down` stops them."
        )
    else:
        print("devstack started no Kafka, PostgreSQL or S3 server that is still running.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "infra",
        help="start (or reuse) Kafka and PostgreSQL, and the S3 server for a lake on a local S3",
    ).set_defaults(func=cmd_infra)
    up = sub.add_parser(
        "up",
        help="infra, then a worker and the producer until Ctrl-C; other options go to "
        "`python -m producer`",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what infra/up started").set_defaults(func=cmd_down)
    sub.add_parser(
        "psql", help="psql on the stack's database; other options go to psql (-c 'SELECT 1')"
    ).set_defaults(func=cmd_psql)
    sub.add_parser("env", help="print the export lines of the running stack").set_defaults(
        func=cmd_env
    )
    sub.add_parser(
        "status",
        help="say whether the Kafka, PostgreSQL and S3 server it started are still running",
    ).set_defaults(func=cmd_status)
    # `up` passes every option it does not know to `python -m producer`
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("up", "psql"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.producer_args = args.psql_args = extra
    try:
        args.func(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
