"""Producers retry once a second while Kafka is away, every 10 ms otherwise."""

from __future__ import annotations

from app.kafka_clients import AWAY_RETRY_BACKOFF_S, RETRY_BACKOFF_MS, KafkaClients
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
