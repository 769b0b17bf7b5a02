"""One window's counts in one user-keyed partition (tables/windows.py says which windows).

A row's key is (start, page url) for a count per page, start for distinct users. Each
counter records what it changed in its `WindowRows`, the aggregator's current batch.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tables.windows import WindowSpec, hopping_starts, new_window_starts_for_minute


@dataclass
class WindowRows:
    """What a batch changed in one window: rows for PostgreSQL, keys for the state."""

    rows: dict[Any, int] = field(default_factory=dict)  # key -> its count now
    final: set = field(default_factory=set)  # keys whose row is final: the watermark passed
    dropped: set = field(default_factory=set)  # keys the state no longer holds

    def __bool__(self) -> bool:
        return bool(self.rows or self.dropped)


class WindowCounts:
    __slots__ = ("_keys", "_starts", "changed", "counts", "spec")

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.counts: dict[Any, int] = {}
        # window starts, sorted, and the keys counted in each: a watermark step visits
        # only the windows it closes, not every window held
        self._starts: list[int] = []
        self._keys: dict[int, list[Any]] = {}
        self.changed = WindowRows()

    def _count(self, start: int, key: Any) -> None:
        count = self.counts.get(key)
        if count is None:
            count = 0
            self._index(start, key)
        self.counts[key] = count = count + 1
        self.changed.rows[key] = count

    def _index(self, start: int, key: Any) -> None:
        keys = self._keys.get(start)
        if keys is None:
            keys = self._keys[start] = []
            insort(self._starts, start)
        keys.append(key)

    def finalise(self, before: int, wm: int) -> None:
        """The windows whose end the watermark passed in this step: (before, wm]."""
        size, starts, changed = self.spec.size_ms, self._starts, self.changed
        first = bisect_right(starts, before - size)
        for start in starts[first : bisect_right(starts, wm - size)]:
            for key in self._keys[start]:
                changed.rows[key] = self.counts[key]  # its final value
                changed.final.add(key)

    def drop_retired(self, wm: int, retain_ms: int) -> None:
        """Forget closed windows once kept `retain_ms` past their end."""
        horizon = wm - self.spec.size_ms - retain_ms
        starts = self._starts
        while starts and starts[0] <= horizon:
            for key in self._keys.pop(starts.pop(0)):
                del self.counts[key]
                self.changed.dropped.add(key)

    def snapshot(self, changed: WindowRows, out: dict[str, Any]) -> None:
        """The state keys of what `changed` names, with their values (None: deleted)."""
        counts, name = self.counts, self.spec.state_key
        for key in changed.rows:
            if key in counts:
                out[name(key)] = counts[key]
        for key in changed.dropped:
            out[name(key)] = None

    def restore(self, rest: str, value: int) -> None:
        """One state key (without its prefix) and its value."""
        key = self.spec.parse_key(rest)
        self.counts[key] = value
        self._index(key[0] if self.spec.per_page else key, key)


class PageCounts(WindowCounts):
    """Events of one type per page url."""

    __slots__ = ("add", "size")

    def __init__(self, spec: WindowSpec) -> None:
        super().__init__(spec)
        self.size = spec.size_ms
        self.add = self._add_tumbling if spec.size_ms == spec.hop_ms else self._add_hopping

    def _add_tumbling(self, t_ms: int, page_url: str) -> None:
        # `_count` written out: this runs for every event counted
        start = t_ms - t_ms % self.size
        key = (start, page_url)
        counts = self.counts
        count = counts.get(key)
        if count is None:
            count = 0
            self._index(start, key)
        counts[key] = count = count + 1
        self.changed.rows[key] = count

    def _add_hopping(self, t_ms: int, page_url: str) -> None:
        for start in hopping_starts(t_ms, self.size, self.spec.hop_ms):
            self._count(start, (start, page_url))


class UserCounts(WindowCounts):
    """Distinct users, from the minutes each user was active in."""

    __slots__ = ()

    def add_minute(self, minute: int, user_minutes: list[int]) -> None:
        """A user active in `minute` for the first time; `user_minutes`: its others."""
        spec, counts, rows = self.spec, self.counts, self.changed.rows
        for start in new_window_starts_for_minute(minute, user_minutes, spec.size_ms, spec.hop_ms):
            count = counts.get(start)
            if count is None:
                count = 0
                self._index(start, start)
            counts[start] = count = count + 1
            rows[start] = count


def counters(windows: tuple[WindowSpec, ...]) -> dict[str, WindowCounts]:
    """A counter per window, by name; two windows cannot share a name or a prefix."""
    made = {spec.name: PageCounts(spec) if spec.per_page else UserCounts(spec) for spec in windows}
    if len(made) < len(windows) or len({spec.prefix for spec in windows}) < len(windows):
        raise ValueError("two windows share a name or a state key prefix")
    return made


def by_event_type(counters: Iterable[WindowCounts]) -> dict[str, tuple[PageCounts, ...]]:
    """The counters per page of each event type, for the event's type to find its own."""
    grouped: dict[str, list[PageCounts]] = {}
    for window in counters:
        if isinstance(window, PageCounts):
            grouped.setdefault(window.spec.counts, []).append(window)
    return {event_type: tuple(windows) for event_type, windows in grouped.items()}
