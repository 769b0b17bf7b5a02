"""A batch with rows PostgreSQL refuses as data: those rows are set aside one by one, the
rest are written (app/sinks/rejects.py). A fake connection whose savepoints undo the
rows written under them stands in for PostgreSQL; the real one is in
tests/integration/test_postgres_writers.py."""

from __future__ import annotations

import contextlib

import asyncpg
import pytest

from app.sinks.rejects import as_text, is_data_error, write_isolating


class FakeConnection:
    """Rows written under a savepoint that fails are undone, as PostgreSQL does."""

    def __init__(self, refuse) -> None:
        self.refuse = refuse  # row -> exception, or None
        self.rows: list = []
        self.savepoints = 0

    @contextlib.asynccontextmanager
    async def transaction(self):
        self.savepoints += 1
        mark = len(self.rows)
        try:
            yield
        except BaseException:
            del self.rows[mark:]
            raise

    async def write(self, rows) -> None:
        for row in rows:
            error = self.refuse(row)
            if error is not None:
                raise error
            self.rows.append(row)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00"),
        asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds"),
        asyncpg.exceptions.CheckViolationError("violates check constraint"),
        asyncpg.exceptions.NumericValueOutOfRangeError("out of range"),
    ],
)
async def test_each_row_refused_as_data_is_set_aside_and_the_rest_are_written(error):
    bad = {3, 17, 18}
    conn = FakeConnection(lambda row: error if row in bad else None)
    rejected = []

    async def reject(row, exc):
        rejected.append((row, exc))

    written = await write_isolating(conn, list(range(40)), conn.write, reject)
    assert written == conn.rows == [r for r in range(40) if r not in bad]
    assert [r for r, _ in rejected] == [3, 17, 18]
    assert all(exc is error for _, exc in rejected)
    assert conn.savepoints < 40  # halving: far fewer than one savepoint a row


async def test_an_availability_error_is_not_isolated_but_raised():
    """PostgreSQL away: the batch is retried whole later, nothing is set aside."""
    conn = FakeConnection(lambda row: ConnectionResetError("connection lost"))
    rejected = []

    async def reject(row, exc):
        rejected.append(row)

    with pytest.raises(ConnectionResetError):
        await write_isolating(conn, [1, 2, 3], conn.write, reject)
    assert rejected == []


@pytest.mark.parametrize(
    ("error", "data"),
    [
        (asyncpg.exceptions.CharacterNotInRepertoireError(""), True),
        (asyncpg.exceptions.UniqueViolationError(""), True),
        (asyncpg.exceptions.ProgramLimitExceededError(""), True),
        (asyncpg.exceptions.CannotConnectNowError(""), False),
        (asyncpg.exceptions.AdminShutdownError(""), False),
        (asyncpg.exceptions.ConnectionDoesNotExistError(""), False),
        (OSError("connection refused"), False),
        (TimeoutError(), False),
    ],
)
def test_data_errors_are_told_from_availability_errors(error, data):
    assert is_data_error(error) is data


def test_a_rejected_rows_text_can_be_stored_and_is_cut_with_a_digest():
    assert as_text([1, "/nul\x00"]) == '[1,"/nul\\u0000"]'
    long = as_text([1, "x" * 10_000])
    assert len(long) < 700 and "sha256" in long and "10,006 chars" in long
