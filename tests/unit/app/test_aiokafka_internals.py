"""The aiokafka private attributes the project uses still exist where
app/aiokafka_internals.py reaches them, on real aiokafka objects (no broker needed):
a new aiokafka that moves one fails here, by name."""

from __future__ import annotations

import asyncio
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


async def test_offset_fetch_v7_goes_through_the_admins_client_as_aiokafka_frames_requests():
    """`offset_fetch` builds on aiokafka.protocol's Request/RequestStruct and sends with
    the admin's AIOKafkaClient: the connection prepares the request with the versions
    its broker announced, frames a flexible struct with the v2 header, and reads the
    answer with the struct's response header and RESPONSE_TYPE."""
    from aiokafka.conn import AIOKafkaConnection
    from aiokafka.protocol.api import RequestHeader_v2, ResponseHeader_v1

    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    client = internals.consumer_client(admin)
    assert inspect.iscoroutinefunction(client.send)
    assert list(inspect.signature(client.send).parameters)[:2] == ["node_id", "request"]
    assert inspect.iscoroutinefunction(admin.find_coordinator)
    assert list(inspect.signature(admin.find_coordinator).parameters)[:1] == ["group_id"]
    send = inspect.getsource(AIOKafkaConnection.send)
    assert "request.prepare(self._versions)" in send and "build_request_header" in send
    assert "self._versions = versions" in inspect.getsource(AIOKafkaConnection._do_version_lookup)

    struct = internals.OffsetFetchStable("g", {"t": [0]}).prepare({9: (1, 10)})
    assert isinstance(struct, internals.OffsetFetchRequest_v7)
    assert isinstance(struct.build_request_header(1, "c"), RequestHeader_v2)
    # a response frame, read by a connection as it reads the broker's
    conn = AIOKafkaConnection("127.0.0.1", 1)
    answered = asyncio.get_running_loop().create_future()
    conn._requests.append((5, struct, answered))
    answer = internals.OffsetFetchResponse_v7(0, [("t", [(0, 7, -1, "m", 0, {})], {})], 0, {})
    conn._handle_frame(ResponseHeader_v1(5, {}).encode() + answer.encode())
    assert answered.result().topics == answer.topics and not conn._requests

    sent = []

    async def capture(node_id, request):
        sent.append((node_id, request))
        return "answer"

    client.send = capture
    assert await internals.offset_fetch(admin, 3, "g", {"t": [0]}) == "answer"
    assert sent[0][0] == 3 and isinstance(sent[0][1], internals.OffsetFetchStable)
    await admin.close()


def test_aiokafkas_own_offset_fetch_still_cannot_ask_for_stable_offsets():
    """When this fails, aiokafka's OffsetFetchRequest reaches v7 (require_stable):
    app/kafka_clients.py `committed_offsets` may use it instead of its own."""
    from aiokafka.protocol.commit import OffsetFetchRequest

    assert max(c.API_VERSION for c in OffsetFetchRequest._CLASSES) < 7
