"""Input records (docs/contract.md, Input and Bad input): parse, validate, normalise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from app.errors import BadEvent
from app.limits import MAX_PAGE_URL_BYTES, MAX_USER_ID_BYTES
from app.timeutil import epoch_ms, iso_utc

EVENT_TYPES = frozenset({"page_view", "click", "session_start", "session_end"})
NEEDS_PAGE = frozenset({"page_view", "click"})
# orjson reads JSON nested up to 1,024 levels deep but writes at most 254: a deeper
# record could not become its enriched record or lake row (`too_deep`). Nesting that
# deep takes more brackets, and twice as many bytes, so most records skip the check.
MAX_WRITABLE_DEPTH = 254
_EPOCH_MS_THRESHOLD = 1e11
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@dataclass(slots=True)
class Event:
    event_time: int  # epoch milliseconds, UTC
    user_id: str
    event_type: str
    page_url: str | None
    fields: dict[str, Any]  # the record as sent, extra fields included


def parse_event_time(value: Any) -> int:
    """ISO-8601 (Z, offset, or naive as UTC) or epoch seconds/milliseconds -> epoch ms."""
    if type(value) is int and _EPOCH_MS_THRESHOLD < value <= _MAX_MS:
        return value  # epoch milliseconds, the common case: no further checks needed
    if isinstance(value, bool):
        raise BadEvent("wrong_type", "event_time is a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise BadEvent("bad_event_time", f"event_time {value!r} is not finite")
        # A float as written, in exact decimal: 1.001 s is 1001 ms (1.001 * 1000 < 1001).
        number = Decimal(repr(value)) if isinstance(value, float) else value
        ms = number if abs(number) > _EPOCH_MS_THRESHOLD else number * 1000
        if not 0 <= ms <= _MAX_MS:
            raise BadEvent("bad_event_time", f"event_time {value!r} is out of range")
        return int(ms)
    if not isinstance(value, str):
        raise BadEvent("wrong_type", f"event_time is {type(value).__name__}, not a string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadEvent("bad_event_time", f"event_time {value[:64]!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        ms = epoch_ms(parsed)  # exact; timestamp() * 1000 can lose 1 ms
    except (OverflowError, OSError, ValueError):
        raise BadEvent("bad_event_time", f"event_time {value[:64]!r} is out of range") from None
    if ms < 0:
        raise BadEvent("bad_event_time", f"event_time {value[:64]!r} is before 1970")
    return ms


def _storable(name: str, text: str, max_bytes: int) -> None:
    """`text` becomes a PostgreSQL key: no U+0000 (its text type cannot hold one) and at
    most `max_bytes` of UTF-8 (an index row has room for about 2,700)."""
    if "\x00" in text:
        raise BadEvent("nul_character", f"{name} contains U+0000, which PostgreSQL cannot store")
    # a character is at most 4 bytes: most strings need no encoding to be measured
    if len(text) > max_bytes // 4 and len(text.encode()) > max_bytes:
        raise BadEvent(
            f"{name}_too_long", f"{name} is {len(text.encode()):,} bytes, more than {max_bytes:,}"
        )


def _user_id(value: Any) -> str:
    if isinstance(value, str):
        if not value:
            raise BadEvent("bad_user_id", "user_id is empty")
        _storable("user_id", value, MAX_USER_ID_BYTES)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadEvent("wrong_type", f"user_id is {type(value).__name__}, not a string")
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


def decode(raw: bytes | None, now_ms: int, max_future_ms: int) -> Event:
    """Parse one record value; raise BadEvent with a reason for anything off-contract."""
    if not raw:
        raise BadEvent("empty_value", "the record has no value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadEvent("not_utf8", "the value is not UTF-8") from None
        raise BadEvent("invalid_json", str(exc)[:120]) from None
    if not isinstance(data, dict):
        raise BadEvent("not_object", f"the value is a JSON {type(data).__name__}, not an object")
    if len(raw) > 2 * MAX_WRITABLE_DEPTH and raw.count(b"[") + raw.count(b"{") > MAX_WRITABLE_DEPTH:
        try:
            orjson.dumps(data)
        except orjson.JSONEncodeError:
            raise BadEvent(
                "too_deep", f"nested more than {MAX_WRITABLE_DEPTH} levels deep"
            ) from None
    for name in ("event_time", "user_id", "event_type"):
        if data.get(name) is None:
            raise BadEvent("missing_field", name)
    event_type = data["event_type"]
    if not isinstance(event_type, str):
        raise BadEvent("wrong_type", "event_type is not a string")
    if event_type not in EVENT_TYPES:
        raise BadEvent("unknown_event_type", event_type[:64])
    page_url = data.get("page_url")
    if event_type in NEEDS_PAGE and page_url is None:
        raise BadEvent("missing_field", "page_url")
    if page_url is not None:
        if not isinstance(page_url, str) or not page_url:
            raise BadEvent("wrong_type", "page_url is not a non-empty string")
        _storable("page_url", page_url, MAX_PAGE_URL_BYTES)
    event_time = parse_event_time(data["event_time"])
    if event_time > now_ms + max_future_ms:
        raise BadEvent(
            "future_event_time",
            f"event_time is {(event_time - now_ms) / 1000:.0f}s ahead of wall time",
        )
    user_id = _user_id(data["user_id"])
    return Event(event_time, user_id, event_type, page_url, data)


__all__ = ["Event", "decode", "iso_utc", "parse_event_time"]
