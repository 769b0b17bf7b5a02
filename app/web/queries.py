"""Read-only queries for the web views, on the PostgreSQL tables every worker writes.

Parameterised SQL only. "Now" is event time, not wall time: the newest minute that
has any row in `active_users` (every on-time event makes one), so a backlog read
hours later shows the same recent windows as a live stream. Minutes without rows
are returned with zero counts, so a chart has no holes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tables.windows import ACTIVE_USERS

MINUTE = timedelta(milliseconds=ACTIVE_USERS.hop_ms)
ACTIVE_WINDOW = timedelta(milliseconds=ACTIVE_USERS.size_ms)
TIMEOUT_S = 10  # per statement

NEWEST_MINUTE = """
SELECT coalesce(
  (SELECT max(window_start) FROM active_users),
  (SELECT max(window_start) FROM page_view_counts))
"""
PAGE_VIEW_SERIES = """
SELECT g.ws AS window_start, coalesce(sum(p.view_count), 0)::bigint AS total_views,
       count(p.page_url) AS pages
FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') AS g(ws)
LEFT JOIN page_view_counts p ON p.window_start = g.ws
GROUP BY g.ws ORDER BY g.ws
"""
PAGE_VIEW_TOP_PER_WINDOW = """
SELECT window_start, page_url, view_count FROM (
  SELECT window_start, page_url, view_count,
         row_number() OVER (PARTITION BY window_start ORDER BY view_count DESC, page_url) AS rn
  FROM page_view_counts WHERE window_start BETWEEN $1 AND $2) AS ranked
WHERE rn <= $3 ORDER BY window_start, rn
"""
PAGE_VIEW_TOP = """
SELECT page_url, sum(view_count)::bigint AS view_count FROM page_view_counts
WHERE window_start BETWEEN $1 AND $2
GROUP BY page_url ORDER BY view_count DESC, page_url LIMIT $3
"""
ACTIVE_SERIES = """
SELECT g.ws AS window_start, coalesce(a.active_user_count, 0)::bigint AS active_user_count
FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') AS g(ws)
LEFT JOIN active_users a ON a.window_start = g.ws
ORDER BY g.ws
"""
USER_SESSIONS = """
SELECT session_start_time, session_end_time, session_duration_seconds, status
FROM user_sessions WHERE user_id = $1 ORDER BY session_start_time LIMIT $2
"""
SESSIONS_BY_STATUS = "SELECT status, count(*) AS n FROM user_sessions GROUP BY status"
OPEN_SESSIONS_SERIES = """
WITH overlapping AS (
  SELECT session_start_time AS s, session_end_time AS e FROM user_sessions
  WHERE session_start_time <= $2 AND (session_end_time IS NULL OR session_end_time > $1))
SELECT g.t AS at, count(o.s) AS open_sessions
FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') AS g(t)
LEFT JOIN overlapping o ON o.s <= g.t AND (o.e IS NULL OR o.e > g.t)
GROUP BY g.t ORDER BY g.t
"""


def iso(value: datetime | None) -> str | None:
    """UTC ISO-8601 with milliseconds and `Z`, as the enriched topic writes times."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


async def newest_minute(conn) -> datetime | None:
    return await conn.fetchval(NEWEST_MINUTE, timeout=TIMEOUT_S)


async def page_views(conn, minutes: int, top: int) -> dict:
    """The newest `minutes` 1-minute windows: totals, top pages per window and overall."""
    newest = await newest_minute(conn)
    result: dict = {"minutes": minutes, "newest_window_start": iso(newest)}
    if newest is None:
        return {**result, "total_views": 0, "windows": [], "top_pages": []}
    first = newest - (minutes - 1) * MINUTE
    series = await conn.fetch(PAGE_VIEW_SERIES, first, newest, timeout=TIMEOUT_S)
    per_window = await conn.fetch(PAGE_VIEW_TOP_PER_WINDOW, first, newest, top, timeout=TIMEOUT_S)
    overall = await conn.fetch(PAGE_VIEW_TOP, first, newest, top, timeout=TIMEOUT_S)
    tops: dict[datetime, list[dict]] = {}
    for row in per_window:
        tops.setdefault(row["window_start"], []).append(
            {"page_url": row["page_url"], "view_count": row["view_count"]}
        )
    windows = [
        {
            "window_start": iso(row["window_start"]),
            "window_end": iso(row["window_start"] + MINUTE),
            "total_views": row["total_views"],
            "pages": row["pages"],
            "top_pages": tops.get(row["window_start"], []),
        }
        for row in series
    ]
    return {
        **result,
        "total_views": sum(w["total_views"] for w in windows),
        "windows": windows,
        "top_pages": [{"page_url": r["page_url"], "view_count": r["view_count"]} for r in overall],
    }


async def active_users(conn, minutes: int) -> dict:
    """5-minute windows ending in the newest `minutes` minutes; `current` ends with the newest."""
    newest = await newest_minute(conn)
    result: dict = {"minutes": minutes, "newest_minute_start": iso(newest)}
    if newest is None:
        return {**result, "current": None, "windows": []}
    last_start = newest + MINUTE - ACTIVE_WINDOW
    first_start = last_start - (minutes - 1) * MINUTE
    rows = await conn.fetch(ACTIVE_SERIES, first_start, last_start, timeout=TIMEOUT_S)
    windows = [
        {
            "window_start": iso(row["window_start"]),
            "window_end": iso(row["window_start"] + ACTIVE_WINDOW),
            "active_user_count": row["active_user_count"],
        }
        for row in rows
    ]
    return {**result, "current": windows[-1] if windows else None, "windows": windows}


async def user_sessions(conn, user_id: str, limit: int) -> dict:
    rows = await conn.fetch(USER_SESSIONS, user_id, limit, timeout=TIMEOUT_S)
    sessions = [
        {
            "session_start_time": iso(row["session_start_time"]),
            "session_end_time": iso(row["session_end_time"]),
            "session_duration_seconds": row["session_duration_seconds"],
            "status": row["status"],
        }
        for row in rows
    ]
    return {
        "user_id": user_id,
        "count": len(sessions),
        "open": sum(1 for s in sessions if s["status"] == "active"),
        "sessions": sessions,
    }


async def sessions_summary(conn, minutes: int) -> dict:
    """Sessions by status, and how many were open at the end of each recent minute."""
    counts = {"active": 0, "ended": 0, "timed_out": 0}
    for row in await conn.fetch(SESSIONS_BY_STATUS, timeout=TIMEOUT_S):
        counts[row["status"]] = row["n"]
    newest = await newest_minute(conn)
    series = []
    if newest is not None:
        last = newest + MINUTE
        first = last - (minutes - 1) * MINUTE
        rows = await conn.fetch(OPEN_SESSIONS_SERIES, first, last, timeout=TIMEOUT_S)
        series = [{"at": iso(r["at"]), "open_sessions": r["open_sessions"]} for r in rows]
    return {
        "minutes": minutes,
        "by_status": counts,
        "open": counts["active"],
        "total": sum(counts.values()),
        "open_per_minute": series,
    }
