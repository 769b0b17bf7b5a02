"""All stateful logic of one user-keyed partition: the windows of tables/windows.py
(counted by tables/window_counts.py) and sessions.

Pure and synchronous: the stateful stage feeds it events and watermark marks, then
takes the changed keys to persist (its changelog and RocksDB store, app/stateful/) and
the rows to upsert (PostgreSQL).
Window counts are applied on arrival (they commute); session events wait until the
merged watermark passes them (tables/session_queue.py) and are then applied in
event-time order.

The state format: `snapshot` names each changed key (`<prefix>|<start>[|<url>]` for a
window's count, WindowSpec.state_key: `pv|<start>|<url>`, `au|<start>`; `u|<user>`;
`e|<user>|<source>|<offset>` for a session event waiting for the watermark; None
deletes it), `checkpoint` is what a batch's commit record holds, and `restore` reads
both back.

It knows nothing of sinks: `Changes` says which rows became final, and keeping those
until PostgreSQL has them is app/stateful/outbox.py's job.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from typing import Any

from tables import sessions as sm
from tables.session_queue import SessionQueue
from tables.watermark import NO_TIME, MergedWatermark
from tables.window_counts import UserCounts, WindowRows, by_event_type, counters
from tables.windows import MINUTE_MS, WINDOWS, WindowSpec, tumbling_start

# Closed windows stay in state this long after their end, so that a restart or a
# rebalance within that time upserts their final value again with the open rows.
RETAIN_CLOSED_MS = 10 * MINUTE_MS

Pending = tuple[int, int, int, str]  # (event_time, source partition, offset, event_type)


@dataclass
class Changes:
    """What one batch changed: rows for PostgreSQL, keys for the state tables."""

    # by window name (WindowSpec.name), every window of the aggregator's
    windows: dict[str, WindowRows] = field(default_factory=lambda: empty_rows(WINDOWS))
    # a session row is final when its status is not ACTIVE
    sessions: dict[tuple[str, int], sm.SessionRow] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    dropped_users: set[str] = field(default_factory=set)
    # session events that started or stopped waiting for the watermark: each is a key
    # of its own in the state, so an event costs two small records, not a rewrite of
    # its user's whole waiting list at every commit; one released in the batch that
    # added it (a catch-up's usual case) leaves `pending_added` and costs none
    pending_added: dict[tuple[str, Pending], None] = field(default_factory=dict)
    pending_released: list[tuple[str, Pending]] = field(default_factory=list)
    clock: bool = False

    def any_change(self) -> bool:
        """Whether there is anything for the state or PostgreSQL."""
        return (
            self.clock
            or any(self.windows.values())
            or bool(self.sessions or self.users or self.dropped_users)
            or bool(self.pending_added or self.pending_released)
        )


def empty_rows(windows: tuple[WindowSpec, ...]) -> dict[str, WindowRows]:
    return {spec.name: WindowRows() for spec in windows}


@dataclass(slots=True)
class UserState:
    minutes: list[int] = field(default_factory=list)
    session: sm.OpenSession | None = None
    pending: list[Pending] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.minutes and self.session is None and not self.pending


class PartitionAggregator:
    def __init__(
        self, timeout_ms: int, sources: int = 1, windows: tuple[WindowSpec, ...] = WINDOWS
    ) -> None:
        self.clock = MergedWatermark(sources=sources)
        self.applied: dict[int, int] = {}  # source partition -> last applied offset
        self.windows = counters(windows)
        self._by_prefix = {c.spec.prefix: c for c in self.windows.values()}
        # resolved once: `add` runs for every event
        self._page_counts = by_event_type(self.windows.values())
        self._user_counts = tuple(c for c in self.windows.values() if isinstance(c, UserCounts))
        # a user's minutes matter while an open window of distinct users can hold them
        self._minutes_kept_ms = max((c.spec.size_ms for c in self._user_counts), default=0)
        self.users: dict[str, UserState] = {}
        self.late_at_merge = 0
        self.session_queue = SessionQueue(timeout_ms)
        self._last_prune = NO_TIME
        self.changes = self._new_changes()

    def _new_changes(self) -> Changes:
        changes = Changes(windows={})
        for name, window in self.windows.items():
            window.changed = changes.windows[name] = WindowRows()
        return changes

    @property
    def watermark(self) -> int:
        return self.clock.value

    # -- input ---------------------------------------------------------------

    def add(
        self,
        source: int,
        offset: int,
        t_ms: int,
        user_id: str,
        event_type: str,
        page_url: str | None,
    ) -> bool:
        """Apply one on-time event; False when it was already applied or is behind the merge."""
        if offset <= self.applied.get(source, -1):
            return False
        self.applied[source] = offset
        self.changes.clock = True
        if t_ms < self.clock.value:
            self.late_at_merge += 1
            return False
        counters = self._page_counts.get(event_type)
        if counters is not None:
            for window in counters:
                window.add(t_ms, page_url)
        user = self.users.get(user_id)
        if user is None:
            user = self.users[user_id] = UserState()
            # pruned earlier in this batch and back again: persist the new state, or the
            # deletion would be written after it (`snapshot`) and a restore lose it
            self.changes.dropped_users.discard(user_id)
        minute = t_ms - t_ms % MINUTE_MS
        if minute not in user.minutes:
            self.changes.users.add(user_id)
            for window in self._user_counts:
                window.add_minute(minute, user.minutes)
            insort(user.minutes, minute)
        event = (t_ms, source, offset, event_type)
        user.pending.append(event)
        self.changes.pending_added[(user_id, event)] = None
        self.session_queue.wait(user_id, t_ms)
        return True

    def mark(self, source: int, watermark: int, idle: bool, sources: int, wall_s: float) -> None:
        before = self.clock.value
        self.clock.update(source, watermark, idle, sources, wall_s)
        self.changes.clock = True
        if self.clock.value > before:
            self._advance(before)

    def tick(self, wall_s: float) -> None:
        """Wall-clock progress while every source is idle (call it often: no mark comes
        while nothing changes). The clock alone is not a change: it is committed with
        the next change, and a restore starts the wall-clock progress again."""
        before = self.clock.value
        if self.clock.recompute(wall_s) > before:
            self._advance(before)

    # -- watermark progress --------------------------------------------------

    def _advance(self, before: int) -> None:
        wm = self.clock.value
        self.session_queue.release(wm, self.users, self.changes)
        self.session_queue.expire(wm, self.users, self.changes)
        for window in self.windows.values():
            window.finalise(before, wm)
        if wm - self._last_prune >= 5 * MINUTE_MS:
            self._prune_users(wm)
            self._last_prune = wm

    def _prune_users(self, wm: int) -> None:
        # A minute matters while some open window [s, s + size) can still contain it.
        horizon = tumbling_start(wm, MINUTE_MS) - self._minutes_kept_ms
        for user_id in list(self.users):
            user = self.users[user_id]
            kept = [m for m in user.minutes if m >= horizon]
            if kept != user.minutes:
                user.minutes = kept
                self.changes.users.add(user_id)
            if user.empty():
                del self.users[user_id]
                self.changes.dropped_users.add(user_id)
                self.changes.users.discard(user_id)

    # -- persistence (the state format: the module's docstring) ----------------

    def snapshot(self, changes: Changes) -> dict[str, Any]:
        """The changed keys of one batch and their new values (None: deleted)."""
        out: dict[str, Any] = {}
        for name, rows in changes.windows.items():
            self.windows[name].snapshot(rows, out)
        for user_id in changes.users:
            user = self.users.get(user_id)
            if user is not None:
                session = [user.session.start, user.session.last] if user.session else None
                out[f"u|{user_id}"] = [user.minutes, session]
        for user_id in changes.dropped_users:
            out[f"u|{user_id}"] = None
        for user_id, (t_ms, source, offset, event_type) in changes.pending_added:
            out[_pending_key(user_id, source, offset)] = [t_ms, event_type]
        for user_id, (_, source, offset, _) in changes.pending_released:
            out[_pending_key(user_id, source, offset)] = None
        return out

    def checkpoint(self, input_offset: int) -> dict[str, Any]:
        """The clocks and positions that go with a snapshot; `input_offset`: the next
        input offset, the first the state does not cover."""
        return {
            "o": input_offset,
            "n": self.clock.sources,
            "v": self.clock.value,
            "m": {s: [m.watermark, m.idle] for s, m in self.clock.marks.items()},
            "a": self.applied,
            "late": self.late_at_merge,
        }

    def restore(
        self, checkpoint: dict[str, Any] | None, values: dict[str, Any], wall_s: float
    ) -> None:
        """Load what `checkpoint` and `snapshot` wrote (values: every live key)."""
        if checkpoint is not None:
            self.clock.sources = checkpoint["n"]
            for source, (watermark, idle) in checkpoint["m"].items():
                self.clock.update(int(source), watermark, idle, checkpoint["n"], wall_s)
            self.clock.value = max(self.clock.value, checkpoint["v"])
            self.applied = {int(k): v for k, v in checkpoint["a"].items()}
            self.late_at_merge = checkpoint.get("late", 0)
            self._last_prune = self.clock.value
        users: dict[str, UserState] = {}
        for name, value in values.items():
            kind, _, rest = name.partition("|")
            if kind in self._by_prefix:
                self._by_prefix[kind].restore(rest, value)
            elif kind == "u":
                minutes, session = value
                user = users.setdefault(rest, UserState())
                user.minutes = minutes
                user.session = sm.OpenSession(*session) if session else None
            elif kind == "e":  # see _pending_key
                user_id, source, offset = rest.rsplit("|", 2)
                t_ms, event_type = value
                user = users.setdefault(user_id, UserState())
                user.pending.append((t_ms, int(source), int(offset), event_type))
            else:
                raise ValueError(f"not a key of the aggregator's state: {name!r}")
        for user_id, user in users.items():
            user.pending.sort()
            self.restore_user(user_id, user)

    def take_changes(self) -> Changes:
        wm = self.clock.value
        for window in self.windows.values():
            window.drop_retired(wm, RETAIN_CLOSED_MS)
        changes, self.changes = self.changes, self._new_changes()
        return changes

    def restore_user(self, user_id: str, state: UserState) -> None:
        self.users[user_id] = state
        self.session_queue.track(user_id, state)  # its pending events sorted by restore

    def open_rows(self) -> Changes:
        """Every window this partition holds and its open sessions, to re-upsert after an
        assignment (closed sessions are the outbox's)."""
        rows = Changes(
            windows={name: WindowRows(rows=dict(c.counts)) for name, c in self.windows.items()}
        )
        for user_id, user in self.users.items():
            if user.session is not None:
                row = sm.SessionRow(user_id, user.session.start, None, sm.ACTIVE)
                rows.sessions[(user_id, row.start)] = row
        return rows


def _pending_key(user_id: str, source: int, offset: int) -> str:
    """A session event waiting for the watermark: its user, source partition and offset
    (a user id may hold `|`: `restore` splits from the right)."""
    return f"e|{user_id}|{source}|{offset}"
