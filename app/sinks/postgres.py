"""PostgreSQL sink: batched upserts of absolute values, retried with backoff.

Window counts are partial per user-keyed partition (a window's events come from
users on every partition); a partition upserts its own partials and the total row
is recomputed from them in the same transaction, under one advisory lock so two
workers never race on a sum.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import asyncpg

from app.settings import database_dsn, mask_url, redact, url_secrets
from app.sinks.contract import SinkHealth
from app.throttle import Backoff
from app.timeutil import utc_datetime
from tables.aggregator import Changes
from tables.windows import ACTIVE_USERS_WINDOW_MS, PAGE_VIEW_WINDOW_MS

log = logging.getLogger(__name__)
DDL = Path(__file__).with_name("init-db.sql")
_LOCK_KEY = 0x41435456  # "ACTV"

UPSERT_PV_PARTIAL = """
INSERT INTO page_view_count_partials (window_start, page_url, part, view_count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::int[], $4::bigint[])
ON CONFLICT (window_start, page_url, part) DO UPDATE SET view_count = EXCLUDED.view_count
"""
PV_WINDOW_S = PAGE_VIEW_WINDOW_MS // 1000
AU_WINDOW_S = ACTIVE_USERS_WINDOW_MS // 1000
ROLLUP_PV = """
INSERT INTO page_view_counts (window_start, window_end, page_url, view_count, updated_at)
SELECT p.window_start, p.window_start + make_interval(secs => $3), p.page_url,
       sum(p.view_count), now()
FROM page_view_count_partials p
JOIN unnest($1::timestamptz[], $2::text[]) AS k(ws, url) ON p.window_start = k.ws
  AND p.page_url = k.url
GROUP BY p.window_start, p.page_url
ON CONFLICT (window_start, page_url) DO UPDATE
  SET view_count = EXCLUDED.view_count, updated_at = EXCLUDED.updated_at
"""
UPSERT_AU_PARTIAL = """
INSERT INTO active_user_partials (window_start, part, user_count)
SELECT * FROM unnest($1::timestamptz[], $2::int[], $3::bigint[])
ON CONFLICT (window_start, part) DO UPDATE SET user_count = EXCLUDED.user_count
"""
ROLLUP_AU = """
INSERT INTO active_users (window_start, window_end, active_user_count, updated_at)
SELECT p.window_start, p.window_start + make_interval(secs => $2), sum(p.user_count), now()
FROM active_user_partials p WHERE p.window_start = ANY($1::timestamptz[])
GROUP BY p.window_start
ON CONFLICT (window_start) DO UPDATE
  SET active_user_count = EXCLUDED.active_user_count, updated_at = EXCLUDED.updated_at
"""
UPSERT_SESSIONS = """
INSERT INTO user_sessions (user_id, session_start_time, session_end_time,
                           session_duration_seconds, status, updated_at)
SELECT u, s, e, d, st, now()
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::double precision[], $5::text[])
  AS r(u, s, e, d, st)
ON CONFLICT (user_id, session_start_time) DO UPDATE
  SET session_end_time = EXCLUDED.session_end_time,
      session_duration_seconds = EXCLUDED.session_duration_seconds,
      status = EXCLUDED.status, updated_at = EXCLUDED.updated_at
"""


ts = utc_datetime


class PendingRows:
    """Latest absolute value per row key, merged across batches until written."""

    def __init__(self) -> None:
        self.page_views: dict[tuple[int, str, int], int] = {}
        self.active: dict[tuple[int, int], int] = {}
        self.sessions: dict[tuple[str, int], tuple] = {}
        self.batches: dict[int, int] = {}  # partition -> newest merge batch included

    def add(self, part: int, changes: Changes, batch: int) -> None:
        self.batches[part] = max(batch, self.batches.get(part, 0))
        for (start, url), count in changes.page_views.items():
            self.page_views[(start, url, part)] = count
        for start, count in changes.active_users.items():
            self.active[(start, part)] = count
        for key, row in changes.sessions.items():
            self.sessions[key] = (row.user_id, row.start, row.end, row.duration_s, row.status, part)

    def drop_partitions(self, parts: set[int]) -> None:
        """Forget rows of partitions this worker no longer owns: their new owner re-upserts
        everything its restored state holds, and these may be older than its rows."""
        self.page_views = {k: v for k, v in self.page_views.items() if k[2] not in parts}
        self.active = {k: v for k, v in self.active.items() if k[1] not in parts}
        self.sessions = {k: v for k, v in self.sessions.items() if v[5] not in parts}
        for part in parts:
            self.batches.pop(part, None)

    def __len__(self) -> int:
        return len(self.page_views) + len(self.active) + len(self.sessions)

    def merge_back(self, newer: PendingRows) -> None:
        """Put an unwritten batch back under anything that arrived after it."""
        for part, batch in newer.batches.items():
            self.batches[part] = max(batch, self.batches.get(part, 0))
        for mine, theirs in (
            (self.page_views, newer.page_views),
            (self.active, newer.active),
            (self.sessions, newer.sessions),
        ):
            merged = {**mine, **theirs}
            mine.clear()
            mine.update(merged)


class PostgresSink:
    name = "postgres"

    def __init__(
        self,
        database_url: str,
        flush_ms: int = 500,
        ssl_rootcert: str | None = None,
        guard=None,
    ) -> None:
        self.guard = guard  # app.stateful.stall.StallGuard: holds writes after a stall
        self.database_url = database_url
        # Only the masked form is ever logged or shown; error texts are redacted too.
        self.target = mask_url(database_url)
        self._secrets = url_secrets(database_url)
        self.ssl_rootcert = ssl_rootcert
        self.flush_s = flush_ms / 1000
        self.pending = PendingRows()
        # partition -> newest merge batch whose rows are all in PostgreSQL
        self.confirmed: dict[int, int] = {}
        self.pool: asyncpg.Pool | None = None
        self.health = SinkHealth(self.target)
        self._task: asyncio.Task | None = None

    def add(self, part: int, changes: Changes, batch: int) -> None:
        self.pending.add(part, changes, batch)

    def pending_rows(self) -> int:
        return len(self.pending)

    def revoke(self, parts: set[int]) -> None:
        self.pending.drop_partitions(parts)
        for part in parts:
            self.confirmed.pop(part, None)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-sink")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        try:
            if self.pending and self.pool is not None:
                await asyncio.wait_for(self.flush(), timeout=10)
        except Exception as exc:  # shutting down: say so, the state replays on restart
            log.warning("postgres: final flush failed: %s", redact(str(exc), *self._secrets))
        if self.pool is not None:
            await self.pool.close()

    def connect_options(self) -> dict:
        """Keyword arguments for asyncpg.create_pool (TLS from DATABASE_URL's sslmode)."""
        return {
            "dsn": database_dsn(self.database_url, self.ssl_rootcert),
            "min_size": 1,
            "max_size": 2,
            "command_timeout": 30,
        }

    async def connect(self) -> None:
        pool = await asyncpg.create_pool(**self.connect_options())
        try:
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
                try:
                    await conn.execute(DDL.read_text())
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        except BaseException:
            pool.terminate()  # the server may be gone: do not wait for a graceful close
            raise
        self.pool = pool
        self._succeeded()
        log.info("postgres: connected to %s, tables ready", self.target)

    def _succeeded(self, rows: int = 0, seconds: float | None = None) -> None:
        health = self.health
        attempts = health.consecutive_errors
        outage = health.reachable() if seconds is None else health.succeeded(rows, seconds)
        if outage is not None:
            log.warning(
                "postgres: %s reachable again after %.1fs and %d failed attempts",
                self.target,
                outage,
                attempts,
            )

    def _failed(self, exc: BaseException) -> None:
        self.health.failed(redact(f"{type(exc).__name__}: {exc}", *self._secrets))

    async def _run(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                if self.pool is None:
                    await self.connect()
                await asyncio.sleep(self.flush_s)
                await self.flush()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                delay = backoff.next()
                log.warning(
                    "postgres: write to %s failed (%s); retrying in %.1fs, %d rows kept",
                    self.target,
                    self.health.last_error,
                    delay,
                    len(self.pending),
                )
                await asyncio.sleep(delay)

    async def flush(self) -> None:
        if not self.pending:
            return
        if self.guard is not None and not self.guard.alive():
            await self.guard.settled()  # the rebalance drops rows of partitions given away
            if not self.pending:
                return
        batch, self.pending = self.pending, PendingRows()
        started = time.monotonic()
        try:
            await self._write(batch)
        except BaseException:
            batch.merge_back(self.pending)
            self.pending = batch
            raise
        self._succeeded(len(batch), time.monotonic() - started)
        for part, number in batch.batches.items():
            self.confirmed[part] = max(number, self.confirmed.get(part, 0))

    async def _write(self, batch: PendingRows) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            if batch.page_views:
                keys = list(batch.page_views)
                starts = [ts(k[0]) for k in keys]
                urls = [k[1] for k in keys]
                await conn.execute(
                    UPSERT_PV_PARTIAL,
                    starts,
                    urls,
                    [k[2] for k in keys],
                    [batch.page_views[k] for k in keys],
                )
                windows = sorted({(k[0], k[1]) for k in keys})
                await conn.execute(
                    ROLLUP_PV, [ts(w[0]) for w in windows], [w[1] for w in windows], PV_WINDOW_S
                )
            if batch.active:
                keys = list(batch.active)
                starts = [ts(k[0]) for k in keys]
                await conn.execute(
                    UPSERT_AU_PARTIAL, starts, [k[1] for k in keys], [batch.active[k] for k in keys]
                )
                await conn.execute(ROLLUP_AU, sorted(set(starts)), AU_WINDOW_S)
            if batch.sessions:
                rows = list(batch.sessions.values())
                await conn.execute(
                    UPSERT_SESSIONS,
                    [r[0] for r in rows],
                    [ts(r[1]) for r in rows],
                    [None if r[2] is None else ts(r[2]) for r in rows],
                    [r[3] for r in rows],
                    [r[4] for r in rows],
                )
