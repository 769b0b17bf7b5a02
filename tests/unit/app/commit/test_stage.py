"""What both stages' loops share (app/commit/stage.py): rebalances flagged while they
run, fenced partitions opened again only while still assigned and only after a while,
Kafka calls retried, and the stop's time budget kept."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from app.commit import stage as stage_module
from app.commit.stage import REOPEN_FENCED_S, BatchStage

TOPIC = "input"


class Consumer:
    def __init__(self, assigned: set[int]) -> None:
        self.assigned = assigned
        self.asked: list[dict] = []

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in self.assigned}

    async def getmany(self, **options):
        self.asked.append(options)
        return {}


class Stage(BatchStage):
    def __init__(self, **kwargs) -> None:
        super().__init__(commit_interval_ms=1000, **kwargs)
        self.calls: list[tuple] = []
        self.fail_assign = False

    async def assign(self, partitions: set[int]) -> None:
        self.calls.append(("assign", partitions, self.rebalancing))
        if self.fail_assign:
            raise RuntimeError("assign failed")

    async def revoke(self, partitions: set[int]) -> None:
        self.calls.append(("revoke", partitions, self.rebalancing))

    async def reopen(self, partition: int) -> None:
        self.calls.append(("reopen", partition))
        del self.fenced[partition]


def tps(*partitions: int) -> set[TopicPartition]:
    return {TopicPartition(TOPIC, p) for p in partitions}


async def test_a_rebalance_is_flagged_from_the_revocation_to_the_end_of_the_assignment():
    stage = Stage()
    listener = stage.listener()
    await listener.on_partitions_revoked(tps(0, 1))
    assert stage.rebalancing
    await listener.on_partitions_assigned(tps(1))
    assert not stage.rebalancing
    assert stage.calls == [("revoke", {0, 1}, True), ("assign", {1}, True)]
    stage.fail_assign = True  # an assignment that fails still ends the rebalance
    await listener.on_partitions_revoked(tps(1))
    with pytest.raises(RuntimeError):
        await listener.on_partitions_assigned(tps(2))
    assert not stage.rebalancing


async def test_a_fenced_partition_is_opened_again_only_while_assigned_and_after_a_while():
    stage = Stage()
    stage.consumer = Consumer(assigned={0, 1})
    now = time.monotonic()
    stage.fenced = {0: now - REOPEN_FENCED_S - 1, 1: now, 2: now - REOPEN_FENCED_S - 1}
    await stage.reopen_fenced()
    assert stage.calls == [("reopen", 0)]  # 1 too recently, 2 no longer assigned here
    assert stage.fenced == {1: now}


async def test_kafka_errors_are_retried_with_backoff_and_reported_other_errors_are_not(
    monkeypatch,
):
    stage = Stage()
    failed = []
    monkeypatch.setattr(stage, "kafka_failed", failed.append)
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(stage_module.asyncio, "sleep", sleep)
    answers = [KafkaConnectionError("away"), KafkaConnectionError("away"), "done"]

    async def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await stage.retry(call) == "done"
    assert len(failed) == 2 and slept == [0.5, 1.0]

    async def broken():
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await stage.retry(broken)


def test_a_commit_is_due_when_told_or_after_the_interval():
    stage = Stage()
    assert stage.commit_due(True) and not stage.commit_due(False)
    stage._last_commit = time.monotonic()
    assert not stage.commit_due(None)
    stage._last_commit = time.monotonic() - 1.0  # the interval is 1 s
    assert stage.commit_due(None)


async def test_a_fetch_waits_no_longer_than_until_the_next_commit():
    stage = Stage()
    stage.consumer = Consumer(assigned={0})
    stage._last_commit = time.monotonic() - 2.0  # overdue
    await stage.fetch()
    assert stage.consumer.asked[-1]["timeout_ms"] == 0
    stage._last_commit = time.monotonic()
    await stage.fetch()
    assert 0 < stage.consumer.asked[-1]["timeout_ms"] <= 1000


async def test_while_stopping_a_call_gets_its_share_of_the_time_left_and_then_up():
    stage = Stage()
    stage.stop_by = time.monotonic() + 100
    assert 45 < stage.left_s(0.5) <= 50
    assert await stage.bounded(asyncio.sleep(0))
    stage.stop_by = time.monotonic() - 5  # the budget is spent: 0.1 s, no more
    assert stage.left_s() == 0.1
    never = asyncio.get_running_loop().create_future()
    assert await stage.bounded(never, what="a commit") is False

    async def fails():
        raise KafkaConnectionError("away")

    assert await stage.bounded(fails()) is False


async def test_the_loop_finishes_its_turn_or_is_cancelled_past_the_grace():
    stage = Stage()

    async def turn():
        while not stage.stopping:
            await asyncio.sleep(0.01)
        return "finished its turn"

    task = asyncio.create_task(turn())
    await stage.stop_loop(task, grace_s=60)
    assert task.result() == "finished its turn"

    async def stuck_in_a_fetch():
        await asyncio.get_running_loop().create_future()  # never answered

    stuck = asyncio.create_task(stuck_in_a_fetch())
    await stage.stop_loop(stuck, grace_s=0.05)
    assert stuck.cancelled()
