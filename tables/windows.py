"""The windows the pipeline keeps, and window arithmetic on epoch milliseconds, UTC-minute
aligned. Pure.

A window is one `WindowSpec` in `WINDOWS`: the aggregator counts it (tables/window_counts.py),
the outbox holds its final rows, and the PostgreSQL sink writes them with SQL made from
the spec (app/sinks/postgres_sql.py). Its tables are created by app/sinks/init-db.sql.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

MINUTE_MS = 60_000
DISTINCT_USERS = "distinct users"  # WindowSpec.counts: not an event type
# state key prefixes that are not windows' (tables/aggregator.py, app/stateful/outbox.py)
RESERVED_PREFIXES = frozenset({"u", "e", "o", "s", "~position"})


@dataclass(frozen=True)
class WindowSpec:
    """One kind of window: what it counts, over which windows, and where it goes.

    `counts` is an event type, counted per page url (a row per window start and page),
    or DISTINCT_USERS, the users active in the window (a row per window start; a user
    is active in the minutes it sent any on-time event, so those windows' hop is whole
    minutes)."""

    name: str  # its rows in `Changes.windows` and in the sink's pending rows
    prefix: str  # its state keys `<prefix>|<start>[|<url>]`, and `o|<prefix>|...` in the outbox
    size_ms: int
    hop_ms: int  # == size_ms: tumbling
    counts: str
    table: str  # the table users read: window_start, window_end, [page_url,] count_column
    count_column: str
    partials: str  # one partial count per user-keyed partition: window_start, [page_url,] part
    partial_column: str

    def __post_init__(self) -> None:
        if self.size_ms % self.hop_ms or self.size_ms <= 0:
            raise ValueError(f"{self.name}: the size is not a multiple of the hop")
        if self.counts == DISTINCT_USERS and self.hop_ms % MINUTE_MS:
            raise ValueError(f"{self.name}: users are counted by the minute; hop in minutes")
        if "|" in self.prefix or self.prefix in RESERVED_PREFIXES:
            raise ValueError(f"{self.name}: {self.prefix!r} cannot prefix a window's keys")

    @property
    def per_page(self) -> bool:
        return self.counts != DISTINCT_USERS

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The row's key columns after window_start."""
        return ("page_url",) if self.per_page else ()

    @property
    def tag(self) -> str:
        hop = "" if self.hop_ms == self.size_ms else f"-hop{self.hop_ms // 1000}s"
        return f"{self.prefix}{self.size_ms // 1000}s{hop}"

    def state_key(self, key: Any) -> str:
        """A row key, (start, url) or start, as a state key."""
        if self.per_page:
            return f"{self.prefix}|{key[0]}|{key[1]}"
        return f"{self.prefix}|{key}"

    def parse_key(self, rest: str) -> Any:
        """The row key of a state key without its `<prefix>|`."""
        if self.per_page:
            start, _, url = rest.partition("|")
            return (int(start), url)
        return int(rest)


PAGE_VIEWS = WindowSpec(
    name="page_views",
    prefix="pv",
    size_ms=MINUTE_MS,
    hop_ms=MINUTE_MS,
    counts="page_view",
    table="page_view_counts",
    count_column="view_count",
    partials="page_view_count_partials",
    partial_column="view_count",
)
ACTIVE_USERS = WindowSpec(
    name="active_users",
    prefix="au",
    size_ms=5 * MINUTE_MS,
    hop_ms=MINUTE_MS,
    counts=DISTINCT_USERS,
    table="active_users",
    count_column="active_user_count",
    partials="active_user_partials",
    partial_column="user_count",
)
WINDOWS: tuple[WindowSpec, ...] = (PAGE_VIEWS, ACTIVE_USERS)


def tumbling_start(t_ms: int, size_ms: int = MINUTE_MS) -> int:
    """Start of the tumbling window [start, start + size) holding t_ms."""
    return t_ms - t_ms % size_ms


def hopping_starts(
    t_ms: int, size_ms: int = ACTIVE_USERS.size_ms, hop_ms: int = ACTIVE_USERS.hop_ms
) -> range:
    """Starts of every hopping window [start, start + size) that holds t_ms, oldest first."""
    last = tumbling_start(t_ms, hop_ms)
    first = last - size_ms + hop_ms
    return range(first, last + hop_ms, hop_ms)


def new_window_starts_for_minute(
    minute: int,
    user_minutes: list[int],
    size_ms: int = ACTIVE_USERS.size_ms,
    hop_ms: int = ACTIVE_USERS.hop_ms,
) -> list[int]:
    """Hopping windows that count a user for the first time when it becomes active in `minute`.

    `user_minutes`, sorted, are the minute starts where the user was already active. A
    window [s, s + size) gains the user only if none of those minutes falls inside it:
    it starts after the nearest earlier minute and ends at or before the nearest later
    one, so only those two need looking at.
    """
    i = bisect_left(user_minutes, minute)
    last = minute - minute % hop_ms
    first = last - size_ms + hop_ms
    if i < len(user_minutes):
        later = user_minutes[i]
        if later == minute:
            return []
        later -= size_ms
        last = min(last, later - later % hop_ms)
    if i:
        earlier = user_minutes[i - 1]
        first = max(first, earlier - earlier % hop_ms + hop_ms)
    return list(range(first, last + 1, hop_ms)) if first <= last else []


def layout_tag(windows: tuple[WindowSpec, ...] = WINDOWS) -> str:
    """The windows as a name part: state kept under another layout is not reused."""
    return "-".join(spec.tag for spec in windows)
