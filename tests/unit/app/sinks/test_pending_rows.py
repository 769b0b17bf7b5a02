"""Rows waiting for PostgreSQL (app/sinks/pending_rows.py): the newest value of each row
wins, rows of a partition given up are forgotten, and an unwritten batch put back lies
under whatever arrived after it."""

from __future__ import annotations

from app.sinks.pending_rows import PendingRows
from tables.aggregator import Changes
from tables.sessions import ACTIVE, TIMED_OUT, SessionRow
from tests.window_changes import changes as window_changes

W = 1_800_000_000_000


def changes(views: int, active: int, end: int | None = None, status: str = ACTIVE) -> Changes:
    return window_changes(
        page_views={(W, "/a"): views},
        active_users={W: active},
        sessions={("u1", W): SessionRow("u1", W, end, status)},
    )


def test_the_newest_value_of_each_row_is_kept_and_the_newest_batch_remembered():
    rows = PendingRows()
    rows.add(0, changes(1, 1), batch=3)
    rows.add(0, changes(5, 2, W + 9_000, TIMED_OUT), batch=4)
    rows.add(1, changes(7, 1), batch=2)
    rows.add(0, window_changes(page_views={(W, "/b"): 1}), batch=1)  # an older batch number
    assert rows.windows["page_views"] == {(W, "/a", 0): 5, (W, "/a", 1): 7, (W, "/b", 0): 1}
    assert rows.windows["active_users"] == {(W, 0): 2, (W, 1): 1}
    # a session is keyed by user and start: the last add wins, with its partition
    assert rows.sessions == {("u1", W): ("u1", W, None, None, ACTIVE, 1)}
    assert rows.batches == {0: 4, 1: 2}
    assert len(rows) == 3 + 2 + 1


def test_rows_of_partitions_given_up_are_forgotten_and_the_others_kept():
    rows = PendingRows()
    rows.add(0, changes(1, 1), batch=1)
    rows.add(1, window_changes(page_views={(W, "/b"): 2}, active_users={W: 3}), batch=2)
    rows.drop_partitions({0})
    assert rows.windows["page_views"] == {(W, "/b", 1): 2}
    assert rows.windows["active_users"] == {(W, 1): 3}
    assert rows.sessions == {}  # the session was partition 0's
    assert rows.batches == {1: 2}


def test_a_batch_put_back_lies_under_what_arrived_after_it():
    unwritten = PendingRows()
    unwritten.add(0, changes(1, 1), batch=5)
    unwritten.add(0, window_changes(page_views={(W, "/old-only"): 4}), batch=5)
    newer = PendingRows()
    newer.add(0, changes(3, 2, W + 1_000, TIMED_OUT), batch=6)
    newer.add(1, window_changes(active_users={W: 9}), batch=2)
    unwritten.merge_back(newer)
    assert unwritten.windows["page_views"] == {(W, "/a", 0): 3, (W, "/old-only", 0): 4}
    assert unwritten.windows["active_users"] == {(W, 0): 2, (W, 1): 9}
    assert unwritten.sessions == {("u1", W): ("u1", W, W + 1_000, 1.0, TIMED_OUT, 0)}
    assert unwritten.batches == {0: 6, 1: 2}
