"""The aiokafka private attributes the project uses still exist where
app/aiokafka_internals.py reaches them, on real aiokafka objects (no broker needed):
a new aiokafka that moves one fails here, by name."""

from __future__ import annotations

import inspect

import aiokafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient

from app import aiokafka_internals as internals

BOOTSTRAP = "127.0.0.1:1"  # never contacted: nothing here starts a client


def test_the_pinned_aiokafka_is_the_one_the_internals_were_read_in():
    assert aiokafka.__version__ == internals.AIOKAFKA_CHECKED


async def test_a_consumer_and_an_admin_have_a_client_with_a_connection_getter():
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id="g")
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    for owner in (consumer, admin):
        client = internals.consumer_client(owner)
        assert isinstance(client, AIOKafkaClient)
        assert inspect.iscoroutinefunction(client._get_conn)
        assert list(inspect.signature(client._get_conn).parameters)[:1] == ["node_id"]
    await admin.close()


async def test_a_wrapped_connection_getter_is_the_one_the_client_calls():
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    calls = []

    def wrap(get_conn):
        async def wrapped(node_id, *args, **kwargs):
            calls.append(node_id)
            return None

        return wrapped

    internals.wrap_get_conn(producer.client, wrap)
    assert await producer.client._get_conn(7) is None and calls == [7]
    # ready() asks _get_conn for the node: the wrapper is what the client uses
    assert await producer.client.ready(3) is False and calls == [7, 3]


async def test_a_producers_retry_backoff_is_read_from_its_client_and_sender():
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, retry_backoff_ms=10)
    assert producer.client._retry_backoff == pytest.approx(0.01)
    assert producer._sender._retry_backoff == pytest.approx(0.01)
    internals.set_retry_backoff(producer, 1.0)
    assert producer.client._retry_backoff == producer._sender._retry_backoff == 1.0


async def test_a_producer_can_be_closed_without_waiting_for_its_batches():
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    assert inspect.iscoroutinefunction(producer._sender.close)
    await internals.force_close(producer)


async def test_a_consumers_group_generation_is_where_it_is_read():
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id="g")
    consumer._coordinator = type("Coordinator", (), {"generation": 12})()  # set on start
    assert internals.group_generation(consumer) == 12
    source = inspect.getsource(aiokafka.consumer.group_coordinator.GroupCoordinator.__init__)
    assert "self.generation" in source


async def test_a_consumers_fetch_position_is_read_where_position_reads_it():
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id="g")
    tp = TopicPartition("t", 0)
    assert internals.fetch_position(consumer, tp) is None  # nothing assigned
    consumer._subscription.assign_from_user({tp})
    assert internals.fetch_position(consumer, tp) is None  # no position yet
    consumer._subscription.subscription.assignment.state_value(tp).seek(42)
    assert internals.fetch_position(consumer, tp) == 42
    assert await consumer.position(tp) == 42  # the public call reads the same state
