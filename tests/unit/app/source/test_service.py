"""The source stage on an in-memory Kafka (tests/unit/fake_kafka.py) and a real lake
table in a temporary folder: after a failed, unknown or fenced commit, every valid
input record is in the enriched topic exactly once for a read_committed reader."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest

from app.commit import stage as stage_module
from app.errors import Fenced
from app.settings import Settings
from app.sinks.lake import LakeTable
from app.source.service import SourceStage
from app.stats import Stats
from tests.unit.fake_kafka import FakeKafka

T = (int(time.time()) - 3600) * 1000
INPUT = "input"


def settings_for(tmp_path) -> Settings:
    return Settings(
        app_id="t",
        input_topic=INPUT,
        enriched_topic="enriched",
        dlq_topic="dlq",
        partitions=2,
        lake_dir=str(tmp_path / "lake"),
    )


async def started(kafka: FakeKafka, tmp_path) -> SourceStage:
    settings = settings_for(tmp_path)
    stage = SourceStage(settings, Stats(), LakeTable(settings.lake_dir, "t"), kafka)
    await stage.on_start()
    stage.loop_task.cancel()  # the test steps it with poll()
    return stage


async def owner_of_both(tmp_path) -> tuple[FakeKafka, SourceStage]:
    """A stage assigned both partitions of the input, which holds 20 records."""
    kafka = FakeKafka()
    kafka.create_topic(INPUT, 2)
    stage = await started(kafka, tmp_path / "a")
    await kafka.assign(stage.consumer, {0, 1})
    send(kafka, 20)
    return kafka, stage


def send(kafka: FakeKafka, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        value = {"event_time": T + i * 1000, "user_id": f"u{i % 7}", "event_type": "click"}
        value["page_url"] = "/a"
        kafka.produce(INPUT, i % 2, orjson.dumps(value))


def enriched_copies(kafka: FakeKafka) -> Counter:
    return Counter(
        (v["kafka_partition"], v["kafka_offset"])
        for v in (orjson.loads(r.value) for r in kafka.visible("enriched"))
    )


async def step(stage: SourceStage) -> None:
    await stage.poll(commit=False)
    await stage.poll(commit=True)


def exactly_once(kafka: FakeKafka, n: int) -> None:
    copies = enriched_copies(kafka)
    assert sum(copies.values()) == n and set(copies.values()) == {1}


@pytest.mark.parametrize(
    "faults",
    [
        ["send"],
        ["offsets"],
        ["commit"],
        ["commit-reply"],
        # a broker restart: the group's coordinator is still loading when the partition
        # is opened again (COORDINATOR_LOAD_IN_PROGRESS: asked again)
        ["commit-reply", "offsets-loading"],
    ],
)
async def test_after_a_failed_or_unknown_commit_it_reads_on_from_the_brokers_offset(
    tmp_path, faults
):
    kafka = FakeKafka()
    kafka.create_topic(INPUT, 2)
    stage = await started(kafka, tmp_path)
    await kafka.assign(stage.consumer, {0, 1})
    send(kafka, 40)
    await step(stage)
    exactly_once(kafka, 40)
    for fault in faults:
        kafka.fail(fault)
    send(kafka, 40, start=40)
    await step(stage)
    assert stage.aborts == 1
    await step(stage)
    exactly_once(kafka, 80)


async def test_a_fenced_partition_commits_nothing_and_is_opened_again_if_still_assigned(
    tmp_path, monkeypatch
):
    kafka, a = await owner_of_both(tmp_path)
    await step(a)
    send(kafka, 20, start=20)
    await a.poll(commit=False)  # A has them in its open checkpoint...
    b = await started(kafka, tmp_path / "a")  # same lake
    await kafka.assign(b.consumer, {0, 1})  # ...when B opens both partitions
    await a.poll(commit=True)
    assert a.refused_by_fence == 2 and set(a.fenced) == {0, 1}
    exactly_once(kafka, 20)
    await step(b)
    exactly_once(kafka, 40)
    # the group still assigns A both (B was an older member, say): A opens them again
    monkeypatch.setattr(stage_module, "REOPEN_FENCED_S", 0.0)
    send(kafka, 20, start=40)
    await a.poll(commit=False)
    assert not a.fenced
    await step(a)
    with pytest.raises(Fenced, match="owned by another worker"):  # B is fenced now
        await b.tasks[0].checkpoint.commit(10**6)
    exactly_once(kafka, 60)


async def test_a_fenced_partition_whose_lake_moved_stays_fenced_and_is_opened_again(
    tmp_path, monkeypatch
):
    """The worker that fenced this one also writes the lake, so the lake says it moved
    before the fenced partition is opened again: it must stay fenced (paused, its
    closed checkpoint unused) and be opened again as any fenced partition."""
    kafka, a = await owner_of_both(tmp_path)
    await step(a)
    send(kafka, 20, start=20)
    await a.poll(commit=False)
    b = await started(kafka, tmp_path / "a")
    await kafka.assign(b.consumer, {0, 1})
    await a.poll(commit=True)
    assert set(a.fenced) == {0, 1}
    a.lake_moved(0, (0, a.tasks[0].reader.clock.stream_time))
    assert set(a.fenced) == {0, 1} and a.tasks[0].checkpoint.closed
    await step(b)
    exactly_once(kafka, 40)
    monkeypatch.setattr(stage_module, "REOPEN_FENCED_S", 0.0)
    send(kafka, 20, start=40)
    await a.poll(commit=False)
    assert not a.fenced and not a.tasks[0].checkpoint.closed
    await step(a)
    exactly_once(kafka, 60)
    assert a.uncommitted() == {}


async def test_a_reopening_that_fails_is_tried_again_with_backoff_and_holds_no_other_back(
    tmp_path, monkeypatch
):
    kafka, stage = await owner_of_both(tmp_path)
    await step(stage)
    exactly_once(kafka, 20)
    opened = stage.open_tasks

    async def open_(partitions, *args, **kwargs):
        raise OSError("the lake cannot be read")

    monkeypatch.setattr(stage, "open_tasks", open_)
    send(kafka, 20, start=20)
    kafka.fail("commit")  # one partition's commit fails: it is opened again, and fails
    await stage.poll(commit=False)
    await stage.poll(commit=True)  # no exception escapes the turn
    failed = stage.unopened
    assert len(failed) == 1 and stage.loop_errors == 1 and not stage.fenced
    survivor = ({0, 1} - failed).pop()
    assert survivor in stage.tasks  # not abandoned
    monkeypatch.setattr(stage, "open_tasks", opened)
    await stage.open_unopened()  # the supervisor, once its backoff allows
    assert stage.unopened == failed  # not yet: backoff
    stage._opening = {p: (since, 0.0) for p, (since, _) in stage._opening.items()}
    await stage.open_unopened()
    assert not stage.unopened
    await step(stage)
    exactly_once(kafka, 40)


async def test_an_unexpected_error_in_the_loop_is_logged_and_the_loop_goes_on(
    tmp_path, monkeypatch, caplog
):
    """A bug or an error nobody classified, raised in a turn: the supervisor logs it with
    its traceback and opens every partition again from what is committed. Before, the
    source loop's task ended and the stage read nothing more while /api/health said
    200."""
    kafka = FakeKafka()
    kafka.create_topic(INPUT, 2)
    stage = await started(kafka, tmp_path)
    await kafka.assign(stage.consumer, {0, 1})
    monkeypatch.setattr(stage_module, "Backoff", lambda *a: _NoWait())
    read = failing_once(stage.batch_reader.read, "a bug in the reader")
    monkeypatch.setattr(stage.batch_reader, "read", read)
    send(kafka, 40)
    loop = asyncio.create_task(stage.run_loop())
    try:
        for _ in range(200):
            if sum(enriched_copies(kafka).values()) >= 40:
                break
            await asyncio.sleep(0.02)
        assert stage.alive and not loop.done()
    finally:
        stage.stopping = True
        await asyncio.wait_for(loop, 5)
    exactly_once(kafka, 40)
    assert stage.loop_errors == 1
    assert "RuntimeError: a bug in the reader" in stage.last_loop_error
    assert any(r.exc_info and "unexpected error in the loop" in r.message for r in caplog.records)


def failing_once(call, message: str):
    """`call`, except that its first call raises RuntimeError(message)."""
    calls = []

    def wrapper(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(message)
        return call(*args)

    return wrapper


class _NoWait:
    def next(self) -> float:
        return 0.0

    def reset(self) -> None:
        pass


async def test_a_record_the_broker_refuses_as_too_large_is_dead_lettered_not_retried(tmp_path):
    """A topic's max.message.bytes lowered after the limits were read: the broker refuses
    the commit (a data error, not an outage). The stage reads the limits again, judges
    the records again, dead-letters the one that does not fit (too_large), and every
    other record is carried once. Before, the same commit failed for ever."""
    kafka = FakeKafka()
    kafka.create_topic(INPUT, 2)
    stage = await started(kafka, tmp_path)
    await kafka.assign(stage.consumer, {0, 1})
    send(kafka, 20)
    await step(stage)
    kafka.max_message_bytes = 20_000  # lowered while the worker runs
    big = {"event_time": T, "user_id": "u-big", "event_type": "click", "page_url": "/a"}
    kafka.produce(INPUT, 0, orjson.dumps({**big, "blob": "x" * 30_000}))
    send(kafka, 20, start=21)
    for _ in range(3):
        await step(stage)
    assert stage.limits.enriched < 20_000
    copies = enriched_copies(kafka)
    assert sum(copies.values()) == 40 and set(copies.values()) == {1}
    dead = [dict(r.headers) for r in kafka.visible("dlq")]
    assert [(d["reason"], d["source_offset"]) for d in dead] == [(b"too_large", b"10")]
    assert stage.stats.rejected[("kafka", "commit_refused_too_large")] == 1


async def test_no_commit_while_a_partition_is_read_again_for_the_lake_below_its_outputs(
    tmp_path, monkeypatch
):
    """After a lake fence the partition is read again from the lake's position, for the
    lake only, while its checkpoint still holds outputs up to where it had read. A commit
    in between would record an offset below those outputs: the next owner would then
    send them again (duplicates in enriched_activity)."""
    monkeypatch.setattr(stage_module, "MAX_RECORDS", 4)
    kafka = FakeKafka()
    kafka.create_topic(INPUT, 2)
    stage = await started(kafka, tmp_path)
    await kafka.assign(stage.consumer, {0, 1})
    send(kafka, 40)
    while stage.tasks[0].reader.next_offset < 8:
        await stage.poll(commit=False)  # the checkpoint holds outputs of records 0..7 or more
    held = stage.tasks[0].reader.next_offset
    assert held < 20
    stage.lake_moved(0, (0, stage.tasks[0].reader.clock.stream_time))  # another writer's lake
    await stage.poll(commit=True)  # reads 0..3 again for the lake
    assert stage.tasks[0].reader.next_offset < held
    # a crash now: the next owner starts from the committed offset
    successor = await started(kafka, tmp_path)
    await kafka.assign(successor.consumer, {0, 1})
    for _ in range(30):
        await step(successor)
    exactly_once(kafka, 40)


async def test_a_revocation_while_the_supervisor_waits_commits_nothing_of_the_broken_turn(
    tmp_path, monkeypatch
):
    """The turn that raised had read records and sent none of their outputs: a
    rebalance during the supervisor's backoff must not commit that position (found in
    review: the next owner's enriched topic held 30 of 40 records)."""
    kafka = FakeKafka()
    kafka.create_topic(INPUT, 2)
    a = await started(kafka, tmp_path / "a")
    await kafka.assign(a.consumer, {0, 1})
    monkeypatch.setattr(a.outputs, "write", failing_once(a.outputs.write, "a bug after reading"))
    monkeypatch.setattr(stage_module.Backoff, "next", lambda self: 5.0)
    send(kafka, 40)
    loop = asyncio.create_task(a.run_loop())
    for _ in range(100):
        if a.loop_errors:
            break
        await asyncio.sleep(0.01)
    assert a.loop_errors == 1
    b = await started(kafka, tmp_path / "a")  # the group moves both partitions to B
    await kafka.assign(a.consumer, set())
    await kafka.assign(b.consumer, {0, 1})
    a.stopping = True
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    for _ in range(5):
        await step(b)
    exactly_once(kafka, 40)


async def test_a_partition_that_cannot_be_opened_holds_no_other_back_and_is_reported(
    tmp_path, monkeypatch
):
    kafka = FakeKafka()
    kafka.create_topic(INPUT, 2)
    stage = await started(kafka, tmp_path)
    opened = stage.open_tasks

    async def open_(partitions, *args, **kwargs):
        if 1 in partitions:
            raise OSError("the lake cannot be read")
        await opened(partitions, *args, **kwargs)

    monkeypatch.setattr(stage, "open_tasks", open_)
    await kafka.assign(stage.consumer, {0, 1})
    assert stage.unopened == {0, 1} and not stage.tasks  # opened together: both wait
    send(kafka, 40)
    stage.progress.stuck_after_s = 0.0
    loop = asyncio.create_task(stage.run_loop())
    try:
        for _ in range(200):
            if sum(enriched_copies(kafka).values()) == 20:
                break
            await asyncio.sleep(0.01)
    finally:
        stage.stopping = True
        await asyncio.wait_for(loop, 5)
    assert sum(enriched_copies(kafka).values()) == 20  # partition 0's, promptly
    assert [p for p, _ in stage.not_opened()] == [1]


async def test_a_revocation_during_a_commit_in_flight_waits_for_it_and_the_next_owner_goes_on(
    tmp_path, caplog
):
    kafka, a = await owner_of_both(tmp_path)
    hold = kafka.hold("commit")
    await a.poll(commit=False)
    committing = asyncio.create_task(a.poll(commit=True))
    await hold.reached.wait()  # partition 0's transaction is being committed ...
    revoking = asyncio.create_task(kafka.assign(a.consumer, {1}))  # ... when 0 is revoked
    await asyncio.sleep(0.2)  # time for a revocation that did not wait to go ahead
    assert not revoking.done() and a.rebalancing  # it waits for the commit's turn
    assert 0 in a.tasks and not a.tasks[0].checkpoint.closed
    hold.release.set()
    await committing
    await revoking
    # its own commit (nothing left to commit) did not meet the one in flight
    assert "commit before giving up" not in caplog.text
    assert set(a.tasks) == {1} and not a.rebalancing
    exactly_once(kafka, 20)  # committed once, before the partition was given up
    b = await started(kafka, tmp_path / "a")
    await kafka.assign(b.consumer, {0})
    send(kafka, 20, start=20)
    await step(a)
    await step(b)
    exactly_once(kafka, 40)  # B read on from A's commit: nothing again, nothing lost
    assert a.refused_by_fence == 0


async def test_a_failed_commit_is_counted_once_in_the_kafka_sinks_health(tmp_path):
    """Both stages answer a failed commit through one handler (app/commit/stage.py); the
    source stage's own copy counted each failure twice."""
    kafka = FakeKafka()
    kafka.create_topic(INPUT, 2)
    stage = await started(kafka, tmp_path)
    await kafka.assign(stage.consumer, {0})
    send(kafka, 10)
    kafka.fail("commit")
    await step(stage)
    assert stage.aborts == 1
    assert stage.outputs.health.errors == 1


async def test_a_new_owner_waits_for_the_offsets_of_the_previous_owners_last_transaction(
    tmp_path,
):
    """The group coordinator applies a transaction's offsets a moment after its commit:
    the new owner's stable offset fetch is answered UNSTABLE_OFFSET_COMMIT until then,
    instead of the offset before that transaction (whose outputs it would send again)."""
    kafka, a = await owner_of_both(tmp_path)
    kafka.offsets_late = 3
    await step(a)
    exactly_once(kafka, 20)
    assert await a.admin.list_consumer_group_offsets(a.group_id) == {}  # not applied yet
    b = await started(kafka, tmp_path / "a")  # same lake
    await kafka.assign(b.consumer, {0, 1})
    send(kafka, 20, start=20)
    await step(b)
    exactly_once(kafka, 40)  # the plain fetch (no require_stable): the first 20 twice
    assert kafka.unstable_answers >= 3  # asked again until the coordinator applied them
