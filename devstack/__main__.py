"""python -m devstack {infra,up,down,env,status}: the local stack without Docker."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from devstack import stack
from devstack.process import StackError, read_pid, say, spawn, stop_pid, tail

APPS = {
    "worker": [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "info"],
    "producer": [sys.executable, "-m", "producer"],
}


def _app_pidfile(name: str):
    return stack.state_dir() / f"{name}.pid"


def cmd_infra(_: argparse.Namespace) -> None:
    info = stack.up()
    say("# the local stack is up; use it with:")
    print(info.exports())


def cmd_up(args: argparse.Namespace) -> None:
    info = stack.up()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": info.bootstrap,
        "DATABASE_URL": info.database_url,
        **(info.s3.environment() if info.s3 else {}),
    }
    logs = stack.state_dir() / "logs"
    for name, argv in APPS.items():
        if read_pid(_app_pidfile(name)) is None:
            spawn(
                argv + (args.producer_args if name == "producer" else []),
                logs / f"{name}.log",
                _app_pidfile(name),
                env=env,
            )
            say(f"{name}: started, log {logs / f'{name}.log'}")
    print(info.exports())
    say("Ctrl-C stops the worker and producer (`make down` stops everything).")

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        while True:
            time.sleep(5)
            for name in APPS:
                if read_pid(_app_pidfile(name)) is None:
                    say(f"{name} has stopped; last lines of its log:\n{tail(logs / f'{name}.log')}")
                    if name == "worker":
                        raise SystemExit(1)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_apps()


def _stop_apps() -> list[str]:
    stopped = []
    for name in APPS:
        pid = read_pid(_app_pidfile(name))
        if pid is not None:
            stop_pid(pid)
            stopped.append(name)
        _app_pidfile(name).unlink(missing_ok=True)
    return stopped


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
    sub.add_parser("env", help="print the export lines of the running stack").set_defaults(
        func=cmd_env
    )
    sub.add_parser(
        "status",
        help="say whether the Kafka, PostgreSQL and S3 server it started are still running",
    ).set_defaults(func=cmd_status)
    # `up` passes every option it does not know to `python -m producer`
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "up":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.producer_args = extra
    try:
        args.func(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
