"""The Kafka clients both stages use, made in one place with one set of options.

Stages take a `KafkaClients` and ask it for producers, consumers and an admin client,
so that their unit tests can hand them an in-memory Kafka instead
(tests/unit/fake_kafka.py) and nothing else in the stages knows how clients are made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    IncompatibleBrokerVersion,
    KafkaError,
    KafkaTimeoutError,
    NotCoordinatorError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.structs import OffsetAndMetadata

from app.aiokafka_internals import (
    OFFSET_FETCH_STABLE_VERSION,
    consumer_client,
    offset_fetch,
    set_retry_backoff,
    wrap_get_conn,
)
from app.limits import KAFKA_DEFAULT_MAX_MESSAGE_BYTES
from app.settings import Settings, kafka_connection

log = logging.getLogger(__name__)
# A transaction's produce requests can come back NOT_ENOUGH_REPLICAS while the broker
# verifies the transaction (app/source/verification.py): retried soon, not in 100 ms.
RETRY_BACKOFF_MS = 10
# aiokafka retries at a fixed retry_backoff_ms, with no growth: with the broker away,
# a producer whose transaction waits on it tried every 10 ms, about 300 failed
# connection attempts (and library log lines) a second and 3% of a core each (two
# producers with an open transaction, broker stopped, 20 s). While Kafka is away
# (app/outages.py) producers retry once a second instead.
AWAY_RETRY_BACKOFF_S = 1.0
# aiokafka tries a broker it cannot reach again as soon as asked (no reconnect.backoff;
# aio-libs/aiokafka PR #1014 is open): every consumer's coordinator lookup, metadata
# refresh and fetch loop did, about 10 times a second each, with the broker away.
# As the Java client does (KIP-144): 50 ms after a failed connection, doubling up to
# 1 s, with 20% jitter; a connection that succeeds starts again from 50 ms.
RECONNECT_BACKOFF_S = 0.05
RECONNECT_BACKOFF_MAX_S = 1.0


class KafkaClients:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._common = kafka_connection(settings)
        self._producers: weakref.WeakSet[AIOKafkaProducer] = weakref.WeakSet()
        self._away = False
        # a producer's batches: never larger than the smallest topic limit it writes to
        self.max_batch_bytes = 1 << 20

    def broker_away(self, away: bool) -> None:
        """Kafka went away (True) or is back: every producer, and those made meanwhile,
        retries once a second while it is away, every RETRY_BACKOFF_MS otherwise."""
        self._away = away
        for producer in list(self._producers):
            set_retry_backoff(producer, self._retry_backoff_s())

    def _retry_backoff_s(self) -> float:
        return AWAY_RETRY_BACKOFF_S if self._away else RETRY_BACKOFF_MS / 1000

    def producer(self, transactional_id: str) -> AIOKafkaProducer:
        """A transactional producer, not started (`start` is init_transactions)."""
        producer = AIOKafkaProducer(
            **self._common,
            transactional_id=transactional_id,
            acks="all",
            linger_ms=5,
            max_batch_size=self.max_batch_bytes,
            max_request_size=8 << 20,
            # A commit waits for its sends with its own timeout (app/commit/), so this
            # only bounds one request; a broker that stays away is handled there.
            request_timeout_ms=30_000,
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        self._producers.add(producer)
        reconnect_backoff(producer.client)
        if self._away:
            set_retry_backoff(producer, self._retry_backoff_s())
        return producer

    def consumer(self, group_id: str, **options) -> AIOKafkaConsumer:
        """A consumer of `group_id` that commits nothing itself, reading committed records."""
        consumer = AIOKafkaConsumer(
            **self._common,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            max_poll_interval_ms=300_000,
            **options,
        )
        reconnect_backoff(consumer_client(consumer))
        return consumer

    def reader(self) -> AIOKafkaConsumer:
        """A consumer without a group, for reading partitions it is assigned (restores)."""
        reader = AIOKafkaConsumer(
            **self._common,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
        )
        reconnect_backoff(consumer_client(reader))
        return reader

    def admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(**self._common)
        reconnect_backoff(consumer_client(admin))
        return admin


class ReconnectBackoff:
    """Wraps an aiokafka client's `_get_conn` (the one place every request, metadata
    refresh and coordinator lookup opens a connection): after a node refused one, the
    next attempt at that node waits for its backoff first."""

    def __init__(self, get_conn, first_s: float, max_s: float, clock=time.monotonic) -> None:
        self._get_conn = get_conn
        self.first_s, self.max_s = first_s, max_s
        self._clock = clock
        self._failed: dict[object, tuple[int, float]] = {}  # node -> (failures, retry at)

    def wait_s(self, node_id) -> float:
        failed = self._failed.get(node_id)
        return 0.0 if failed is None else max(0.0, failed[1] - self._clock())

    async def __call__(self, node_id, *args, **kwargs):
        wait = self.wait_s(node_id)
        if wait:
            await asyncio.sleep(wait)
        conn = await self._get_conn(node_id, *args, **kwargs)
        if conn is None:  # aiokafka logged it and asked for fresh metadata
            failures = self._failed.get(node_id, (0, 0.0))[0] + 1
            backoff = min(self.max_s, self.first_s * 2 ** (failures - 1))
            self._failed[node_id] = (failures, self._clock() + backoff * random.uniform(0.8, 1.2))
        else:
            self._failed.pop(node_id, None)
        return conn


def reconnect_backoff(client) -> None:
    """Give an aiokafka client (a producer's, a consumer's, an admin's) the reconnect
    backoff it lacks (RECONNECT_BACKOFF_S)."""
    wrap_get_conn(
        client,
        lambda get_conn: ReconnectBackoff(get_conn, RECONNECT_BACKOFF_S, RECONNECT_BACKOFF_MAX_S),
    )


async def create_topics(admin, topics: list[NewTopic]) -> None:
    """Create those of `topics` that do not exist yet (another worker may be first)."""
    existing = set(await admin.list_topics())
    wanted = [t for t in topics if t.name not in existing]
    if wanted:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(wanted)


async def topic_limits(admin, topics: list[str]) -> dict[str, int]:
    """Each topic's max.message.bytes, as the broker applies it (the topic's own setting,
    or the broker's message.max.bytes); Kafka's default where the broker will not say
    (not authorised, say). A retriable error is raised for the caller to try again."""
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": None}) for t in topics
    ]
    limits = dict.fromkeys(topics, KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
    try:
        responses = await admin.describe_configs(resources)
    except KafkaError as exc:
        if exc.retriable:
            raise  # the caller tries again (Kafka away, a leader moving)
        log.warning(
            "kafka: cannot read the topics' max.message.bytes (%s: %s); assuming Kafka's "
            "default of %d bytes",
            type(exc).__name__,
            exc,
            KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
        )
        return limits
    for response in responses:
        # (error_code, error_message, resource_type, resource_name, config_entries)
        for error, message, _, name, entries in response.resources:
            if error:
                log.warning("kafka: max.message.bytes of %s unreadable: %s", name, message)
                continue
            for entry in entries:
                if entry[0] == "max.message.bytes" and name in limits:
                    limits[name] = int(entry[1])
    return limits


async def partition_count(admin, topic: str) -> int:
    """Partitions of `topic`, waiting briefly for a topic just created to show up."""
    for _ in range(100):
        described = await admin.describe_topics([topic])
        partitions = described[0].get("partitions") if described else None
        if partitions:
            return len(partitions)
        await asyncio.sleep(0.1)
    raise KafkaError(f"topic {topic} has no partitions in the cluster metadata")


class UnstableOffsetCommitError(KafkaError):
    """UNSTABLE_OFFSET_COMMIT (88), which aiokafka 0.14 does not know: a transaction's
    offsets for the partition are pending at the group coordinator (KIP-447)."""

    errno = 88
    retriable = True


# OffsetFetch's answers that mean "ask again": group-level (the coordinator is loading
# its partition after a broker restart, or moved) or partition-level (a transaction's
# offsets not applied yet).
RETRY_GROUP_ERRORS = {
    CoordinatorLoadInProgressError.errno,
    CoordinatorNotAvailableError.errno,
    NotCoordinatorError.errno,
}
RETRY_PARTITION_ERRORS = {UnstableOffsetCommitError.errno, *RETRY_GROUP_ERRORS}
# A fenced owner's last transaction is applied by the coordinator within milliseconds;
# one still open elsewhere ends by transaction.timeout.ms (60 s by default) at most.
STABLE_OFFSETS_TIMEOUT_S = 30.0
STABLE_OFFSETS_BACKOFF_S = (0.02, 0.2)  # first, max: doubling


def _error(code: int) -> type[KafkaError]:
    return UnstableOffsetCommitError if code == UnstableOffsetCommitError.errno else for_code(code)


async def committed_offsets(
    admin,
    group_id: str,
    tps: list[TopicPartition],
    *,
    timeout_s: float = STABLE_OFFSETS_TIMEOUT_S,
    clock=time.monotonic,
    sleep=asyncio.sleep,
) -> dict[TopicPartition, OffsetAndMetadata | None]:
    """The group's committed offset of each of `tps` (None: never committed), stable:
    none that a transaction still has pending at the group coordinator.

    Fencing a partition's previous owner (InitProducerId) completes its last
    transaction, but the group coordinator applies that transaction's offsets a moment
    later: an OffsetFetch in that moment answered the offset before it, and the new
    owner sent the outputs it had made visible a second time (25 records twice after
    a 5-minute broker outage in CI). aiokafka's OffsetFetch (v3 at most) cannot ask to
    wait; this sends v7 with require_stable (KIP-447, app/aiokafka_internals.py), which
    the coordinator answers with UNSTABLE_OFFSET_COMMIT while such offsets are pending,
    and asks again, with a short backoff, for at most `timeout_s`. The same goes for a
    coordinator loading or moved (aiokafka's admin dropped that group-level error and
    returned no offsets, once read as "never committed"). Raises KafkaTimeoutError
    when the offsets stay unstable; the transport's errors (broker away) as they come."""
    partitions: dict[str, list[int]] = {}
    for tp in tps:
        partitions.setdefault(tp.topic, []).append(tp.partition)
    deadline = clock() + timeout_s
    backoff, backoff_max = STABLE_OFFSETS_BACKOFF_S
    coordinator = None
    while True:
        if coordinator is None:
            coordinator = await admin.find_coordinator(group_id)
        try:
            response = await offset_fetch(admin, coordinator, group_id, partitions)
        except NotImplementedError as exc:  # Request.prepare: the broker has no v7
            raise IncompatibleBrokerVersion(
                f"the broker cannot take OffsetFetch v{OFFSET_FETCH_STABLE_VERSION} "
                f"(require_stable, Kafka 2.5+): {exc}"
            ) from exc
        unstable, got = _read(response, tps)
        if not unstable:
            return got
        if unstable & {NotCoordinatorError.errno, CoordinatorNotAvailableError.errno}:
            coordinator = None  # moved: looked up again
        if clock() >= deadline:
            names = ", ".join(sorted(_error(code).__name__ for code in unstable))
            raise KafkaTimeoutError(
                f"the committed offsets of group {group_id} for {tps} were still not "
                f"stable after {timeout_s:.0f}s ({names})"
            )
        log.debug("kafka: offsets of group %s not stable yet (errors %s)", group_id, unstable)
        await sleep(min(backoff, max(0.0, deadline - clock())))
        backoff = min(backoff_max, backoff * 2)


def _read(response, tps) -> tuple[set[int], dict[TopicPartition, OffsetAndMetadata | None]]:
    """(error codes to ask again for, offsets) of an OffsetFetch v7 response; raises a
    non-retriable error, or an answer that leaves out a partition asked for."""
    if response.error_code in RETRY_GROUP_ERRORS:
        return {response.error_code}, {}
    if response.error_code:
        raise _error(response.error_code)(f"OffsetFetch: group-level error {response.error_code}")
    got: dict[TopicPartition, OffsetAndMetadata | None] = {}
    retry: set[int] = set()
    for topic, partitions, _ in response.topics:
        for partition, offset, _epoch, metadata, error, _ in partitions:
            tp = TopicPartition(topic, partition)
            if error in RETRY_PARTITION_ERRORS:
                retry.add(error)
            elif error:
                raise _error(error)(f"OffsetFetch: {tp}: error {error}")
            else:
                got[tp] = OffsetAndMetadata(offset, metadata or "") if offset >= 0 else None
    if retry:
        return retry, {}
    missing = [tp for tp in tps if tp not in got]
    if missing:  # a successful answer names every partition asked for
        raise CoordinatorLoadInProgressError(f"OffsetFetch: the answer left out {missing}")
    return set(), {tp: got[tp] for tp in tps}
