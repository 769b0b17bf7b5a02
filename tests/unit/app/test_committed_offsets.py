"""The group's committed offsets, read stable (OffsetFetch v7 with require_stable,
KIP-447): the request and response as Kafka's OffsetFetch{Request,Response}.json define
v7 on the wire, and what `committed_offsets` asks again for (a transaction's pending
offsets, a coordinator loading or moved), for how long, and what it raises."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    IncompatibleBrokerVersion,
    KafkaTimeoutError,
)
from aiokafka.protocol.api import RequestHeader_v2
from aiokafka.structs import OffsetAndMetadata

from app.aiokafka_internals import (
    OffsetFetchRequest_v7,
    OffsetFetchResponse_v7,
    OffsetFetchStable,
)
from app.kafka_clients import STABLE_OFFSETS_BACKOFF_S, committed_offsets

KAFKA_4 = {9: (1, 10)}  # OffsetFetch versions a Kafka 4 broker announces
T0, T3 = TopicPartition("t", 0), TopicPartition("t", 3)

# OffsetFetch v7 for group "g", topic "t", partitions 0 and 3, require_stable (flexible:
# lengths are unsigned varints of length + 1; every struct ends in its tagged fields)
REQUEST_V7 = (
    b"\x02g"  # group_id: compact string
    + b"\x02"  # topics: compact array of 1
    + b"\x02t"  # name
    + b"\x03" + (0).to_bytes(4, "big") + (3).to_bytes(4, "big")  # partition_indexes
    + b"\x00"  # the topic's tagged fields
    + b"\x01"  # require_stable
    + b"\x00"  # tagged fields
)  # fmt: skip
RESPONSE_V7 = (
    (0).to_bytes(4, "big")  # throttle_time_ms
    + b"\x02" + b"\x02t"  # topics: 1; name
    + b"\x03"  # partitions: 2
    + (0).to_bytes(4, "big") + (7).to_bytes(8, "big") + b"\xff" * 4  # index, offset, epoch
    + b"\x03ab" + (0).to_bytes(2, "big") + b"\x00"  # metadata "ab", error 0, tags
    + (3).to_bytes(4, "big") + b"\xff" * 8 + b"\xff" * 4  # index 3, offset -1, epoch -1
    + b"\x00" + (88).to_bytes(2, "big") + b"\x00"  # metadata null, UNSTABLE_OFFSET_COMMIT
    + b"\x00"  # the topic's tagged fields
    + (0).to_bytes(2, "big")  # error_code
    + b"\x01" + b"\x00" + b"\x01x"  # one tagged field a newer broker may add: skipped
)  # fmt: skip


def test_the_request_is_offset_fetch_v7_with_require_stable_as_kafka_defines_it():
    struct = OffsetFetchStable("g", {"t": [3, 0]}).prepare(KAFKA_4)
    assert type(struct) is OffsetFetchRequest_v7 and struct.API_VERSION == 7
    assert struct.encode() == REQUEST_V7
    header = struct.build_request_header(correlation_id=5, client_id="c")
    assert isinstance(header, RequestHeader_v2)  # flexible: the header's tagged fields
    assert header.encode() == b"\x00\x09\x00\x07" + (5).to_bytes(4, "big") + b"\x00\x01c\x00"
    again = OffsetFetchRequest_v7.decode(REQUEST_V7)
    assert (again.group_id, again.topics, again.require_stable) == ("g", [("t", [0, 3], {})], True)
    unstable = OffsetFetchStable("g", {"t": [0]}, require_stable=False).prepare(KAFKA_4)
    assert OffsetFetchRequest_v7.decode(unstable.encode()).require_stable is False


def test_the_response_decodes_as_kafka_defines_v7_and_encodes_back():
    response = OffsetFetchResponse_v7.decode(RESPONSE_V7)
    assert response.throttle_time_ms == 0 and response.error_code == 0
    assert response.tags == {0: b"x"}
    assert response.topics == [
        ("t", [(0, 7, -1, "ab", 0, {}), (3, -1, -1, None, 88, {})], {}),
    ]
    response.tags = {}
    assert response.encode() == RESPONSE_V7[: -len(b"\x01\x00\x01x")] + b"\x00"


def test_a_broker_without_v7_is_refused_by_prepare():
    with pytest.raises(NotImplementedError):
        OffsetFetchStable("g", {"t": [0]}).prepare({9: (0, 6)})


def answer(*partitions, error=0):
    """An OffsetFetch v7 response for topic t: partitions as (index, offset, error)."""
    parts = [(p, off, -1, "m" if off >= 0 else None, err, {}) for p, off, err in partitions]
    return OffsetFetchResponse_v7(0, [("t", parts, {})] if parts else [], error, {})


class ScriptedAdmin:
    """An admin client whose coordinator answers each OffsetFetch from a script."""

    def __init__(self, *answers, versions=KAFKA_4) -> None:
        self.answers = list(answers)
        self.lookups = 0
        self.sent: list[tuple[int, OffsetFetchRequest_v7]] = []
        self.versions = versions
        self._client = self  # app/aiokafka_internals.py sends through admin._client

    async def find_coordinator(self, group_id: str) -> int:
        self.lookups += 1
        return self.lookups

    async def send(self, node_id, request):
        self.sent.append((node_id, request.prepare(self.versions)))
        return self.answers.pop(0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def read(admin, clock=None, **kwargs):
    clock = clock or Clock()
    return await committed_offsets(
        admin, "g", [T0, T3], clock=clock, sleep=clock.sleep, **kwargs
    )  # fmt: skip


async def test_offsets_pending_in_a_transaction_are_asked_for_again_until_stable():
    admin = ScriptedAdmin(
        answer((0, 5, 0), (3, -1, 88)),
        answer((0, 5, 0), (3, -1, 88)),
        answer((0, 5, 0), (3, 9, 0)),
    )
    clock = Clock()
    got = await read(admin, clock)
    assert got == {T0: OffsetAndMetadata(5, "m"), T3: OffsetAndMetadata(9, "m")}
    first = STABLE_OFFSETS_BACKOFF_S[0]
    assert clock.sleeps == [first, first * 2] and admin.lookups == 1
    assert all(request.require_stable for _, request in admin.sent)


async def test_never_committed_is_none():
    assert await read(ScriptedAdmin(answer((0, -1, 0), (3, -1, 0)))) == {T0: None, T3: None}


async def test_a_loading_or_moved_coordinator_is_asked_again_the_moved_one_looked_up_again():
    admin = ScriptedAdmin(
        answer(error=14),  # COORDINATOR_LOAD_IN_PROGRESS: the group's whole answer
        answer((0, 5, 0), (3, 1, 16)),  # NOT_COORDINATOR
        answer((0, 5, 0), (3, 1, 0)),
    )
    got = await read(admin)
    assert got[T3] == OffsetAndMetadata(1, "m")
    assert [node for node, _ in admin.sent] == [1, 1, 2]  # looked up again after 16


async def test_offsets_that_stay_unstable_raise_a_timeout_naming_why():
    admin = ScriptedAdmin(*[answer((0, 5, 0), (3, -1, 88))] * 100)
    clock = Clock()
    with pytest.raises(KafkaTimeoutError, match=r"not stable after 2s.*UnstableOffsetCommit"):
        await read(admin, clock, timeout_s=2.0)
    assert clock.now == pytest.approx(2.0) and max(clock.sleeps) == STABLE_OFFSETS_BACKOFF_S[1]


async def test_an_error_not_worth_asking_again_for_is_raised_at_once():
    with pytest.raises(GroupAuthorizationFailedError):
        await read(ScriptedAdmin(answer(error=30)))
    with pytest.raises(GroupAuthorizationFailedError):
        await read(ScriptedAdmin(answer((0, 5, 30), (3, 1, 0))))


async def test_an_answer_without_a_partition_asked_for_is_not_read_as_never_committed():
    with pytest.raises(Exception, match="left out"):
        await read(ScriptedAdmin(answer((0, 5, 0))))


async def test_a_broker_without_offset_fetch_v7_is_a_clear_error():
    with pytest.raises(IncompatibleBrokerVersion, match="OffsetFetch v7"):
        await read(ScriptedAdmin(answer((0, 5, 0)), versions={9: (0, 6)}))
