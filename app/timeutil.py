"""Time helpers shared by every stage: epoch milliseconds, always UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def utc_datetime(ms: int) -> datetime:
    """Epoch ms -> aware UTC datetime, exactly (fromtimestamp(ms / 1000) is not)."""
    return EPOCH + timedelta(milliseconds=ms)


def iso_utc(ms: int) -> str:
    """Epoch ms -> `2026-01-29T09:31:03.027Z`."""
    return utc_datetime(ms).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def epoch_ms(moment: datetime) -> int:
    """Aware datetime -> epoch ms, exactly."""
    return (moment - EPOCH) // ONE_MS
