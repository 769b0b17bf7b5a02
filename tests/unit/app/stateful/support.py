"""A Faust table stand-in for the stateful stage's unit tests."""

from __future__ import annotations


class Sent:
    """A changelog send that has landed."""

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def exception(self):
        return None

    def add_done_callback(self, callback) -> None:
        callback(self)


class LocalStore:
    """`table.data`: the local store alone, as Faust's RocksDB store."""

    def __init__(self, table: RecordingTable) -> None:
        self.table = table

    def __setitem__(self, key, value) -> None:
        dict.__setitem__(self.table, key, value)

    def __delitem__(self, key) -> None:
        dict.__delitem__(self.table, key)

    def __contains__(self, key) -> bool:
        return dict.__contains__(self.table, key)


class Changelog:
    """`table.changelog_topic`: records every send in the table's log, in order."""

    def __init__(self, table: RecordingTable) -> None:
        self.table = table

    def send_soon(self, *, key, value, partition, headers=None, **options):
        self.table.headers.append(headers)
        return self.table.send_changelog(partition, key, value)


class RecordingTable(dict):
    """A dict standing in for a Faust table; remembers every changelog write in order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[bytes, bytes | None]] = []
        self.headers: list = []
        self.data = LocalStore(self)
        self.changelog_topic = Changelog(self)

    def _on_changelog_sent(self, future) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        self.send_changelog(None, key, value)
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self.send_changelog(None, key, None)
        super().__delitem__(key)

    def send_changelog(self, partition, key, value):
        self.log.append((key, value))
        return self.sent()

    def sent(self):
        return Sent()


class Event:
    """Only needs to be weak-referenceable."""


def replay(log, onto: RecordingTable | None = None) -> RecordingTable:
    """The table `log` leaves behind (None deletes), written onto `onto` or a new one."""
    table = RecordingTable() if onto is None else onto
    for key, value in log:
        if value is None:
            table.pop(key, None)
        else:
            dict.__setitem__(table, key, value)
    return table
