"""Window arithmetic on epoch milliseconds, UTC-minute aligned. Pure functions."""

from __future__ import annotations

from bisect import bisect_left

MINUTE_MS = 60_000
PAGE_VIEW_WINDOW_MS = MINUTE_MS
ACTIVE_USERS_WINDOW_MS = 5 * MINUTE_MS
ACTIVE_USERS_HOP_MS = MINUTE_MS


def tumbling_start(t_ms: int, size_ms: int = PAGE_VIEW_WINDOW_MS) -> int:
    """Start of the tumbling window [start, start + size) holding t_ms."""
    return t_ms - t_ms % size_ms


def hopping_starts(
    t_ms: int, size_ms: int = ACTIVE_USERS_WINDOW_MS, hop_ms: int = ACTIVE_USERS_HOP_MS
) -> range:
    """Starts of every hopping window [start, start + size) that holds t_ms, oldest first."""
    last = tumbling_start(t_ms, hop_ms)
    first = last - size_ms + hop_ms
    return range(first, last + hop_ms, hop_ms)


def new_window_starts_for_minute(
    minute: int,
    user_minutes: list[int],
    size_ms: int = ACTIVE_USERS_WINDOW_MS,
    hop_ms: int = ACTIVE_USERS_HOP_MS,
) -> list[int]:
    """Hopping windows that count a user for the first time when it becomes active in `minute`.

    `user_minutes`, sorted, are the minute starts where the user was already active. A
    window [s, s + size) gains the user only if none of those minutes falls inside it:
    it starts after the nearest earlier minute and ends at or before the nearest later
    one, so only those two need looking at.
    """
    i = bisect_left(user_minutes, minute)
    first, last = minute - size_ms + hop_ms, minute
    if i < len(user_minutes):
        later = user_minutes[i]
        if later == minute:
            return []
        last = min(last, later - size_ms)
    if i:
        first = max(first, user_minutes[i - 1] + hop_ms)
    return list(range(first, last + 1, hop_ms)) if first <= last else []


def layout_tag() -> str:
    """The window sizes as a name part: state kept under another layout is not reused."""
    return (
        f"pv{PAGE_VIEW_WINDOW_MS // 1000}s-au{ACTIVE_USERS_WINDOW_MS // 1000}s"
        f"-hop{ACTIVE_USERS_HOP_MS // 1000}s"
    )
