"""Time helpers shared by every stage: epoch milliseconds, always UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def utc_datetime(ms: int) -> datetime:
    """Epoch ms -> aware UTC datetime, exactly (fromtimestamp(ms / 1000) is not)."""
    return EPOCH + timedelta(milliseconds=ms)


_SECONDS: dict[int, str] = {}  # epoch second -> its ISO text; events come close in time


def iso_utc(ms: int) -> str:
    """Epoch ms -> `2026-01-29T09:31:03.027Z`. Called per event: the text of each second
    is made once (a tenth of the cost of formatting a datetime each time)."""
    second, milli = divmod(ms, 1000)
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) >= 100_000:
            _SECONDS.clear()
        text = _SECONDS[second] = utc_datetime(second * 1000).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{milli:03d}Z"


def epoch_ms(moment: datetime) -> int:
    """Aware datetime -> epoch ms, exactly."""
    return (moment - EPOCH) // ONE_MS
