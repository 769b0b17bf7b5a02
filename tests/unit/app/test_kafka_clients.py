"""Producers retry once a second while Kafka is away, every 10 ms otherwise; every
client waits before connecting again to a node that refused it."""

from __future__ import annotations

import pytest

from app.kafka_clients import (
    AWAY_RETRY_BACKOFF_S,
    RETRY_BACKOFF_MS,
    KafkaClients,
    ReconnectBackoff,
)
from app.outages import Outages
from app.settings import Settings


def backoffs(producer) -> tuple[float, float]:
    return producer.client._retry_backoff, producer._sender._retry_backoff


async def test_producers_retry_less_often_while_kafka_is_away() -> None:
    clients = KafkaClients(Settings())
    outages = Outages()
    outages.register("kafka", "127.0.0.1:9092")
    outages.watch("kafka", clients.broker_away)
    before = clients.producer("t-0")
    soon = RETRY_BACKOFF_MS / 1000
    assert backoffs(before) == (soon, soon)

    outages.failed("kafka", "KafkaConnectionError")
    made_meanwhile = clients.producer("t-1")
    assert backoffs(before) == backoffs(made_meanwhile) == (AWAY_RETRY_BACKOFF_S,) * 2

    outages.ok("kafka")
    assert backoffs(before) == backoffs(made_meanwhile) == (soon, soon)


def test_a_failing_listener_does_not_break_the_outage_bookkeeping() -> None:
    outages = Outages()
    outages.register("postgres", "db")
    heard: list[bool] = []

    def broken(away: bool) -> None:
        raise RuntimeError("bug")

    outages.watch("postgres", broken)
    outages.watch("postgres", heard.append)
    outages.failed("postgres", "refused")
    outages.ok("postgres")
    assert heard == [True, False] and not outages.down("postgres")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_node_that_refused_a_connection_is_tried_again_after_a_growing_backoff(
    monkeypatch,
) -> None:
    """aiokafka has no reconnect backoff: every loop of a consumer tried an unreachable
    broker again at once. The wrapper waits 50 ms, then twice as long each time, at most
    1 s (20% jitter), and starts again once a connection succeeds."""
    clock, slept, answers = Clock(), [], []

    async def get_conn(node_id, **kwargs):
        return answers.pop(0)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    monkeypatch.setattr("app.kafka_clients.asyncio.sleep", sleep)
    monkeypatch.setattr("app.kafka_clients.random.uniform", lambda low, high: 1.0)
    backoff = ReconnectBackoff(get_conn, 0.05, 1.0, clock=clock)

    answers.extend([None] * 7)
    for _ in range(7):
        assert await backoff(1) is None
    assert slept == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0])
    assert backoff.wait_s(2) == 0.0  # other nodes are tried at once

    clock.now += 5.0  # the backoff passed meanwhile: no wait
    answers.extend(["conn", None])
    assert await backoff(1) == "conn"
    assert await backoff(1) is None
    assert backoff.wait_s(1) == pytest.approx(0.05)  # after a success, from the start again
    assert len(slept) == 6


async def test_every_client_the_stages_make_has_the_reconnect_backoff() -> None:
    clients = KafkaClients(Settings())
    made = (
        clients.producer("t-0").client,
        clients.consumer("g")._client,
        clients.reader()._client,
        clients.admin()._client,
    )
    for client in made:
        assert isinstance(client._get_conn, ReconnectBackoff)
