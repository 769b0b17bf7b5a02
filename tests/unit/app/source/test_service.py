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
    stage._loop_task.cancel()  # the test steps it with poll()
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
        # is opened again (aiokafka then returns no offsets at all)
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
        await b.checkpoints[0].commit(10**6)
    exactly_once(kafka, 60)


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
    assert 0 in a.checkpoints and not a.checkpoints[0].closed
    hold.release.set()
    await committing
    await revoking
    # its own commit (nothing left to commit) did not meet the one in flight
    assert "commit before giving up" not in caplog.text
    assert set(a.checkpoints) == {1} and not a.rebalancing
    exactly_once(kafka, 20)  # committed once, before the partition was given up
    b = await started(kafka, tmp_path / "a")
    await kafka.assign(b.consumer, {0})
    send(kafka, 20, start=20)
    await step(a)
    await step(b)
    exactly_once(kafka, 40)  # B read on from A's commit: nothing again, nothing lost
    assert a.refused_by_fence == 0
