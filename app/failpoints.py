"""Crash points for the crash test: with `PIPELINE_FAILPOINTS="after-sends=3"` the
worker exits at once, as kill -9 would, the 3rd time it reaches `after-sends`.
Unset (always, outside that test) every point is a dictionary look-up.

Points: `mid-batch` (one partition's batch is in its transaction, the next is not),
`after-sends` (a transaction's records are sent, its offsets and commit are not),
`after-lake-commit` (the lake holds rows whose Kafka transaction is not committed),
`recovering` (a partition has just been positioned after an assignment); in the
stateful stage `stateful-after-sends` (changelog records sent, not committed),
`stateful-after-commit` (committed, the local store not yet written),
`stateful-before-postgres` (the local store written, the rows not yet handed to
PostgreSQL) and `stateful-recovering` (a user-keyed partition restored).
"""

from __future__ import annotations

import os


def _armed(text: str) -> dict[str, int]:
    points = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        points[name] = int(count or 1)
    return points


_ARMED = _armed(os.environ.get("PIPELINE_FAILPOINTS", ""))
_reached: dict[str, int] = {}


def reach(name: str) -> None:
    if name in _ARMED:
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] == _ARMED[name]:
            os._exit(137)
