"""Per-user session state machine (docs/contract.md, Sessions). Pure: no Kafka, no tables.

Events of one user are applied in event-time order once the merged watermark has
passed them, so the result does not depend on how source partitions interleave.
A gap of `timeout_ms` or more since the session's last event times it out.
"""

from __future__ import annotations

from dataclasses import dataclass

SESSION_START = "session_start"
SESSION_END = "session_end"
ACTIVE, ENDED, TIMED_OUT = "active", "ended", "timed_out"


@dataclass(frozen=True)
class SessionRow:
    """One row of `user_sessions`."""

    user_id: str
    start: int
    end: int | None
    status: str

    @property
    def duration_s(self) -> float | None:
        return None if self.end is None else (self.end - self.start) / 1000


@dataclass
class OpenSession:
    start: int
    last: int


def apply(
    user_id: str, session: OpenSession | None, t_ms: int, event_type: str, timeout_ms: int
) -> tuple[OpenSession | None, list[SessionRow]]:
    """Apply one event (in event-time order) and return the open session and changed rows."""
    rows: list[SessionRow] = []
    if session is not None and t_ms - session.last >= timeout_ms:
        rows.append(SessionRow(user_id, session.start, session.last, TIMED_OUT))
        session = None
    if event_type == SESSION_START:
        if session is not None:
            rows.append(SessionRow(user_id, session.start, session.last, TIMED_OUT))
        session = OpenSession(t_ms, t_ms)
        rows.append(SessionRow(user_id, t_ms, None, ACTIVE))
    elif event_type == SESSION_END:
        if session is not None:
            rows.append(SessionRow(user_id, session.start, t_ms, ENDED))
            session = None
    elif session is not None:
        session.last = max(session.last, t_ms)
    return session, rows


def expire(
    user_id: str, session: OpenSession | None, watermark: int, timeout_ms: int
) -> tuple[OpenSession | None, SessionRow | None]:
    """Close the session as timed out once the watermark reaches last event + timeout."""
    if session is not None and watermark >= session.last + timeout_ms:
        return None, SessionRow(user_id, session.start, session.last, TIMED_OUT)
    return session, None
