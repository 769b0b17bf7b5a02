"""Outbox: final rows stay in state until the sink confirms the batch that carried them."""

from __future__ import annotations

from app.stateful.outbox import Outbox, split_outbox
from tables.aggregator import Changes
from tables.sessions import ACTIVE, ENDED, SessionRow
from tests.window_changes import changes

T = 1_769_679_060_000


def final_changes() -> Changes:
    return changes(
        page_views={(T, "/a"): 3, (T + 60_000, "/a"): 1},
        active_users={T: 2},
        sessions={
            ("u1", T): SessionRow("u1", T, T + 2_000, ENDED),
            ("u2", T): SessionRow("u2", T, None, ACTIVE),
        },
        final_page_views={(T, "/a")},
        final_active={T},
    )


def test_only_final_rows_are_held_and_persisted():
    box = Outbox()
    box.hold(final_changes(), batch=1)
    assert box.snapshot() == {
        f"o|pv|{T}|/a": 3,
        f"o|au|{T}": 2,
        f"o|s|u1|{T}": [T + 2_000, ENDED],
    }
    assert box.snapshot() == {}  # each change is written once


def test_rows_go_once_the_batch_that_carried_them_is_confirmed():
    box = Outbox()
    box.hold(final_changes(), batch=1)
    box.snapshot()
    box.release(0)
    assert len(box) == 3 and box.snapshot() == {}  # not confirmed yet: still held
    box.hold(changes(active_users={T + 60_000: 1}, final_active={T + 60_000}), batch=2)
    box.release(1)
    assert len(box) == 1
    assert box.snapshot() == {
        f"o|pv|{T}|/a": None,
        f"o|au|{T}": None,
        f"o|s|u1|{T}": None,
        f"o|au|{T + 60_000}": 1,
    }


def test_a_restored_outbox_sends_every_row_again_and_waits_for_that_batch():
    box = Outbox()
    box.hold(final_changes(), batch=4)
    persisted = {"u|u1": [[], None, []], **box.snapshot()}
    held, rest = split_outbox(persisted)
    assert rest == {"u|u1": [[], None, []]}

    restored = Outbox()
    restored.restore(held)
    assert restored.snapshot() == {}  # already in state
    rows = restored.resend(batch=9)
    assert rows.windows["page_views"].rows == {(T, "/a"): 3}
    assert rows.windows["active_users"].rows == {T: 2}
    assert rows.sessions == {("u1", T): SessionRow("u1", T, T + 2_000, ENDED)}
    restored.release(8)
    assert len(restored) == 3
    restored.release(9)
    assert len(restored) == 0


def test_user_ids_with_the_separator_survive_a_restore():
    box = Outbox()
    box.hold(changes(sessions={("a|b", T): SessionRow("a|b", T, T + 1, ENDED)}), batch=1)
    restored = Outbox()
    restored.restore(box.snapshot())
    assert restored.resend(2).sessions == {("a|b", T): SessionRow("a|b", T, T + 1, ENDED)}


def test_a_row_carried_again_waits_for_the_later_batch():
    box = Outbox()
    box.hold(final_changes(), batch=3)
    box.hold(changes(active_users={T: 2}, final_active={T}), batch=5)  # the same row again
    box.release(4)
    assert len(box) == 1 and box.resend(6).windows["active_users"].rows == {T: 2}
    box.release(6)
    assert len(box) == 0
