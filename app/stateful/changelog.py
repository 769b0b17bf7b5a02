"""The stateful stage's changelog: the durable copy of each user-keyed partition's state.

Topic `<APP_ID>-<store name>-changelog`, compacted, with one partition per user-keyed
partition. Each commit of a partition writes, inside that partition's Kafka
transaction and with its input offset (app/commit/checkpoint.py):

- one record per state key the commit changed, holding the key's new value, or a
  tombstone when the key is gone;
- the `~position` record: the aggregator's clocks and the input offset the state
  covers, so the changelog alone says where the input resumes.

Compaction then keeps each key's newest committed value; the log cleaner drops the
records of aborted transactions (a fenced worker's), so a former owner's late record
can never be the one kept. Restoring reads a partition read_committed from where the
local store stands to its end (app/stateful/restore.py).

One record per changed key rather than one per commit with periodic snapshots, by
measurement (`python -m bench --only changelog`, docs/performance.md): per-key records
cost about 1 µs more per changed key at commit (a tenth of a percent of a core at
2,000 events/s), and a restore reads about ten times faster (it decodes each live
key once, instead of a snapshot and every delta since); compaction does the rest.

Record: key = the state key as UTF-8 (`u|<user>`, `e|<user>|<source>|<offset>` for a
session event waiting for the watermark, `pv|<start>|<url>`, `au|<start>`, `o|...` for
the outbox, `~position`); value = one format byte, then the JSON of the value. A value
of another format is refused with a message that names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from app.errors import PipelineError
from tables.windows import layout_tag

FORMAT = 2  # 2: a session event waiting for the watermark is a key of its own
_TAG = bytes([FORMAT])
POSITION = "~position"


class StateFormatError(PipelineError):
    """A state record written in a format this version cannot read."""


def store_name(partitions: int) -> str:
    """Names the state's layout: a changed format, window or partition count starts a
    new changelog and local store instead of misreading the old ones."""
    return f"stateful-v{FORMAT}-{layout_tag()}-p{partitions}"


def topic_name(app_id: str, partitions: int) -> str:
    return f"{app_id}-{store_name(partitions)}-changelog"


def earlier_state_topics(app_id: str, topics: Iterable[str], current: str) -> list[str]:
    """The topics among `topics` that hold this app's state in another layout: a Faust
    table's (versions before this stage had its own changelog) or another format's."""
    return sorted(
        t
        for t in topics
        if t != current
        and (
            t.startswith(f"{app_id}-merge-state-")
            or (t.startswith(f"{app_id}-stateful-v") and t.endswith("-changelog"))
        )
    )


def encode(value: Any) -> bytes | None:
    """A state value as a changelog record value; None (deleted) as a tombstone."""
    if value is None:
        return None
    return _TAG + orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    if raw[:1] != _TAG:
        raise StateFormatError(
            f"state record of format {raw[0] if raw else 'empty'}; this version reads "
            f"format {FORMAT} (the changelog or local store is another version's)"
        )
    return orjson.loads(raw[1:])


def records(writes: dict[str, Any]) -> list[tuple[bytes, bytes | None]]:
    """(key, value) changelog records of `writes` ({state key: value or None})."""
    return [(name.encode(), encode(value)) for name, value in writes.items()]
