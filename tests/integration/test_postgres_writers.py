"""PostgreSQL writes are fenced per user-keyed partition by the consumer-group
generation: a worker that lost a partition (it stood still, say, and woke up) cannot
overwrite the rows of the partition's new owner."""

from __future__ import annotations

import random
import string

import asyncpg
import pytest

from app.sinks.postgres import PostgresSink
from tables.sessions import ENDED, SessionRow
from tests.window_changes import changes

T = 1_769_679_060_000
# too large for a btree index row even compressed (a repeated letter would compress)
INCOMPRESSIBLE_URL = "/" + "".join(random.Random(6).choices(string.ascii_letters, k=9_000))


async def page_views(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT page_url, view_count FROM page_view_counts")
        return {row["page_url"]: row["view_count"] for row in rows}
    finally:
        await conn.close()


async def sink_for(url: str, parts: set[int], generation: int) -> PostgresSink:
    sink = PostgresSink(url, ssl_rootcert=None)
    await sink.connect()
    sink.assign(parts, generation)
    return sink


async def test_a_worker_of_an_older_generation_cannot_overwrite_the_new_owner(fresh_db):
    old = await sink_for(fresh_db, {0, 1}, generation=5)
    new = None
    try:
        old.add(0, changes(page_views={(T, "/a"): 3}), batch=1)
        await old.flush()
        new = await sink_for(fresh_db, {0}, generation=6)  # partition 0 moved
        new.add(0, changes(page_views={(T, "/a"): 7}), batch=1)
        await new.flush()

        # the old owner wakes with rows of both partitions in hand
        ended = SessionRow("u1", T, T + 1_000, ENDED)
        old.add(0, changes(page_views={(T, "/a"): 4}, sessions={("u1", T): ended}), batch=2)
        old.add(1, changes(page_views={(T, "/b"): 2}), batch=2)
        await old.flush()

        assert await page_views(fresh_db) == {"/a": 7, "/b": 2}
        assert old.refused_partitions == 1
        assert old.confirmed_batches == {0: 1, 1: 2}  # partition 0's batch 2 never landed
        conn = await asyncpg.connect(fresh_db)
        try:
            assert await conn.fetchval("SELECT count(*) FROM user_sessions") == 0
        finally:
            await conn.close()
    finally:
        for sink in (old, new):
            if sink is not None:
                await sink.pool.close()


async def test_a_claim_nobody_renews_gives_way_to_a_restarted_group(fresh_db):
    """A group Kafka forgot, or a new Kafka, starts its generations again at 1."""
    first = await sink_for(fresh_db, {0}, generation=57)
    first.add(0, changes(page_views={(T, "/a"): 3}), batch=1)
    await first.flush()
    await first.pool.close()

    later = await sink_for(fresh_db, {0}, generation=1)
    try:
        later.add(0, changes(page_views={(T, "/a"): 5}), batch=1)
        await later.flush()
        assert await page_views(fresh_db) == {"/a": 3}  # refused: the claim is recent
        await later.pool.execute(
            "UPDATE partition_writers SET written_at = now() - interval '61 seconds'"
        )
        later.add(0, changes(page_views={(T, "/a"): 5}), batch=2)
        await later.flush()
        assert await page_views(fresh_db) == {"/a": 5}
    finally:
        await later.pool.close()


async def test_an_idle_owner_renews_its_claims_and_pipelines_claim_apart(fresh_db, monkeypatch):
    from app.sinks import postgres

    monkeypatch.setattr(postgres, "RENEW_CLAIMS_S", 0.0)
    owner = await sink_for(fresh_db, {0}, generation=3)
    other_pipeline = PostgresSink(fresh_db, ssl_rootcert=None, app_id="another")
    await other_pipeline.connect()
    other_pipeline.assign({0}, 1)
    try:
        await owner.pool.execute(
            "INSERT INTO partition_writers VALUES ('pipeline', 0, 3, now() - interval '50 s')"
        )
        claimed = "SELECT written_at FROM partition_writers WHERE app_id = 'pipeline'"
        before = await owner.pool.fetchval(claimed)
        await owner.flush()  # nothing to write: the claim is renewed
        assert await owner.pool.fetchval(claimed) > before
        other_pipeline.add(0, changes(page_views={(T, "/x"): 1}), batch=1)
        await other_pipeline.flush()  # generation 1 < 3, but another APP_ID's claim
        assert other_pipeline.refused_partitions == 0
    finally:
        await owner.pool.close()
        await other_pipeline.pool.close()


@pytest.mark.parametrize("ended_by", ["the server", "the waiting writer"])
async def test_a_worker_frozen_inside_a_transaction_does_not_hold_the_others_up(
    fresh_db, monkeypatch, ended_by
):
    import asyncio

    from app.sinks import postgres
    from app.sinks.postgres_sql import LOCK_KEY

    if ended_by == "the server":  # idle in a transaction
        monkeypatch.setattr(postgres, "IDLE_IN_TRANSACTION_MS", 1_000)
        monkeypatch.setattr(postgres, "STUCK_HOLDER_S", 600.0)
    else:  # as when it froze part way through sending a statement
        monkeypatch.setattr(postgres, "IDLE_IN_TRANSACTION_MS", 600_000)
        monkeypatch.setattr(postgres, "STUCK_HOLDER_S", 1.0)
    frozen = await sink_for(fresh_db, {0}, generation=1)
    other = await sink_for(fresh_db, {1}, generation=1)
    conn = await frozen.pool.acquire()
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        # ... and nothing more: the worker stands still with the lock held
        other.add(1, changes(page_views={(T, "/b"): 2}), batch=1)
        # it gets through at all: the frozen one would hold the lock for 600 s (how soon
        # is not timed here)
        await asyncio.wait_for(other.flush(), 120)
        assert await page_views(fresh_db) == {"/b": 2}
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await conn.execute("SELECT 1")  # its session was ended
    finally:
        await frozen.pool.release(conn)
        await frozen.pool.close()
        await other.pool.close()


async def test_a_row_postgres_can_never_store_is_set_aside_and_the_rest_of_its_batch_lands(
    fresh_db,
):
    """U+0000, a key too large for its index, beside good rows in one batch: the good rows
    are written in the same flush, the bad ones are in rejected_rows with their reason,
    and the batch is confirmed (its outbox rows can go). Before this, the whole batch
    was put back and retried for ever as if PostgreSQL were away."""
    sink = await sink_for(fresh_db, {0, 1}, generation=1)
    try:
        good = SessionRow('O\'Brien "dq"; DROP TABLE user_sessions;--', T, T + 1_000, ENDED)
        bad_session = SessionRow("nul\x00user", T, T + 1_000, ENDED)
        sink.add(
            0,
            changes(
                page_views={(T, "/ok"): 2, (T, "/nul\x00"): 1, (T, INCOMPRESSIBLE_URL): 5},
                sessions={(good.user_id, T): good, (bad_session.user_id, T): bad_session},
                active_users={T: 3},
            ),
            batch=1,
        )
        sink.add(1, changes(page_views={(T, "/ok"): 1}), batch=4)
        await sink.flush()

        assert await page_views(fresh_db) == {"/ok": 3}
        assert sink.confirmed_batches == {0: 1, 1: 4}
        assert not sink.pending
        conn = await asyncpg.connect(fresh_db)
        try:
            users = [r["user_id"] for r in await conn.fetch("SELECT user_id FROM user_sessions")]
            assert users == [good.user_id]
            assert await conn.fetchval("SELECT active_user_count FROM active_users") == 3
            rejected = await conn.fetch(
                "SELECT table_name, row_key, sqlstate, times FROM rejected_rows ORDER BY 1, 2"
            )
        finally:
            await conn.close()
        assert [(r["table_name"], r["sqlstate"]) for r in rejected] == [
            ("page_view_counts", "54000"),  # index row size exceeds the btree maximum
            ("page_view_counts", "22021"),  # invalid byte sequence for encoding "UTF8": 0x00
            ("user_sessions", "22021"),
        ]
        assert "\\u0000" in rejected[1]["row_key"] and "sha256" in rejected[0]["row_key"]
        assert sum(sink.rejected.values()) == 3

        # the same rows again (a restart re-upserts its state; the session has ended
        # since): counted under their keys, not added again
        later = SessionRow(bad_session.user_id, T, T + 9_000, ENDED)
        sink.add(
            0,
            changes(page_views={(T, "/nul\x00"): 2}, sessions={(later.user_id, T): later}),
            batch=2,
        )
        await sink.flush()
        conn = await asyncpg.connect(fresh_db)
        try:
            again = await conn.fetch(
                "SELECT table_name, times, row_value FROM rejected_rows "
                "WHERE row_key LIKE '%nul%' ORDER BY 1"
            )
        finally:
            await conn.close()
        assert [(r["table_name"], r["times"]) for r in again] == [
            ("page_view_counts", 2),
            ("user_sessions", 2),
        ]
        assert again[0]["row_value"] == "2" and str(T + 9_000) in again[1]["row_value"]
    finally:
        await sink.pool.close()


async def test_rows_kept_across_a_move_away_and_back_are_not_written_under_the_new_generation(
    fresh_db,
):
    """A -> B -> A: rows A made under its first generation, kept because their write
    failed, must not land under A's new generation over what A's restored state (and
    B) wrote since; they are dropped and A writes its state again."""
    a = await sink_for(fresh_db, {0}, generation=1)
    b = None
    try:
        a.add(0, changes(page_views={(T, "/a"): 1}), batch=1)
        stale = a.pending
        a.pending = type(stale)()
        b = await sink_for(fresh_db, {0}, generation=2)  # B owns it for a while
        b.add(0, changes(page_views={(T, "/a"): 5}), batch=1)
        await b.flush()
        a.assign({0}, 3)  # and A again, under a newer generation
        a.add(0, changes(page_views={(T, "/a"): 6}), batch=2)
        await a.flush()
        # the old rows come back (their write had failed) and are flushed
        stale.merge_back(a.pending)
        a.pending = stale
        await a.flush()
        assert await page_views(fresh_db) == {"/a": 6}
    finally:
        for sink in (a, b):
            if sink is not None:
                await sink.pool.close()
