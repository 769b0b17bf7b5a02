"""Committing past the gaps that transaction markers leave in the user-keyed topic.

Faust's own commit bookkeeping (`Consumer._new_offset`) runs on a stand-in holding
just the attributes it reads, fed as the consumer feeds it: a record read, its gap
from the previous record added, the record acknowledged.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from app.stateful.transport import _Consumer

TP0 = TP("t", 0)


def bookkeeping(committed: int) -> SimpleNamespace:
    return SimpleNamespace(
        _committed_offset=defaultdict(lambda: None, {TP0: committed}),
        _gap=defaultdict(IntervalTree),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
    )


def read_and_ack(state, add_gap, offsets: list[int]) -> None:
    previous = None
    for offset in offsets:
        if previous is not None and offset - previous > 1:
            asyncio.run(add_gap(state, TP0, previous + 1, offset))
        state._acked[TP0].append(offset)
        state._acked_index[TP0].add(offset)
        previous = offset


# records 10, 11, then each transaction's marker after its record
OFFSETS = [10, 11, 13, 15, 17, 19]


def test_one_commit_passes_every_marker():
    state = bookkeeping(committed=10)
    read_and_ack(state, _Consumer._add_gap, OFFSETS)
    assert Consumer._new_offset(state, TP0) == 20


def test_faust_alone_stops_at_the_first_marker():
    # why the override exists: the record after a gap is counted twice
    state = bookkeeping(committed=10)
    read_and_ack(state, Consumer._add_gap, OFFSETS)
    assert Consumer._new_offset(state, TP0) < 20
