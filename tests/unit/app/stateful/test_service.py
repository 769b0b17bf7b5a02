"""The stateful stage on an in-memory Kafka that can fail at every step: its rows equal
an independent expectation through restarts, lost local state, fenced owners, failed
and unknown commits, and compaction (tests/unit/app/stateful/driver.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.commit import stage as stage_module
from app.stateful import changelog, restore
from app.stateful import service as service_module
from app.stateful.partition import StatefulPartition
from app.stateful.service import StatefulStage
from app.stateful.state import LocalState
from app.wire import WatermarkMark, encode_events, encode_mark
from tables.sessions import ACTIVE, TIMED_OUT
from tests.unit.app.stateful.driver import Driver, FullDisk, difference, scenario_of

CHUNK = 100


def state_of(part) -> tuple:
    """What the partition's store holds, and what its aggregator and outbox hold of it."""
    agg = part.aggregator
    stored = {key: changelog.decode(value) for key, value in part.local.items()}
    return stored, agg.open_rows(), agg.checkpoint(part.input_next), part.outbox.resend(0)


async def run_through(driver: Driver, stage, per_source, length: int, start: int = 0) -> None:
    for at in range(start, length, CHUNK):
        driver.send(per_source, at, CHUNK)
        await driver.step(stage)


async def owner_of_both(tmp_path) -> tuple[Driver, StatefulStage]:
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    await driver.assign(stage, {0, 1})
    return driver, stage


async def run_both(driver: Driver, stages, per_source, length: int, start: int) -> None:
    """Send the rest a chunk at a time, each stage stepped after each chunk."""
    for at in range(start, length, CHUNK):
        driver.send(per_source, at, CHUNK)
        for stage in stages:
            await driver.step(stage)


async def test_rows_equal_the_expectation_when_nothing_goes_wrong(tmp_path):
    per_source, expected, length = scenario_of(seed=1, users=100)
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    await driver.assign(stage, {0, 1})
    await run_through(driver, stage, per_source, length)
    assert difference(expected, driver.db.rows()) is None
    # every commit's records went to the changelog with the input position
    committed = driver.kafka.groups["t-stateful"]
    for p in (0, 1):
        tp = TopicPartition(driver.settings.internal_topic, p)
        assert committed[tp].offset == driver.kafka.highwater(tp.topic, p)


@pytest.mark.parametrize("local", ["kept", "lost"])
async def test_a_restarted_worker_resumes_from_its_state_not_from_scratch(tmp_path, local):
    per_source, expected, length = scenario_of(seed=2, users=100)
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    await driver.assign(stage, {0, 1})
    half = length // 2 // CHUNK * CHUNK
    await run_through(driver, stage, per_source, half)
    await driver.crash(stage)
    # records sent while no worker runs
    driver.send(per_source, half, CHUNK)
    again = await driver.worker("a" if local == "kept" else "b")
    await driver.assign(again, {0, 1})
    changelog_size = sum(len(driver.kafka.visible(again.changelog_topic, p)) for p in (0, 1))
    read = sum(part.restored_records for part in again.tasks.values())
    assert read == (0 if local == "kept" else changelog_size)
    await driver.step(again)
    await run_through(driver, again, per_source, length, start=half + CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_a_crash_between_the_commit_and_the_local_write_replays_the_changelog(
    tmp_path, monkeypatch
):
    per_source, expected, length = scenario_of(seed=3, users=100)
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    await driver.assign(stage, {0, 1})
    await run_through(driver, stage, per_source, 4 * CHUNK)
    behind = {p: part.local.position for p, part in stage.tasks.items()}
    # the next commit lands in Kafka, and the worker dies before its RocksDB write
    for part in stage.tasks.values():
        monkeypatch.setattr(part.local, "write", lambda *args: False)
    driver.send(per_source, 4 * CHUNK, CHUNK)
    await driver.step(stage)
    assert {p: part.local.position for p, part in stage.tasks.items()} == behind
    await driver.crash(stage)
    monkeypatch.undo()
    again = await driver.worker("a")
    await driver.assign(again, {0, 1})
    for p, part in again.tasks.items():
        assert part.local.position.changelog_next > behind[p].changelog_next
    await run_through(driver, again, per_source, length, start=5 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


@pytest.mark.parametrize("step", ["send", "offsets", "commit", "commit-reply"])
async def test_a_failed_or_unknown_commit_is_restored_and_counts_nothing_twice(tmp_path, step):
    per_source, expected, length = scenario_of(seed=4, users=100)
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    await driver.assign(stage, {0, 1})
    await run_through(driver, stage, per_source, 3 * CHUNK)
    driver.kafka.fail(step)
    driver.send(per_source, 3 * CHUNK, CHUNK)
    await driver.step(stage)
    assert stage.aborts == 1
    assert set(stage.tasks) == {0, 1}  # restored, not given up
    await run_through(driver, stage, per_source, length, start=4 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_a_frozen_owner_is_fenced_and_its_successor_holds_every_committed_change(tmp_path):
    per_source, expected, length = scenario_of(seed=5, users=120)
    driver = Driver(tmp_path)
    a = await driver.worker("a")
    await driver.assign(a, {0, 1})
    await run_through(driver, a, per_source, 3 * CHUNK)
    # A freezes with a batch applied and not committed; B is given its partitions
    driver.send(per_source, 3 * CHUNK, CHUNK)
    await a.poll(commit=False)
    b = await driver.worker("b")
    await driver.assign(b, {0, 1})
    await driver.step(b)
    # A wakes: its commit is refused, its rows are not written, it gives the state up
    await a.poll(commit=True)
    a.sinks[0].flush()
    assert a.refused_by_fence == 2 and not a.tasks
    await run_through(driver, b, per_source, length, start=4 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_rows_of_an_older_generation_are_refused_after_a_newer_owner_wrote(tmp_path):
    per_source, expected, length = scenario_of(seed=6, users=100)
    driver = Driver(tmp_path)
    a = await driver.worker("a")
    await driver.assign(a, {0, 1})
    driver.send(per_source, 0, CHUNK)
    for _ in range(3):
        await a.poll(commit=False)
    await a.poll(commit=True)  # committed, rows handed to A's sink, not written yet
    b = await driver.worker("b")
    await driver.assign(b, {0, 1})
    await run_through(driver, b, per_source, 3 * CHUNK, start=CHUNK)
    a.sinks[0].flush()  # A wakes and writes rows older than B's
    assert a.sinks[0].refused == 2
    await run_through(driver, b, per_source, length, start=3 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_restoring_from_a_compacted_changelog_gives_the_same_state(tmp_path):
    per_source, expected, length = scenario_of(seed=7, users=100)
    driver = Driver(tmp_path)
    a = await driver.worker("a")
    await driver.assign(a, {0, 1})
    half = length // 2 // CHUNK * CHUNK
    await run_through(driver, a, per_source, half)
    before = {p: state_of(part) for p, part in a.tasks.items()}
    await driver.crash(a)
    driver.kafka.compact(a.changelog_topic)
    b = await driver.worker("b")  # no local state: the changelog alone
    await driver.assign(b, {0, 1})
    after = {p: state_of(part) for p, part in b.tasks.items()}
    assert after == before
    await run_through(driver, b, per_source, length, start=half)
    assert difference(expected, driver.db.rows()) is None


async def test_the_groups_committed_offset_is_not_what_positions_the_input(tmp_path):
    per_source, expected, length = scenario_of(seed=8, users=100)
    driver = Driver(tmp_path)
    a = await driver.worker("a")
    await driver.assign(a, {0, 1})
    await run_through(driver, a, per_source, 4 * CHUNK)
    await driver.crash(a)
    driver.send(per_source, 4 * CHUNK, CHUNK)
    # something moved the group's offsets past those records (a tool, a bug, Faust's
    # acknowledgements once): the state's own position rules
    for p in (0, 1):
        tp = TopicPartition(driver.settings.internal_topic, p)
        end = driver.kafka.highwater(tp.topic, p)
        driver.kafka.groups["t-stateful"][tp] = OffsetAndMetadata(end, "")
    b = await driver.worker("b")
    await driver.assign(b, {0, 1})
    await driver.step(b)
    await run_through(driver, b, per_source, length, start=5 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_revoking_commits_what_was_applied_and_the_next_owner_continues(tmp_path):
    per_source, expected, length = scenario_of(seed=9, users=100)
    driver = Driver(tmp_path)
    a = await driver.worker("a")
    await driver.assign(a, {0, 1})
    await run_through(driver, a, per_source, 3 * CHUNK)
    driver.send(per_source, 3 * CHUNK, CHUNK)
    await a.poll(commit=False)  # applied, not committed
    await driver.assign(a, set())  # a rebalance takes both away
    assert not a.tasks and not a.sinks[0].pending
    b = await driver.worker("b")
    await driver.assign(b, {0})
    await driver.assign(a, {1})
    for stage in (a, b):
        await driver.step(stage)
    await run_both(driver, (a, b), per_source, length, start=4 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_a_revocation_during_a_commit_in_flight_waits_for_it(tmp_path, caplog):
    per_source, expected, length = scenario_of(seed=13, users=100)
    driver, a = await owner_of_both(tmp_path)
    await run_through(driver, a, per_source, 3 * CHUNK)
    driver.send(per_source, 3 * CHUNK, CHUNK)
    await a.poll(commit=False)
    hold = driver.kafka.hold("commit")
    committing = asyncio.create_task(a.poll(commit=True))
    await hold.reached.wait()  # a transaction is being committed ...
    revoking = asyncio.create_task(driver.assign(a, {1}))  # ... when a rebalance comes
    await asyncio.sleep(0.2)  # time for a revocation that did not wait to go ahead
    assert not revoking.done() and set(a.tasks) == {0, 1}
    hold.release.set()
    await committing
    await revoking
    assert set(a.tasks) == {1}
    assert "commit before giving up" not in caplog.text  # it met no commit in flight
    a.sinks[0].flush()
    b = await driver.worker("b")
    await driver.assign(b, {0})  # from A's commits: the changelog and the input offset
    await run_both(driver, (a, b), per_source, length, start=4 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_after_a_local_write_fails_the_next_owner_replays_what_the_store_lacks(tmp_path):
    per_source, expected, length = scenario_of(seed=14, users=100)
    driver, a = await owner_of_both(tmp_path)
    await run_through(driver, a, per_source, 2 * CHUNK)
    local = a.tasks[0].local
    held = local.position.changelog_next
    disk = local._db = FullDisk(local._db)  # partition 0's disk fills up
    await run_through(driver, a, per_source, 4 * CHUNK, start=2 * CHUNK)
    assert local.broken and local.position.changelog_next == held  # commits went on
    disk.full = False
    local._db = disk.db
    await driver.crash(a)
    b = await driver.worker("a")  # the same folder: its store stops at `held`
    await driver.assign(b, {0, 1})
    lacking = [r for r in driver.kafka.visible(b.changelog_topic, 0) if r.offset >= held]
    assert b.tasks[0].restored_records == len(lacking) > 0
    assert b.tasks[1].restored_records == 0  # partition 1's store was whole
    await run_through(driver, b, per_source, length, start=4 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_local_state_ahead_of_its_changelog_is_rebuilt(tmp_path):
    per_source, expected, length = scenario_of(seed=10, users=80)
    driver = Driver(tmp_path)
    a = await driver.worker("a")
    await driver.assign(a, {0, 1})
    await run_through(driver, a, per_source, 2 * CHUNK)
    await driver.crash(a)
    # the local store claims more than the changelog holds (another cluster's state)
    path = tmp_path / "a" / changelog.store_name(2) / "p0"
    local = LocalState(path)
    local.write([(b"u|ghost", changelog.encode([[0], None]))], 10**9, 10**9)
    local.close()
    b = await driver.worker("a")
    await driver.assign(b, {0, 1})
    assert "ghost" not in b.tasks[0].aggregator.users
    await run_through(driver, b, per_source, length, start=2 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_local_state_older_than_the_tombstone_retention_is_rebuilt(tmp_path, monkeypatch):
    per_source, _, _ = scenario_of(seed=11, users=80)
    driver = Driver(tmp_path)
    a = await driver.worker("a")
    await driver.assign(a, {0, 1})
    await run_through(driver, a, per_source, 2 * CHUNK)
    await driver.crash(a)
    later = time.time() + restore.LOCAL_STATE_MAX_AGE_S + 60
    monkeypatch.setattr(restore.time, "time", lambda: later)
    b = await driver.worker("a")
    await driver.assign(b, {0, 1})
    for part in b.tasks.values():  # read the whole changelog again, not only its tail
        whole = len(driver.kafka.visible(b.changelog_topic, part.partition))
        assert whole > 0 and part.restored_records == whole
        assert part.changelog_next == driver.kafka.highwater(b.changelog_topic, part.partition)


def test_a_state_record_of_another_format_is_refused_with_its_format():
    with pytest.raises(changelog.StateFormatError, match="format 7"):
        changelog.decode(bytes([7]) + b"{}")
    assert changelog.decode(changelog.encode({"a": 1})) == {"a": 1}
    assert changelog.encode(None) is None and changelog.decode(None) is None


async def test_a_fenced_worker_given_its_partitions_back_restores_only_what_committed(tmp_path):
    per_source, expected, length = scenario_of(seed=12, users=100)
    driver = Driver(tmp_path)
    a = await driver.worker("a")
    await driver.assign(a, {0, 1})
    await run_through(driver, a, per_source, 3 * CHUNK)
    driver.send(per_source, 3 * CHUNK, CHUNK)
    await a.poll(commit=False)  # applied by A, never committed
    b = await driver.worker("b")
    await driver.assign(b, {0, 1})
    await driver.step(b)
    await a.poll(commit=True)  # fenced: its local store must not hold that batch
    driver.send(per_source, 4 * CHUNK, CHUNK)
    await driver.step(b)
    await driver.assign(b, set())
    await driver.assign(a, {0, 1})  # back to A, on its own local store
    assert all(part.restored_records > 0 for part in a.tasks.values())
    await run_through(driver, a, per_source, length, start=5 * CHUNK)
    assert difference(expected, driver.db.rows()) is None


async def test_time_moves_on_by_the_wall_clock_while_every_source_is_idle(tmp_path):
    """No mark comes while nothing changes (app/source/marks.py): with every source idle,
    the stage itself moves time on, and a session that timed out reaches PostgreSQL
    without any further input."""
    driver = Driver(tmp_path, partitions=1, sources=2)
    stage = await driver.worker("a")
    await driver.assign(stage, {0})
    shift = [0.0]
    stage.wall = lambda: time.monotonic() + shift[0]
    topic, start = driver.settings.internal_topic, 1_800_000_000_000
    driver.kafka.produce(topic, 0, encode_events([(0, 0, start, "u1", "session_start", "/")]))
    for source in (0, 1):
        driver.kafka.produce(topic, 0, encode_mark(WatermarkMark(source, 2, start, True)))
    await driver.step(stage)
    assert driver.db.sessions == {("u1", start): (None, ACTIVE)}
    commits = stage.commits

    await driver.step(stage)  # idle, no time passed: nothing to commit
    assert stage.commits == commits

    timeout_s = driver.settings.session_timeout_ms / 1000
    shift[0] = timeout_s - 100  # the sources repeat their marks (they last IDLE_LEASE_S)
    for source in (0, 1):
        driver.kafka.produce(topic, 0, encode_mark(WatermarkMark(source, 2, start, True)))
    await driver.step(stage)
    assert driver.db.sessions == {("u1", start): (None, ACTIVE)}
    commits = stage.commits

    shift[0] = timeout_s + 1
    await driver.step(stage)
    assert driver.db.sessions == {("u1", start): (start, TIMED_OUT)}
    assert stage.commits == commits + 1


async def test_an_unexpected_error_in_the_loop_is_logged_and_the_loop_resumes(
    tmp_path, monkeypatch, caplog
):
    """The same supervisor as the source stage's (app/commit/stage.py): an exception
    that escapes a turn is logged with its traceback, every partition is restored from
    what is committed, and the loop goes on; the rows still equal the expectation."""
    per_source, expected, length = scenario_of(seed=12, users=60)
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    await driver.assign(stage, {0, 1})
    monkeypatch.setattr(stage_module.Backoff, "next", lambda self: 0.0)
    apply, calls = StatefulPartition.apply, []

    def apply_failing_once(self, records, wall_s):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the aggregator")
        return apply(self, records, wall_s)

    monkeypatch.setattr(StatefulPartition, "apply", apply_failing_once)
    driver.send(per_source, 0, length)
    loop = asyncio.create_task(stage.run_loop())
    try:
        for _ in range(300):
            await asyncio.sleep(0.02)
            stage.sinks[0].flush()
            if difference(expected, driver.db.rows()) is None:
                break
        assert not loop.done()
    finally:
        stage.stopping = True
        await asyncio.wait_for(loop, 5)
    assert difference(expected, driver.db.rows()) is None
    assert stage.loop_errors == 1 and "a bug in the aggregator" in stage.last_loop_error
    assert any(r.exc_info and "unexpected error in the loop" in r.message for r in caplog.records)


async def test_an_opening_cancelled_by_a_revocation_closes_its_store(tmp_path, monkeypatch):
    """A partition's opening cancelled while it restores (the group took the partition
    away meanwhile) must close the RocksDB it opened: its lock would refuse the
    partition's next assignment, which would never be processed."""
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    restoring, real_restore = asyncio.Event(), service_module.restore

    async def hanging_restore(*args):
        restoring.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(service_module, "restore", hanging_restore)
    opening = asyncio.create_task(driver.assign(stage, {0}))
    await asyncio.wait_for(restoring.wait(), 5)
    opening.cancel()
    await asyncio.gather(opening, return_exceptions=True)
    assert 0 not in stage.tasks

    monkeypatch.setattr(service_module, "restore", real_restore)
    await stage.open_unopened()  # the supervisor's next turn, or the next assignment
    assert 0 in stage.tasks and not stage.unopened


async def test_a_user_keyed_record_that_cannot_be_applied_is_skipped_and_counted(tmp_path):
    """One record the stage cannot apply (a bug, or bytes that are not the wire format)
    is logged and counted; the rest of its partition is applied."""
    per_source, expected, length = scenario_of(seed=13, users=40)
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    await driver.assign(stage, {0, 1})
    driver.kafka.produce(driver.settings.internal_topic, 0, b"\x00 not the wire format")
    await run_through(driver, stage, per_source, length)
    assert stage.tasks[0].skipped_records == 1
    assert difference(expected, driver.db.rows()) is None


class HangingReader:
    """A changelog reader whose fetch never returns: the restore is cancelled there."""

    async def end_offsets(self, tps):
        return {tps[0]: 3}

    def assign(self, tps) -> None:
        pass

    def seek(self, tp, offset) -> None:
        pass

    def pause(self, tp) -> None:
        pass

    async def getmany(self, *tps, **kwargs):
        await asyncio.Event().wait()


async def test_a_restore_cancelled_after_rebuilding_its_store_closes_the_new_store(tmp_path):
    """Local state ahead of its changelog is rebuilt (a new store); a revocation that
    cancels the restore then must close that new store too, or the partition's next
    opening fails on its lock for ever (found in review)."""
    path = tmp_path / "p0"
    local = LocalState(path)
    local.write([(b"k", b"v")], 10**6, 5)  # ahead of the changelog's end (3)
    restoring = asyncio.create_task(
        restore.catch_up(local, HangingReader(), TopicPartition("changelog", 0))
    )
    await asyncio.sleep(0.2)
    restoring.cancel()
    await asyncio.gather(restoring, return_exceptions=True)
    LocalState(path).close()  # opens: nothing holds the store's lock


async def test_a_partition_that_cannot_be_opened_holds_no_other_back_and_is_reported(
    tmp_path, monkeypatch
):
    """As for the source stage (the same executor): partition 1's restore keeps failing,
    partition 0 opens and its rows land, and partition 1 is reported as not opened."""
    per_source, _, length = scenario_of(seed=5, users=40)
    driver = Driver(tmp_path)
    stage = await driver.worker("a")
    real_restore = service_module.restore

    async def restore_failing_for_1(local, reader, tp, *args):
        if tp.partition == 1:
            raise OSError("the store's disk cannot be read")
        return await real_restore(local, reader, tp, *args)

    monkeypatch.setattr(service_module, "restore", restore_failing_for_1)
    await driver.assign(stage, {0, 1})
    assert set(stage.tasks) == {0} and stage.unopened == {1}
    driver.send(per_source, 0, length)
    stage.progress.stuck_after_s = 0.0
    loop = asyncio.create_task(stage.run_loop())
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            stage.sinks[0].flush()
            if driver.db.claims.get(0):
                break
    finally:
        stage.stopping = True
        await asyncio.wait_for(loop, 5)
    assert driver.db.claims.get(0) and 1 not in driver.db.claims  # partition 0's, promptly
    assert [p for p, _ in stage.not_opened()] == [1]
    assert stage.loop_errors >= 1 and "cannot be read" in stage.last_loop_error
