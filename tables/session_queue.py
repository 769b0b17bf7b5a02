"""When the users of one partition need the watermark's attention for their sessions
(tables/aggregator.py): the earliest of a user's events waiting for it, and the deadline
of its open session. A watermark step visits only the users it reaches.

One heap entry per user at most in each heap: the time it is due, which the dict beside
it holds; an entry whose time no longer matches is skipped.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

from tables import sessions as sm

if TYPE_CHECKING:
    from tables.aggregator import Changes, UserState


class SessionQueue:
    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self._pending_heap: list[tuple[int, str]] = []  # (earliest pending event, user)
        self._pending_due: dict[str, int] = {}
        self._expiry_heap: list[tuple[int, str]] = []  # (open session's deadline, user)
        self._expiry_due: dict[str, int] = {}

    def wait(self, user_id: str, t_ms: int) -> None:
        """The user has an event at t_ms waiting for the watermark."""
        due = self._pending_due.get(user_id)
        if due is None or t_ms < due:
            self._pending_due[user_id] = t_ms
            heapq.heappush(self._pending_heap, (t_ms, user_id))

    def _expire_at(self, user_id: str, deadline: int) -> None:
        """A deadline only moves later (a session's last event only grows, and a new
        session starts after the one before), so an earlier entry stays and is pushed
        again when it comes up (`expire`)."""
        if user_id not in self._expiry_due:
            self._expiry_due[user_id] = deadline
            heapq.heappush(self._expiry_heap, (deadline, user_id))

    def track(self, user_id: str, user: UserState) -> None:
        """Whatever of the user's sessions waits: its first pending event (they are
        sorted), its open session's deadline."""
        if user.pending:
            self.wait(user_id, user.pending[0][0])
        if user.session is not None:
            self._expire_at(user_id, user.session.last + self.timeout_ms)

    def release(self, wm: int, users: dict[str, UserState], changes: Changes) -> None:
        """Apply, in event-time order, every waiting event before `wm`."""
        heap, due = self._pending_heap, self._pending_due
        added, released = changes.pending_added, changes.pending_released
        while heap and heap[0][0] < wm:
            t_ms, user_id = heapq.heappop(heap)
            if due.get(user_id) != t_ms:
                continue  # superseded by an earlier entry for this user
            del due[user_id]
            user = users.get(user_id)
            if user is None or not user.pending:
                continue
            user.pending.sort()
            cut = bisect_right(user.pending, (wm,))  # events before wm: (t, ...) < (wm,)
            ready, user.pending = user.pending[:cut], user.pending[cut:]
            for event in ready:
                if added.pop((user_id, event), True):  # written by an earlier commit
                    released.append((user_id, event))
                t_ms, _, _, event_type = event
                user.session, rows = sm.apply(
                    user_id, user.session, t_ms, event_type, self.timeout_ms
                )
                _emit(changes, rows)
            self.track(user_id, user)
            changes.users.add(user_id)

    def expire(self, wm: int, users: dict[str, UserState], changes: Changes) -> None:
        """Time out the open sessions whose deadline `wm` reached."""
        heap, due = self._expiry_heap, self._expiry_due
        while heap and heap[0][0] <= wm:
            _, user_id = heapq.heappop(heap)
            del due[user_id]
            user = users.get(user_id)
            if user is None or user.session is None:
                continue
            deadline = user.session.last + self.timeout_ms
            if deadline > wm:
                self._expire_at(user_id, deadline)  # extended since it was pushed
                continue
            user.session, row = sm.expire(user_id, user.session, wm, self.timeout_ms)
            if row is not None:
                _emit(changes, [row])
                changes.users.add(user_id)


def _emit(changes: Changes, rows: list[Any]) -> None:
    for row in rows:
        changes.sessions[(row.user_id, row.start)] = row
