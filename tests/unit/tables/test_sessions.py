"""Per-user session state machine (docs/contract.md, Sessions)."""

from tables.sessions import ACTIVE, ENDED, TIMED_OUT, OpenSession, SessionRow, apply, expire

MIN = 60_000
TIMEOUT = 15 * MIN
T = 1_769_679_060_000  # 2026-01-29T09:31:00Z
U = "u1"


def test_session_end_with_no_open_session_changes_nothing():
    assert apply(U, None, T, "session_end", TIMEOUT) == (None, [])


def test_page_view_or_click_with_no_open_session_changes_nothing():
    assert apply(U, None, T, "page_view", TIMEOUT) == (None, [])
    assert apply(U, None, T, "click", TIMEOUT) == (None, [])


def test_session_start_opens_an_active_session():
    session, rows = apply(U, None, T, "session_start", TIMEOUT)
    assert session == OpenSession(start=T, last=T)
    assert rows == [SessionRow(U, T, None, ACTIVE)]
    assert rows[0].duration_s is None


def test_session_start_while_open_times_out_the_old_one_at_its_last_event():
    open_ = OpenSession(start=T, last=T + 2 * MIN)
    session, rows = apply(U, open_, T + 5 * MIN, "session_start", TIMEOUT)
    assert session == OpenSession(start=T + 5 * MIN, last=T + 5 * MIN)
    assert rows == [
        SessionRow(U, T, T + 2 * MIN, TIMED_OUT),
        SessionRow(U, T + 5 * MIN, None, ACTIVE),
    ]


def test_page_view_and_click_extend_the_last_event_time():
    session, rows = apply(U, OpenSession(T, T), T + MIN, "page_view", TIMEOUT)
    assert (session, rows) == (OpenSession(T, T + MIN), [])
    session, rows = apply(U, session, T + 3 * MIN, "click", TIMEOUT)
    assert (session, rows) == (OpenSession(T, T + 3 * MIN), [])


def test_session_end_closes_the_session_as_ended_with_its_duration():
    session, rows = apply(U, OpenSession(T, T + MIN), T + 90_500, "session_end", TIMEOUT)
    assert session is None
    assert rows == [SessionRow(U, T, T + 90_500, ENDED)]
    assert rows[0].duration_s == 90.5


def test_gap_of_exactly_the_timeout_times_the_session_out_at_its_last_event():
    session, rows = apply(U, OpenSession(T, T + MIN), T + MIN + TIMEOUT, "click", TIMEOUT)
    assert session is None
    assert rows == [SessionRow(U, T, T + MIN, TIMED_OUT)]
    assert rows[0].duration_s == 60.0


def test_gap_one_ms_shorter_than_the_timeout_extends_the_session():
    session, rows = apply(U, OpenSession(T, T + MIN), T + MIN + TIMEOUT - 1, "click", TIMEOUT)
    assert (session, rows) == (OpenSession(T, T + MIN + TIMEOUT - 1), [])


def test_session_end_after_the_timeout_only_reports_the_time_out():
    session, rows = apply(U, OpenSession(T, T), T + TIMEOUT, "session_end", TIMEOUT)
    assert session is None
    assert rows == [SessionRow(U, T, T, TIMED_OUT)]


def test_session_start_after_the_timeout_times_out_once_and_opens_a_new_one():
    session, rows = apply(U, OpenSession(T, T), T + TIMEOUT, "session_start", TIMEOUT)
    assert session == OpenSession(T + TIMEOUT, T + TIMEOUT)
    assert rows == [SessionRow(U, T, T, TIMED_OUT), SessionRow(U, T + TIMEOUT, None, ACTIVE)]


def test_expire_at_exactly_last_plus_timeout_closes_as_timed_out():
    assert expire(U, OpenSession(T, T + MIN), T + MIN + TIMEOUT, TIMEOUT) == (
        None,
        SessionRow(U, T, T + MIN, TIMED_OUT),
    )


def test_expire_one_ms_before_last_plus_timeout_keeps_the_session():
    open_ = OpenSession(T, T + MIN)
    assert expire(U, open_, T + MIN + TIMEOUT - 1, TIMEOUT) == (open_, None)


def test_expire_without_a_session_does_nothing():
    assert expire(U, None, T + 10 * TIMEOUT, TIMEOUT) == (None, None)
