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
  client, to give it the reconnect backoff (a producer's is public).
"""

from __future__ import annotations

from collections.abc import Callable

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
