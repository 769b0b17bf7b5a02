"""The local store (app/stateful/state.py): a write is all or nothing, and after one
fails (a full disk) every later write is refused, so the store never holds a later
commit on top of a missing one."""

from __future__ import annotations

from app.stateful.state import LocalState
from tests.unit.app.stateful.driver import FullDisk


def test_a_write_is_applied_whole_with_its_position(tmp_path):
    local = LocalState(tmp_path)
    assert local.position is None
    assert local.write([(b"u|a", b"1"), (b"u|b", b"2")], 5, 40)
    assert local.write([(b"u|a", None)], 6, 41)  # None deletes
    assert dict(local.items()) == {b"u|b": b"2"}
    assert (local.position.changelog_next, local.position.input_next) == (6, 41)
    local.close()
    again = LocalState(tmp_path)  # and it is on disk
    assert dict(again.items()) == {b"u|b": b"2"} and again.position.changelog_next == 6
    again.close()


def test_after_a_failed_write_every_later_write_is_refused_and_nothing_applied(tmp_path, caplog):
    local = LocalState(tmp_path)
    assert local.write([(b"u|a", b"1")], 1, 10)
    disk = local._db = FullDisk(local._db)
    assert local.write([(b"u|a", b"2"), (b"u|b", b"1")], 2, 11) is False
    assert local.broken
    assert "cannot write the local state" in caplog.text
    disk.full = False  # space again: still refused, it would skip the failed commit
    assert local.write([(b"u|c", b"1")], 3, 12) is False
    assert dict(local.items()) == {b"u|a": b"1"}
    assert (local.position.changelog_next, local.position.input_next) == (1, 10)
    local._db = disk.db
    local.close()
    # opened again (the partition's next assignment), it is writable and restores from 1
    again = LocalState(tmp_path)
    assert not again.broken and again.position.changelog_next == 1
    assert again.write([(b"u|a", b"2")], 2, 11)
    again.close()


def test_wipe_starts_empty(tmp_path):
    local = LocalState(tmp_path / "p0")
    local.write([(b"u|a", b"1")], 1, 10)
    fresh = local.wipe()
    assert fresh.position is None and dict(fresh.items()) == {}
    fresh.close()
