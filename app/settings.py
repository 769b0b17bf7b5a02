"""One settings object, read once from the environment and `.env`.

Every variable and its default: docs/contract.md, Configuration. Each is named
`ACTIVITY_<FIELD>` (`ACTIVITY_WEB_PORT`, `ACTIVITY_LATENESS`, ...; durations drop the
field's `_ms`). The names without the prefix (`WEB_PORT`, ...) are still read, with one
deprecation line naming them, when the prefixed name is not set: unprefixed they collide
with other programs' variables (Faust reads `WEB_PORT`, devstack `STATE_DIR`). An
`ACTIVITY_*` variable that is no setting is refused, with the closest names: a
misspelling must not be silently ignored.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import ssl
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from dotenv import load_dotenv

from app.errors import ConfigError
from app.sinks.lake.location import LakeLocation, is_secret, resolve

PREFIX = "ACTIVITY_"
log = logging.getLogger(__name__)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, None: 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}


def parse_duration_ms(name: str, text: str) -> int:
    """`120`, `120s`, `2m`, `1500ms`, `1h` -> milliseconds. Bare numbers are seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{name}={text!r} is not a duration (examples: 30s, 2m, 1500ms)")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


_QUERY_PASSWORD = re.compile(r"(?i)(^|[?&;])(password|sslpassword)=[^&;#]*")


def mask_url(url: str) -> str:
    """The URL with its password (user info or a `password=` parameter) as ***, for logs."""
    parts = urlsplit(url)
    masked = parts
    if parts.password is not None:
        masked = masked._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    if parts.query:
        masked = masked._replace(query=_QUERY_PASSWORD.sub(r"\1\2=***", parts.query))
    return url if masked == parts else urlunsplit(masked)


def url_secrets(url: str) -> tuple[str, ...]:
    """The passwords a URL carries (user info or `password=`), as written and decoded."""
    parts = urlsplit(url)
    found = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password" and v]
    return tuple(dict.fromkeys(found))


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every non-empty secret replaced by ***: error messages may quote them."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SECRET_FIELDS = frozenset({"kafka_sasl_password"})


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = "localhost:9092"
    database_url: str = "postgresql://user:password@localhost:5432/stream_data"
    lake_dir: str = "data/lake"
    # LAKE_URI, when set, is where the lake is (LAKE_DIR takes a URI too): see
    # app/sinks/lake/location.py
    lake_uri: str | None = None
    # the object store's options (AWS_*, GOOGLE_*, AZURE_* of the environment)
    lake_options: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    lateness_ms: int = 120_000
    session_timeout_ms: int = 900_000
    idle_advance_ms: int = 30_000
    max_future_ms: int = 300_000
    # the instant MAX_FUTURE is measured from (ISO-8601); unset: the wall clock when a
    # record is read. For tests that need a "now" that does not move.
    max_future_from: str | None = None
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    app_id: str = "activity-pipeline"
    input_topic: str = "user_activity"
    enriched_topic: str = "enriched_activity"
    dlq_topic: str = "user_activity_dlq"
    partitions: int = 4
    state_dir: str = "data/state"
    lake_flush_rows: int = 50_000
    lake_flush_ms: int = 10_000
    lake_retention_ms: int = 7 * 86_400_000
    lake_maintain_ms: int = 120_000
    # rows buffered for the lake: reading waits past 2 x LAKE_FLUSH_ROWS or this many bytes
    lake_buffer_bytes: int = 128 << 20
    # a partition with records to read and no progress for this long is reported stuck
    stuck_after_ms: int = 120_000
    commit_interval_ms: int = 100
    replication_factor: int = 1
    sink_flush_ms: int = 500
    shutdown_timeout_ms: int = 10_000
    # text (Faust's) or json (one object a line: app/logs.py)
    log_format: str = "text"
    # Transport security (docs/security.md). PLAINTEXT needs none of the rest.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    database_ssl_rootcert: str | None = None

    def __post_init__(self) -> None:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_PROTOCOLS:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(KAFKA_PROTOCOLS)}"
            )
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigError(
                f"KAFKA_SASL_MECHANISM={mechanism!r} is not one of "
                f"{', '.join(KAFKA_SASL_MECHANISMS)}"
            )
        if protocol.startswith("SASL_"):
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
                )
                if not value
            ]
            if missing:
                raise ConfigError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}"
                )
        if not protocol.endswith("SSL"):
            files = [
                name
                for name, value in (
                    ("KAFKA_SSL_CAFILE", self.kafka_ssl_cafile),
                    ("KAFKA_SSL_CERTFILE", self.kafka_ssl_certfile),
                    ("KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile),
                )
                if value
            ]
            if files:
                # Refuse rather than silently talk plaintext to someone who set up TLS.
                raise ConfigError(
                    f"{', '.join(files)} set but KAFKA_SECURITY_PROTOCOL={protocol}; "
                    "use SSL or SASL_SSL"
                )
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"{PREFIX}LOG_FORMAT={self.log_format!r} is not text or json")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ConfigError("KAFKA_SSL_KEYFILE set without KAFKA_SSL_CERTFILE")
        _ = self.max_future_from_ms  # refused at start, not at the first record

    @property
    def max_future_from_ms(self) -> int | None:
        """MAX_FUTURE_FROM in epoch ms (None: unset, the wall clock)."""
        if self.max_future_from is None:
            return None
        from app.events import BadEvent, parse_event_time

        try:
            return parse_event_time(self.max_future_from)
        except BadEvent as exc:
            raise ConfigError(
                f"MAX_FUTURE_FROM={self.max_future_from!r} is not an ISO-8601 instant"
            ) from exc

    def __repr__(self) -> str:
        """Secrets masked: a logged or printed Settings must not leak them."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("database_url", "lake_uri", "lake_dir") and value:
                value = mask_url(value)
            elif f.name in _SECRET_FIELDS and value:
                value = "***"
            elif f.name == "lake_options":
                value = tuple((k, "***" if is_secret(k) else v) for k, v in value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def lake(self) -> LakeLocation:
        """Where the lake is, with its storage options; `.target` is safe to show."""
        return resolve(self.lake_uri or self.lake_dir, dict(self.lake_options))

    @property
    def internal_topic(self) -> str:
        return f"{self.app_id}-by-user"

    @staticmethod
    def env_name(field_name: str, prefix: str = PREFIX) -> str:
        """The variable of a field: `lateness_ms` -> `ACTIVITY_LATENESS`."""
        name = field_name.upper()
        return prefix + (name[:-3] if name.endswith("_MS") else name)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        if environ is None:
            load_dotenv(override=False)
            environ = dict(os.environ)
        known = {cls.env_name(f.name) for f in fields(cls) if f.name != "lake_options"}
        unknown = sorted(k for k in environ if k.startswith(PREFIX) and k not in known)
        if unknown:
            hints = []
            for name in unknown:
                bare = [k.removeprefix(PREFIX) for k in known]
                close = difflib.get_close_matches(name.removeprefix(PREFIX), bare, n=1)
                hints.append(f"{name} (did you mean {PREFIX}{close[0]}?)" if close else name)
            raise ConfigError(
                f"unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(hints)}; "
                f"every {PREFIX}* variable is listed in .env.example"
            )
        values = {}
        deprecated = []
        for f in fields(cls):
            if f.name == "lake_options":
                continue  # from the lake's own variables (AWS_*, GOOGLE_*, AZURE_*), below
            name, old = cls.env_name(f.name), cls.env_name(f.name, prefix="")
            if environ.get(name, "") == "" and environ.get(old, "") != "":
                name = old
                deprecated.append(old)
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
            elif f.name in ("kafka_security_protocol", "kafka_sasl_mechanism"):
                values[f.name] = raw.strip().upper()
            elif f.name == "log_format":
                values[f.name] = raw.strip().lower()
            else:
                values[f.name] = raw
        location = values.get("lake_uri") or values.get("lake_dir") or cls.lake_dir
        values["lake_options"] = tuple(sorted(resolve(location, environ).storage_options.items()))
        if deprecated:
            log.warning(
                "settings: %s read without the %s prefix; deprecated, rename to %s",
                ", ".join(deprecated),
                PREFIX,
                ", ".join(PREFIX + n for n in deprecated),
            )
        return cls(**values)


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for Kafka clients, None for PLAINTEXT and SASL_PLAINTEXT.

    Always verifies the broker's certificate and host name: against KAFKA_SSL_CAFILE,
    else the system CAs. KAFKA_SSL_CERTFILE/KEYFILE add a client certificate (mTLS).
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )


def kafka_connection(settings: Settings) -> dict[str, Any]:
    """The brokers and the security options: what every aiokafka client is given."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **kafka_client_options(settings)}


def kafka_client_options(
    settings: Settings, ssl_context: ssl.SSLContext | None = None
) -> dict[str, Any]:
    """Security keyword arguments for an aiokafka client (producer, consumer, admin).

    Pass `ssl_context` to reuse one context; otherwise one is built from the settings.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        options["ssl_context"] = ssl_context or kafka_ssl_context(settings)
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


def database_dsn(database_url: str, ssl_rootcert: str | None = None) -> str:
    """DATABASE_URL for asyncpg, with DATABASE_SSL_ROOTCERT as its `sslrootcert`.

    The URL's own `sslmode` (disable, prefer, require, verify-ca, verify-full) is kept;
    with a root certificate and no `sslmode`, the server is verified (verify-full).
    """
    if not ssl_rootcert:
        return database_url
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    keys = {k.lower() for k, _ in query}
    if "sslrootcert" not in keys:
        query.append(("sslrootcert", ssl_rootcert))
    if "sslmode" not in keys:
        query.append(("sslmode", "verify-full"))
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
