"""What the command-line tools (`python -m producer`, `python -m app.tail`) share: the
Kafka connection options, and how they run until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any

from app.settings import Settings


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka brokers, host:port[,host:port] (default: ACTIVITY_KAFKA_BOOTSTRAP_SERVERS "
        "or localhost:9092)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of the environment, with the brokers the command line names."""
    settings = Settings.from_env()
    if args.bootstrap_servers:
        settings = dataclasses.replace(settings, kafka_bootstrap_servers=args.bootstrap_servers)
    return settings


def run(main: Coroutine[Any, Any, int]) -> int:
    """`main`'s exit status; 130 after Ctrl-C, as a shell reports it."""
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        return 130
