"""Seeded simulation of users: sessions, page views, clicks; some late, some bad. Pure."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

PAGES = [
    "/home",
    "/products",
    "/products/42",
    "/products/7",
    "/cart",
    "/checkout",
    "/search",
    "/blog",
    "/blog/streaming",
    "/about",
    "/pricing",
    "/docs",
]
BAD_RECORDS = [
    b"not json",
    b"\xff\xfe\x00",
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b'{"user_id": "u1", "event_type": "page_view"}',
    b'{"event_time": "yesterday", "user_id": "u1", "event_type": "click"}',
    b'{"event_time": "2026-01-01T00:00:00Z", "user_id": "u1", "event_type": "buy"}',
]


@dataclass
class Emitted:
    value: dict | bytes
    user_id: str | None
    late: bool = False


@dataclass
class _User:
    user_id: str
    in_session: bool = False
    left: bool = False


class Simulator:
    """Yields events in sending order; `event_time` follows a simulated clock in ms."""

    def __init__(
        self,
        users: int,
        seed: int,
        start_ms: int,
        step_ms: float,
        late_ratio: float = 0.05,
        lateness_ms: int = 180_000,
        bad_ratio: float = 0.0,
        jitter_ms: int = 30_000,
    ) -> None:
        self.rng = random.Random(seed)
        self.users = [_User(f"user_{i:05d}") for i in range(users)]
        self.clock = float(start_ms)
        self.step_ms = step_ms
        self.late_ratio = late_ratio
        self.lateness_ms = lateness_ms
        self.bad_ratio = bad_ratio
        self.jitter_ms = jitter_ms
        self.seq = 0

    def _next_type(self, user: _User) -> str | None:
        r = self.rng.random()
        if user.left:
            # a user who left silently comes back much later
            if r < 0.02:
                user.left = False
                user.in_session = True
                return "session_start"
            return None
        if not user.in_session:
            user.in_session = True
            return "session_start"
        if r < 0.55:
            return "page_view"
        if r < 0.88:
            return "click"
        if r < 0.97:
            user.in_session = False
            return "session_end"
        user.left = True
        user.in_session = False
        return None

    def __iter__(self) -> Iterator[Emitted]:
        while True:
            self.seq += 1
            if self.bad_ratio and self.rng.random() < self.bad_ratio:
                self.clock += self.step_ms
                yield Emitted(self.rng.choice(BAD_RECORDS), None)
                continue
            user = self.rng.choice(self.users)
            event_type = self._next_type(user)
            if event_type is None:
                continue
            # One step per record sent, so event time follows the send rate: a step on
            # silent draws too would run the clock ahead of wall time (and past MAX_FUTURE).
            self.clock += self.step_ms
            t = int(self.clock) - self.rng.randrange(0, self.jitter_ms + 1)
            late = self.rng.random() < self.late_ratio
            if late:
                t = int(self.clock) - self.lateness_ms - self.rng.randrange(0, 60_000)
            event = {
                "event_id": f"e{self.seq:09d}",
                "event_time": t,
                "user_id": user.user_id,
                "event_type": event_type,
            }
            if event_type in ("page_view", "click"):
                event["page_url"] = self.rng.choice(PAGES)
            yield Emitted(event, user.user_id, late)
