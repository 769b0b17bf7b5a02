"""One settings object, read once from the environment and `.env` (SPEC section 7)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

from dotenv import load_dotenv

from app.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, None: 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}


def parse_duration_ms(name: str, text: str) -> int:
    """`120`, `120s`, `2m`, `1500ms`, `1h` -> milliseconds. Bare numbers are seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{name}={text!r} is not a duration (examples: 30s, 2m, 1500ms)")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = "localhost:9092"
    database_url: str = "postgresql://user:password@localhost:5432/stream_data"
    lake_dir: str = "data/lake"
    lateness_ms: int = 120_000
    session_timeout_ms: int = 900_000
    idle_advance_ms: int = 30_000
    max_future_ms: int = 300_000
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    app_id: str = "activity-pipeline"
    input_topic: str = "user_activity"
    enriched_topic: str = "enriched_activity"
    dlq_topic: str = "user_activity_dlq"
    partitions: int = 4
    state_dir: str = "data/state"
    lake_flush_rows: int = 100_000
    lake_flush_ms: int = 10_000
    sink_flush_ms: int = 500

    @property
    def internal_topic(self) -> str:
        return f"{self.app_id}-by-user"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        if environ is None:
            load_dotenv(override=False)
            environ = dict(os.environ)
        values = {}
        for f in fields(cls):
            name = f.name.upper()
            if name.endswith("_MS"):
                name = name[:-3]
            if name not in environ or environ[name] == "":
                continue
            raw = environ[name]
            if f.name.endswith("_ms"):
                values[f.name] = parse_duration_ms(name, raw)
            elif f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError as exc:
                    raise ConfigError(f"{name}={raw!r} is not a whole number") from exc
            else:
                values[f.name] = raw
        return cls(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
