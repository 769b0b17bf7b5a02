"""PostgreSQL sink: batched upserts of absolute values, retried with backoff.

Window counts are partial per user-keyed partition (a window's events come from
users on every partition); a partition upserts its own partials and the total row
is recomputed from them in the same transaction, under one advisory lock so two
workers never race on a sum.

Each transaction first claims its partitions in `partition_writers` with the
consumer-group generation under which this worker was assigned them. A partition
claimed under a newer generation belongs to another worker now (this one stood
still, say, and woke up): its rows are dropped from the transaction, and the new
owner's rows stay. Owners renew their claims every RENEW_CLAIMS_S while idle; a claim
not renewed for STALE_CLAIM_S has no live owner and gives way to any generation (a
group's generations start again at 1 when Kafka forgets the group or is replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from pathlib import Path

import asyncpg

from app.outages import THROTTLED, Outages
from app.settings import database_dsn, mask_url, redact, url_secrets
from app.sinks.contract import SinkHealth
from app.sinks.pending_rows import PendingRows
from app.sinks.postgres_sql import (
    CLAIM,
    LOCK_KEY,
    REJECT,
    STUCK_HOLDERS,
    UPSERT_SESSIONS,
    rollup,
    upsert_partials,
)
from app.sinks.rejects import DATA_ERRORS, as_text, write_isolating
from app.throttle import Backoff, LogThrottle
from app.timeutil import utc_datetime
from tables.aggregator import Changes
from tables.windows import WINDOWS

log = logging.getLogger(__name__)
DDL = Path(__file__).with_name("init-db.sql")
# A worker frozen in the middle of a transaction holds the advisory lock, and every
# other worker's writes wait on it: the server ends such a session after this long,
# and a writer waiting for the lock ends a holder stuck on its client that long.
IDLE_IN_TRANSACTION_MS = 10_000
STUCK_HOLDER_S = 10.0
RENEW_CLAIMS_S = 10.0
STALE_CLAIM_S = 60.0
# window name -> (its table, its partials' upsert, its rollup)
WINDOW_SQL = {spec.name: (spec.table, upsert_partials(spec), rollup(spec)) for spec in WINDOWS}


ts = utc_datetime


class PostgresSink:
    name = "postgres"

    def __init__(
        self,
        database_url: str,
        ssl_rootcert: str | None = None,
        app_id: str = "pipeline",
        outages: Outages | None = None,
    ) -> None:
        self.app_id = app_id  # whose claims in partition_writers
        self.outages = outages or Outages()  # says when PostgreSQL is away, and back
        self.database_url = database_url
        # Only the masked form is ever logged or shown; error texts are redacted too.
        self.target = mask_url(database_url)
        self._secrets = url_secrets(database_url)
        self.ssl_rootcert = ssl_rootcert
        self.pending = PendingRows()
        # partition -> newest stateful batch whose rows are all in PostgreSQL
        self.confirmed_batches: dict[int, int] = {}  # partition -> highest batch durable
        # partition -> consumer-group generation under which this worker owns it
        self.generations: dict[int, int] = {}
        self.refused_partitions = 0  # partitions' rows refused: another worker owns them
        self._claimed_at = 0.0  # monotonic time of the last claim
        self.pool: asyncpg.Pool | None = None
        self.health = SinkHealth(self.target)
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()  # rows were handed over: write them
        self.rejected: Counter = Counter()  # SQLSTATE -> rows set aside in rejected_rows
        self._reject_log = LogThrottle(60)

    def add(self, part: int, changes: Changes, batch: int) -> None:
        self.pending.add(part, changes, batch, self.generations.get(part, 0))
        self._wake.set()

    def pending_rows(self) -> int:
        return len(self.pending)

    def confirmed(self, part: int) -> int:
        return self.confirmed_batches.get(part, 0)

    def assign(self, parts: set[int], generation: int) -> None:
        for part in parts:
            self.generations[part] = generation

    def revoke(self, parts: set[int]) -> None:
        self.pending.drop_partitions(parts)
        for part in parts:
            self.confirmed_batches.pop(part, None)
            self.generations.pop(part, None)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="postgres-sink")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is pending within `timeout_s`; what is left is the next owner's
        (rows are written again from the state it restores)."""
        if self._task:
            self._task.cancel()
        try:
            if self.pending and self.pool is not None and not self.outages.down("postgres"):
                await asyncio.wait_for(self.flush(), timeout=max(0.1, timeout_s - 1))
        except Exception as exc:
            log.warning("postgres: final flush failed: %s", redact(str(exc), *self._secrets))
        if self.pending:
            log.warning(
                "postgres: stopped with %d rows not written; the partitions' next owner "
                "writes them again",
                len(self.pending),
            )
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 1)
            except Exception:  # the server is away: drop the connections
                self.pool.terminate()

    def connect_options(self) -> dict:
        """Keyword arguments for asyncpg.create_pool (TLS from DATABASE_URL's sslmode)."""
        return {
            "dsn": database_dsn(self.database_url, self.ssl_rootcert),
            "min_size": 1,
            "max_size": 2,
            "command_timeout": 30,
            "timeout": 10,  # to connect: a server that does not answer is away
            "server_settings": {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)},
        }

    async def connect(self) -> None:
        pool = await asyncpg.create_pool(**self.connect_options())
        try:
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
                try:
                    await conn.execute(DDL.read_text())
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        except BaseException:
            pool.terminate()  # the server may be gone: do not wait for a graceful close
            raise
        self.pool = pool
        self._succeeded()
        log.info("postgres: connected to %s, tables ready", self.target)

    def _succeeded(self, rows: int = 0, seconds: float | None = None) -> None:
        if seconds is None:
            self.health.reachable()
        else:
            self.health.succeeded(rows, seconds)
        self.outages.ok("postgres")

    def _failed(self, exc: BaseException) -> None:
        error = redact(f"{type(exc).__name__}: {exc}", *self._secrets)
        self.health.failed(error)
        self.outages.failed("postgres", error)

    async def _run(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                if self.pool is None:
                    await self.connect()
                # The stateful stage hands rows over once per commit (every SINK_FLUSH):
                # write them at once (rows kept by a failed write, after the backoff),
                # and renew the claims while idle.
                if not self.pending:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), RENEW_CLAIMS_S)
                self._wake.clear()
                await self.flush()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # kept and retried; app/outages.py says so in the log
                self._failed(exc)
                await asyncio.sleep(backoff.next())

    async def flush(self) -> None:
        if not self.pending:
            if self.generations and time.monotonic() - self._claimed_at >= RENEW_CLAIMS_S:
                await self._renew()
            return
        batch, self.pending = self.pending, PendingRows()
        started = time.monotonic()
        try:
            await self._write(batch)
        except BaseException:
            # rows of a partition that moved since (A -> B -> A): its owner now writes
            # them again from its state, under its own generation
            batch.drop_partitions(
                {p for p, g in batch.generations.items() if self.generations.get(p) != g}
            )
            batch.merge_back(self.pending)
            self.pending = batch
            raise
        self._succeeded(len(batch), time.monotonic() - started)
        for part, number in batch.batches.items():
            self.confirmed_batches[part] = max(number, self.confirmed_batches.get(part, 0))

    async def _lock(self, conn) -> None:
        """Take the writers' lock for this transaction.

        A worker frozen in the middle of a transaction keeps holding it, and the
        server does not end a session that stopped part way through a message; so
        a holder that has waited on its client for STUCK_HOLDER_S is ended here.
        """
        backoff = Backoff(0.01, 0.5)
        while not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_KEY):
            for row in await conn.fetch(STUCK_HOLDERS, LOCK_KEY, STUCK_HOLDER_S):
                log.warning(
                    "postgres: session %d has held the writers' lock for over %.0fs "
                    "waiting on its worker (frozen?); ending it",
                    row["pid"],
                    STUCK_HOLDER_S,
                )
                await conn.execute("SELECT pg_terminate_backend($1)", row["pid"])
            await asyncio.sleep(backoff.next())

    async def _renew(self) -> None:
        """Nothing to write: renew the claims, so they do not go stale."""
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            await self._lock(conn)
            await self._claim(conn, set(self.generations))

    async def _claim(
        self, conn, parts: set[int], generations: dict[int, int] | None = None
    ) -> set[int]:
        """Claim `parts` for this transaction under the generation their rows were made
        under (`generations`, else the current one); returns those another worker, or
        this one under a newer generation, owns now."""
        generations = self.generations if generations is None else generations
        mine = {p: generations[p] for p in parts if p in generations}
        claimed = set()
        if mine:
            self._claimed_at = time.monotonic()
            rows = await conn.fetch(
                CLAIM, list(mine), list(mine.values()), STALE_CLAIM_S, self.app_id
            )
            claimed = {row["part"] for row in rows}
        refused = parts - claimed
        if refused:
            self.refused_partitions += len(refused)
            log.warning(
                "postgres: partitions %s are written by a worker of a newer generation "
                "than this one's %s; their rows are left to it",
                sorted(refused),
                {p: mine.get(p) for p in sorted(refused)},
            )
        return refused

    async def _write(self, batch: PendingRows) -> None:
        """One transaction for the whole batch; if PostgreSQL refuses a row as data (it
        never will take it), the batch again with the rows it refuses set aside
        (app/sinks/rejects.py) and the rest written in the same transaction."""
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await self._write_in(conn, batch, isolate=False)
            except DATA_ERRORS:
                async with conn.transaction():
                    await self._write_in(conn, batch, isolate=True)

    async def _write_in(self, conn, batch: PendingRows, isolate: bool) -> None:
        await self._lock(conn)
        refused = await self._claim(conn, set(batch.batches), batch.generations)
        if refused:
            batch.drop_partitions(refused)

        def window(upsert: str, roll: str, counts: dict[tuple, int]):
            async def write(keys) -> None:
                # a key: (start, the key columns..., part)
                columns = [list(c) for c in zip(*keys, strict=True)]
                starts, parts = [ts(t) for t in columns[0]], columns[-1]
                await conn.execute(upsert, starts, *columns[1:-1], parts, [counts[k] for k in keys])
                rows = sorted({k[:-1] for k in keys})
                columns = [list(c) for c in zip(*rows, strict=True)]
                await conn.execute(roll, [ts(t) for t in columns[0]], *columns[1:])

            return write

        async def sessions(rows) -> None:
            await conn.execute(
                UPSERT_SESSIONS,
                [r[0] for r in rows],
                [ts(r[1]) for r in rows],
                [None if r[2] is None else ts(r[2]) for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
            )

        # (table, rows, how to write them, a row -> (its key, its value) for rejected_rows)
        writes = []
        for name, (table, upsert, roll) in WINDOW_SQL.items():
            counts = batch.windows.get(name, {})
            write = window(upsert, roll, counts)
            writes.append((table, list(counts), write, lambda k, c=counts: (k, c[k])))
        writes.append(
            ("user_sessions", list(batch.sessions.values()), sessions, lambda r: (r[:2], r))
        )
        for table, rows, write, key_value in writes:
            if not rows:
                continue
            if not isolate:
                await write(rows)
                continue

            async def reject(row, exc, table=table, key_value=key_value) -> None:
                await self._reject(conn, table, *key_value(row), exc)

            await write_isolating(conn, rows, write, reject)

    async def _reject(self, conn, table: str, key, value, exc: BaseException) -> None:
        """Set one row aside in rejected_rows, count it, say so (once a minute a reason)."""
        sqlstate = getattr(exc, "sqlstate", None)
        reason = f"{type(exc).__name__}: {exc}"[:500]
        key = as_text(key)
        async with conn.transaction():  # a savepoint: if even this fails, the batch retries
            await conn.execute(REJECT, table, key, as_text(value), sqlstate, reason)
        self.rejected[sqlstate or type(exc).__name__] += 1
        if self._reject_log.allow(sqlstate):
            log.warning(
                "postgres: %s refused a row as data, never writable (%s, SQLSTATE %s): %s; "
                "set aside in rejected_rows, the rest of its batch written (logged once a "
                "minute per SQLSTATE)",
                table,
                reason,
                sqlstate,
                key,
                extra=THROTTLED,
            )
