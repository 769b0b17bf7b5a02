"""Writer tokens: a replay skips the changelog records of a writer that had lost its
partition, so records a frozen worker had in flight cannot move its successor's
state back."""

from __future__ import annotations

from types import SimpleNamespace

from app.stateful.fenced_store import (
    WRITER_HEADER,
    current_writer_records,
    decode_token,
    encode_token,
    token_of,
)
from app.stateful.store import BatchStore
from tests.unit.app.stateful.support import Event, RecordingTable


def record(partition: int, token: tuple[int, int] | None, name: str = "k"):
    headers = None if token is None else [(WRITER_HEADER, encode_token(token))]
    return SimpleNamespace(message=SimpleNamespace(partition=partition, headers=headers, key=name))


def test_tokens_round_trip_and_compare_by_position_then_generation():
    assert decode_token(encode_token((120, 7))) == (120, 7)
    assert token_of([("other", b"x"), (WRITER_HEADER, b"5.2")]) == (5, 2)
    assert token_of({WRITER_HEADER: b"5.2"}) == (5, 2)
    assert token_of(None) is None and decode_token(None) is None
    assert (10, 1) < (10, 2) < (11, 1)


def test_records_of_an_older_writer_after_a_newer_ones_are_skipped():
    events = [
        record(0, (0, 1), "a-first"),
        record(0, (40, 2), "b-first"),
        record(0, (0, 1), "a-late"),  # in flight while A was frozen
        record(1, (0, 1), "other-partition"),
        record(0, None, "untagged"),
        record(0, (40, 2), "b-next"),
    ]
    seen: dict = {}
    kept, skipped = current_writer_records(events, lambda partition: None, seen)
    assert [e.message.key for e in kept] == [
        "a-first",
        "b-first",
        "other-partition",
        "untagged",
        "b-next",
    ]
    assert skipped == 1
    assert seen == {0: (40, 2), 1: (0, 1)}


def test_a_replay_that_starts_part_way_keeps_the_newest_token_it_had_seen():
    kept, skipped = current_writer_records(
        [record(0, (0, 1), "a-late"), record(0, (40, 2), "b")], lambda p: (40, 2), {}
    )
    assert [e.message.key for e in kept] == ["b"] and skipped == 1


def filtered_replay(table: RecordingTable) -> RecordingTable:
    """What a replay through the fenced store leaves of `table`'s changelog."""
    events = [
        SimpleNamespace(message=SimpleNamespace(partition=0, headers=h, key=k, value=v))
        for (k, v), h in zip(table.log, table.headers, strict=True)
    ]
    kept, _ = current_writer_records(events, lambda p: None, {})
    out = RecordingTable()
    for event in kept:
        key, value = event.message.key, event.message.value
        if value is None:
            out.pop(key, None)
        else:
            dict.__setitem__(out, key, value)
    return out


def test_a_frozen_writers_late_batch_does_not_move_its_successors_state_back():
    a_table = RecordingTable()
    a = BatchStore(a_table)
    a.load(0)
    a.own(0, generation=1)
    a.write(0, Event(), {"u1": 1, "u2": 1}, {"o": 10})

    # B takes over from what the changelog holds, and writes on under a newer token
    changelog = RecordingTable()
    changelog.log, changelog.headers = list(a_table.log), list(a_table.headers)
    b_table = filtered_replay(changelog)
    b = BatchStore(b_table)
    assert b.load(0) == ({"o": 10}, {"u1": 1, "u2": 1})
    b.own(0, generation=2)
    assert b.own(0, generation=2) == (0, 2)  # no persisted offset in the stand-in
    b_start = len(b_table.log)
    b.write(0, Event(), {"u1": 5, "u2": 5}, {"o": 30})

    # A wakes: its batch, written before B took over, lands after B's records
    a_late_start = len(a_table.log)
    a.write(0, Event(), {"u1": 2}, {"o": 20})
    changelog.log += b_table.log[b_start:] + a_table.log[a_late_start:]
    changelog.headers += b_table.headers[b_start:] + a_table.headers[a_late_start:]

    assert BatchStore(filtered_replay(changelog)).load(0) == ({"o": 30}, {"u1": 5, "u2": 5})
    unfiltered = RecordingTable()
    for key, value in changelog.log:
        dict.__setitem__(unfiltered, key, value)
    assert BatchStore(unfiltered).load(0) != ({"o": 30}, {"u1": 5, "u2": 5})  # what it fixes


def test_a_frozen_writer_given_its_partition_back_drops_its_own_late_batch():
    """Its local database holds the batch it wrote before it froze; the successor's
    records replay over it, but keys only that batch wrote stay, and must not count."""
    a_table = RecordingTable()
    a = BatchStore(a_table)
    a.load(0)
    a.own(0, generation=1)
    a.write(0, Event(), {"u1": 1, "u2": 1}, {"o": 10})
    landed = len(a_table.log)

    b_table = RecordingTable()
    for key, value in a_table.log:
        dict.__setitem__(b_table, key, value)
    b = BatchStore(b_table)
    b.load(0)
    b.own(0, generation=2)
    b.write(0, Event(), {"u1": 5}, {"o": 30})

    a.write(0, Event(), {"u2": 9}, {"o": 20})  # frozen before it was sent
    late = list(zip(a_table.log[landed:], a_table.headers[landed:], strict=True))
    b_records = list(zip(b_table.log, b_table.headers, strict=True))
    events = [
        SimpleNamespace(message=SimpleNamespace(partition=0, headers=h, key=k, value=v))
        for (k, v), h in b_records + late
    ]
    kept, skipped = current_writer_records(events, lambda p: None, {})
    assert skipped == len(late)
    for event in kept:  # the replay onto A's own database
        dict.__setitem__(a_table, event.message.key, event.message.value)

    again = BatchStore(a_table)
    assert again.load(0) == ({"o": 30}, {"u1": 5, "u2": 1})
