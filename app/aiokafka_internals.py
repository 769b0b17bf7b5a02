"""Every private attribute of aiokafka the project touches, in one place.

Each was read in aiokafka AIOKAFKA_CHECKED (pinned in pyproject.toml) and is
checked by tests/unit/app/test_aiokafka_internals.py on real aiokafka objects, so a
new aiokafka that moves one fails there, with its name, and not in production.

- `consumer._coordinator.generation` (GroupCoordinator): the group generation of an
  assignment; PostgreSQL writes are claimed with it (app/sinks/postgres.py). aiokafka
  has no public getter.
- `client._get_conn` (AIOKafkaClient): the one place every request opens a connection,
  wrapped for the reconnect backoff aiokafka lacks (app/kafka_clients.py).
- `producer.client._retry_backoff`, `producer._sender._retry_backoff` (AIOKafkaClient,
  Sender): a producer's retry backoff, changed while it runs (once a second while
  Kafka is away).
- `producer._sender`, `producer.client` (AIOKafkaProducer): closed directly when
  `stop()` hangs on batches that cannot be delivered (app/commit/checkpoint.py).
- `consumer._subscription.subscription.assignment.state_value(tp)` (SubscriptionState,
  TopicPartitionState): a partition's fetch position, read without awaiting (the
  public `position()` may wait on the broker), past transaction markers: what is left
  to read is the high watermark less it (app/commit/stage.py, progress).
- `consumer._client`, `admin._client` (AIOKafkaConsumer, AIOKafkaAdminClient): their
  client, to give it the reconnect backoff (a producer's is public), and the admin's
  to send OffsetFetch v7 below.
- `aiokafka.protocol`'s Request / RequestStruct / Response and its compact types
  (CompactString, CompactArray, TaggedFields), undocumented: OffsetFetch v7 is built
  on them (`offset_fetch`). aiokafka's own OffsetFetchRequest stops at v3 and cannot
  set KIP-447's require_stable; AIOKafkaClient.send prepares a Request with the
  versions the connection's broker announced (`Request.prepare`) and frames a
  `FLEXIBLE_VERSION` struct with the v2 request header (tagged fields).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

AIOKAFKA_CHECKED = "0.14.0"


def group_generation(consumer) -> int:
    """The consumer group generation of the consumer's current assignment."""
    return consumer._coordinator.generation


def fetch_position(consumer, tp) -> int | None:
    """The offset the consumer fetches `tp` from next (past control records), None when
    it has none yet or the consumer keeps no such state (a test's fake)."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
    except AttributeError:
        return None
    if state is None or not state.has_valid_position:
        return None
    return state.position


def consumer_client(consumer_or_admin):
    """The AIOKafkaClient of a consumer or an admin client (a producer's is public:
    `producer.client`)."""
    return consumer_or_admin._client


def wrap_get_conn(client, wrap: Callable) -> None:
    """Replace the client's connection getter by `wrap(getter)`."""
    client._get_conn = wrap(client._get_conn)


def set_retry_backoff(producer, seconds: float) -> None:
    """A producer's retry backoff, made or started: aiokafka reads it from its client
    (metadata, connections) and its sender (each request handler takes the sender's
    when it is made) on each retry."""
    producer.client._retry_backoff = seconds
    producer._sender._retry_backoff = seconds


async def force_close(producer) -> None:
    """Close a producer's sender and client without waiting for its batches."""
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        await sender.close()
    client = getattr(producer, "client", None)
    if client is not None:
        await client.close()


# -- OffsetFetch v7 (KIP-447) --------------------------------------------------------
# As Kafka's clients/src/main/resources/common/message/OffsetFetch{Request,Response}.json
# define v7 (flexible since v6: compact strings and arrays, a tagged-field buffer
# closing every struct). v8+ reshape the request (several groups): not used.

OFFSET_FETCH_KEY = 9
OFFSET_FETCH_STABLE_VERSION = 7


class OffsetFetchResponse_v7(Response):
    API_KEY = OFFSET_FETCH_KEY
    API_VERSION = OFFSET_FETCH_STABLE_VERSION
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),  # nullable
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = OFFSET_FETCH_KEY
    API_VERSION = OFFSET_FETCH_STABLE_VERSION
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


OffsetFetchStableStruct: TypeAlias = OffsetFetchRequest_v7


class OffsetFetchStable(Request[OffsetFetchStableStruct]):
    """OffsetFetch v7 for one group's partitions. `Request.prepare` (on the connection,
    with the versions its broker announced) raises NotImplementedError where the
    broker cannot take v7 (Kafka before 2.5, or one that dropped it)."""

    API_KEY = OFFSET_FETCH_KEY

    def __init__(
        self, group_id: str, partitions: Mapping[str, list[int]], require_stable: bool = True
    ) -> None:
        self.group_id = group_id
        self.partitions = {topic: sorted(ps) for topic, ps in partitions.items()}
        self.require_stable = require_stable

    def build(self, request_struct_class: type[OffsetFetchStableStruct]) -> OffsetFetchStableStruct:
        topics = [(topic, ps, {}) for topic, ps in sorted(self.partitions.items())]
        return request_struct_class(self.group_id, topics, self.require_stable, {})


async def offset_fetch(
    admin, node_id: int, group_id: str, partitions: Mapping[str, list[int]], require_stable=True
) -> OffsetFetchResponse_v7:
    """One OffsetFetch v7 sent to `node_id` (the group's coordinator) through the admin
    client's AIOKafkaClient; its response, errors and all, for the caller to read.
    Raises aiokafka's transport errors (NodeNotReadyError, RequestTimedOutError, ...)."""
    request = OffsetFetchStable(group_id, partitions, require_stable)
    return await consumer_client(admin).send(node_id, request)
