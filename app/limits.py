"""What a valid record may hold beyond its JSON shape (docs/contract.md, Limits).

A record is valid only if every output it makes can be written, so the limits come
from the sinks: the strings that become PostgreSQL keys must fit a btree index row
(at most about 2,700 bytes) and hold no U+0000 (PostgreSQL's text cannot), and the
records the source stage sends must fit the topics' `max.message.bytes`, read from
the broker at start (`app.kafka_clients.topic_limits`), not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_USER_ID_BYTES = 256  # a key of user_sessions, and of every enriched record
MAX_PAGE_URL_BYTES = 2_048  # a key of page_view_counts (with an 8-byte window start)
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # message.max.bytes when nobody set it
# A record alone in a batch costs 61 bytes of batch header and at most about 30 of its
# own framing (varints, attributes) beyond its key, value and headers.
RECORD_OVERHEAD_BYTES = 128


@dataclass(frozen=True)
class RecordLimits:
    """The largest key + value + headers (bytes) each output topic of the source stage
    takes: its max.message.bytes less a record batch's overhead."""

    enriched: int
    dead_letter: int
    user_keyed: int

    @classmethod
    def from_topics(cls, max_message_bytes: dict[str, int], enriched, dead_letter, user_keyed):
        """From each topic's max.message.bytes (`max_message_bytes[topic]`)."""

        def usable(topic: str) -> int:
            return max_message_bytes[topic] - RECORD_OVERHEAD_BYTES

        return cls(usable(enriched), usable(dead_letter), usable(user_keyed))

    @classmethod
    def kafka_defaults(cls) -> RecordLimits:
        usable = KAFKA_DEFAULT_MAX_MESSAGE_BYTES - RECORD_OVERHEAD_BYTES
        return cls(usable, usable, usable)

    @property
    def smallest(self) -> int:
        return min(self.enriched, self.dead_letter, self.user_keyed)

    def tightened(self, factor: float = 0.9) -> RecordLimits:
        """Smaller by `factor`: the broker refused a record these limits let through (a
        topic's limit was lowered since, say), so the records are judged again."""
        return RecordLimits(
            int(self.enriched * factor),
            int(self.dead_letter * factor),
            int(self.user_keyed * factor),
        )


def headers_bytes(headers) -> int:
    """What record headers add to a record's size (name, value and their varints)."""
    return sum(len(name) + len(value) + 4 for name, value in headers)
