"""Rows a sink can never write, told from a sink that is away, and set aside one by one.

An availability error (connection refused or lost, a timeout, the server shutting
down) is waited out and the batch retried whole. A data error says this row will be
refused however often it is tried: PostgreSQL's SQLSTATE class 22 (data exception:
U+0000, a value out of range), class 23 (integrity constraint violation) and 54000
(program limit exceeded: an index row too large). A batch that meets one is written
again with each piece under a savepoint, halving the pieces that fail until the rows
that cannot be written stand alone (`write_isolating`): those are set aside with their
reason and the rest commit in the same transaction. The decode-time limits
(app/limits.py) make this rare; this makes it harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg
import orjson

Row = TypeVar("Row")
DATA_ERRORS = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)
SHOWN_CHARS = 500


def is_data_error(exc: BaseException) -> bool:
    return isinstance(exc, DATA_ERRORS)


def as_text(value) -> str:
    """JSON text that PostgreSQL can store (U+0000 escaped), cut to SHOWN_CHARS with the
    SHA-256 of the whole where it is longer."""
    text = orjson.dumps(value, default=str).decode()
    if len(text) <= SHOWN_CHARS:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{text[:SHOWN_CHARS]}… ({len(text):,} chars, sha256 {digest})"


async def write_isolating(
    conn,
    rows: Sequence[Row],
    write: Callable[[Sequence[Row]], Awaitable[None]],
    reject: Callable[[Row, BaseException], Awaitable[None]],
) -> list[Row]:
    """`write(rows)` under a savepoint; where it meets a data error, each half again,
    down to single rows, which go to `reject`. Returns the rows written."""
    if not rows:
        return []
    try:
        async with conn.transaction():  # a savepoint: a failure undoes only this piece
            await write(rows)
        return list(rows)
    except DATA_ERRORS as exc:
        if len(rows) == 1:
            await reject(rows[0], exc)
            return []
    half = len(rows) // 2
    first = await write_isolating(conn, rows[:half], write, reject)
    return first + await write_isolating(conn, rows[half:], write, reject)
