"""BatchStore: a crash after any prefix of a batch's writes loads as the last whole batch."""

from __future__ import annotations

import random

import pytest

from app.batch_store import BatchStore


class RecordingTable(dict):
    """A dict standing in for a Faust table; remembers every write in order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[bytes, bytes | None]] = []

    def __setitem__(self, key, value) -> None:
        self.log.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self.log.append((key, None))
        super().__delitem__(key)


class Event:
    """Only needs to be weak-referenceable."""


def replay(log) -> RecordingTable:
    table = RecordingTable()
    for key, value in log:
        if value is None:
            table.pop(key, None)
        else:
            dict.__setitem__(table, key, value)
    return table


def test_every_prefix_of_the_writes_loads_as_a_whole_batch():
    rng = random.Random(3)
    table = RecordingTable()
    store = BatchStore(table)
    store.load(0)
    states = [({}, None)]  # state and commit after each whole batch
    state: dict = {}
    for batch in range(1, 40):
        changes = {}
        for _ in range(rng.randint(1, 6)):
            name = f"k{rng.randrange(8)}"
            changes[name] = None if rng.random() < 0.25 else rng.randrange(1000)
        store.write(0, Event(), changes, {"o": batch})
        for name, value in changes.items():
            if value is None:
                state.pop(name, None)
            else:
                state[name] = value
        states.append((dict(state), {"o": batch}))

    commits_seen = 0
    for cut in range(len(table.log) + 1):
        prefix = table.log[:cut]
        commits_seen = sum(1 for key, _ in prefix if key.endswith(b"~commit"))
        loaded_commit, loaded = BatchStore(replay(prefix)).load(0)
        want_state, want_commit = states[commits_seen]
        assert (loaded, loaded_commit) == (want_state, want_commit), f"cut at {cut}"


@pytest.mark.parametrize("crash_twice", [False, True])
def test_writing_on_after_a_half_batch_repairs_its_leftovers(crash_twice):
    table = RecordingTable()
    store = BatchStore(table)
    store.load(0)
    store.write(0, Event(), {"a": 1, "b": 1}, {"o": 1})
    whole = len(table.log)
    store.write(0, Event(), {"a": 2, "b": 2, "c": 2}, {"o": 2})
    half = replay(table.log[: whole + 2])  # a=2 and b=2 written, no commit

    again = BatchStore(half)
    assert again.load(0) == ({"o": 1}, {"a": 1, "b": 1})
    if crash_twice:  # the retry of batch 2 writes only "c" and dies before its commit
        again.write(0, Event(), {"c": 3}, {"o": 2})
        retry_without_commit = half.log[:-1]
        half = replay([*table.log[: whole + 2], *retry_without_commit])
        again = BatchStore(half)
        assert again.load(0) == ({"o": 1}, {"a": 1, "b": 1})
    again.write(0, Event(), {"c": 3}, {"o": 2})
    assert BatchStore(half).load(0) == ({"o": 2}, {"a": 1, "b": 1, "c": 3})
