"""SessionQueue: each user is visited once per watermark step it reaches, in time order,
and only when something of it is due."""

from tables.aggregator import Changes, UserState
from tables.session_queue import SessionQueue
from tables.sessions import ACTIVE, TIMED_OUT, OpenSession, SessionRow

MIN = 60_000
T = 1_769_679_060_000
TIMEOUT = 15 * MIN


def test_a_user_waits_once_at_its_earliest_event():
    queue = SessionQueue(TIMEOUT)
    for t in (T + 5, T + 1, T + 9):
        queue.wait("u1", t)
    assert queue._pending_due == {"u1": T + 1}
    assert len(queue._pending_heap) == 2  # T + 9 was not earlier: not pushed


def test_release_applies_the_events_before_the_watermark_and_keeps_the_rest_waiting():
    queue, changes = SessionQueue(TIMEOUT), Changes()
    user = UserState(pending=[(T + MIN, 0, 1, "click"), (T, 0, 0, "session_start")])
    users = {"u1": user}
    queue.wait("u1", T)  # its earliest event
    queue.release(T + 30_000, users, changes)
    assert user.session == OpenSession(T, T)
    assert user.pending == [(T + MIN, 0, 1, "click")]
    assert changes.pending_released == [("u1", (T, 0, 0, "session_start"))]
    assert changes.sessions == {("u1", T): SessionRow("u1", T, None, ACTIVE)}
    assert queue._pending_due == {"u1": T + MIN} and queue._expiry_due == {"u1": T + TIMEOUT}


def test_a_session_extended_since_its_deadline_was_queued_is_not_expired():
    queue, changes = SessionQueue(TIMEOUT), Changes()
    user = UserState(session=OpenSession(T, T))
    queue.track("u1", user)
    user.session = OpenSession(T, T + 5 * MIN)  # a later event was applied
    queue.expire(T + TIMEOUT, {"u1": user}, changes)
    assert user.session is not None and changes.sessions == {}
    assert queue._expiry_due == {"u1": T + 5 * MIN + TIMEOUT}
    queue.expire(T + 5 * MIN + TIMEOUT, {"u1": user}, changes)
    assert user.session is None
    assert changes.sessions == {("u1", T): SessionRow("u1", T, T + 5 * MIN, TIMED_OUT)}
