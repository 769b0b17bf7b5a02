"""A test driver for the stateful stage (as Kafka Streams' TopologyTestDriver is for a
topology): real StatefulStage objects on the in-memory Kafka (tests/unit/fake_kafka.py),
fed what the source stage would send, stepped one poll at a time, with an in-memory
PostgreSQL that applies the sink's upserts and generation claims.

The input is a seeded scenario of tests/integration/scenario.py, judged late per
source partition the way docs/contract.md says, so the rows a run ends with can be
compared with that scenario's independent expectation.
"""

from __future__ import annotations

from pathlib import Path

from aiokafka.partitioner import murmur2

from app.settings import Settings
from app.sinks.pending_rows import PendingRows
from app.stateful.service import StatefulStage
from app.wire import WatermarkMark, encode_events, encode_mark
from tests.integration import scenario
from tests.unit.fake_kafka import FakeKafka

LATENESS = scenario.LATENESS


class MemoryPostgres:
    """What PostgresSink does with what the stage hands it, in memory: per-partition
    partials summed into rows, and each partition claimed by generation."""

    def __init__(self) -> None:
        self.claims: dict[int, int] = {}  # partition -> generation that wrote it last
        self.pv_partials: dict[tuple[int, str, int], int] = {}
        self.au_partials: dict[tuple[int, int], int] = {}
        self.sessions: dict[tuple[str, int], tuple[int | None, str]] = {}

    def rows(self) -> scenario.Expected:
        pv: dict[tuple[int, str], int] = {}
        for (start, url, _), count in self.pv_partials.items():
            pv[(start, url)] = pv.get((start, url), 0) + count
        au: dict[int, int] = {}
        for (start, _), count in self.au_partials.items():
            au[start] = au.get(start, 0) + count
        return scenario.Expected(pv, au, dict(self.sessions), 0)


class MemorySink:
    """One worker's PostgreSQL sink (the parts of PostgresSink the stage calls)."""

    def __init__(self, db: MemoryPostgres) -> None:
        self.db = db
        self.pending = PendingRows()
        self.confirmed_batches: dict[int, int] = {}
        self.generations: dict[int, int] = {}
        self.refused = 0

    def assign(self, parts: set[int], generation: int) -> None:
        for part in parts:
            self.generations[part] = generation

    def revoke(self, parts: set[int]) -> None:
        self.pending.drop_partitions(parts)
        for part in parts:
            self.confirmed_batches.pop(part, None)
            self.generations.pop(part, None)

    def add(self, part: int, changes, batch: int) -> None:
        self.pending.add(part, changes, batch)

    def confirmed(self, part: int) -> int:
        return self.confirmed_batches.get(part, 0)

    def flush(self) -> None:
        batch, self.pending = self.pending, PendingRows()
        db = self.db
        refused = set()
        for part in batch.batches:
            mine = self.generations.get(part)
            if mine is None or db.claims.get(part, 0) > mine:
                refused.add(part)
            else:
                db.claims[part] = mine
        self.refused += len(refused)
        batch.drop_partitions(refused)
        db.pv_partials.update(batch.windows.get("page_views", {}))
        db.au_partials.update(batch.windows.get("active_users", {}))
        for key, row in batch.sessions.items():
            db.sessions[key] = (row[2], row[4])
        for part, number in batch.batches.items():
            self.confirmed_batches[part] = max(number, self.confirmed_batches.get(part, 0))


class FullDisk:
    """The RocksDB handle, with writes failing while `full`."""

    def __init__(self, db) -> None:
        self.db = db
        self.full = True

    def write(self, batch) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        self.db.write(batch)

    def __getattr__(self, name):
        return getattr(self.db, name)


class Driver:
    def __init__(self, tmp_path: Path, partitions: int = 2, sources: int = 2) -> None:
        self.tmp_path = tmp_path
        self.kafka = FakeKafka()
        self.settings = Settings(
            app_id="t", partitions=partitions, state_dir=str(tmp_path / "unused")
        )
        self.partitions = partitions
        self.sources = sources
        self.kafka.create_topic(self.settings.internal_topic, partitions)
        self.db = MemoryPostgres()
        self._stream_time = dict.fromkeys(range(sources))
        self._offsets = dict.fromkeys(range(sources), 0)

    # -- workers ---------------------------------------------------------------

    async def worker(self, name: str) -> StatefulStage:
        """A started stage with its own state folder (reuse a name to restart it)."""
        settings = Settings(
            app_id="t",
            partitions=self.partitions,
            state_dir=str(self.tmp_path / name),
        )
        stage = StatefulStage(settings, [MemorySink(self.db)], self.kafka)
        await stage.on_start()
        stage.loop_task.cancel()  # the tests step it with poll()
        return stage

    async def assign(self, stage: StatefulStage, partitions: set[int]) -> None:
        await self.kafka.assign(stage.consumer, partitions)

    async def step(self, stage: StatefulStage, polls: int = 3) -> None:
        """Read what there is, commit it, and flush PostgreSQL."""
        for _ in range(polls):
            await stage.poll(commit=False)
        await stage.poll(commit=True)
        stage.sinks[0].flush()

    @staticmethod
    async def crash(stage: StatefulStage) -> None:
        """kill -9: nothing more of it reaches Kafka or disk (its RocksDB is closed only
        so that the next worker of the same folder can open it)."""
        for part in stage.tasks.values():
            part.local.close()
            part.checkpoint.closed = True
        stage.tasks.clear()

    # -- input, as the source stage sends it -----------------------------------

    def send(self, per_source: list[list[scenario.Sent]], start: int, count: int) -> None:
        """Events `start` to `start + count` of each source partition, judged late at
        their source, then each source's watermark mark to every partition."""
        topic = self.settings.internal_topic
        for source, events in enumerate(per_source):
            forward: dict[int, list] = {}
            for e in events[start : start + count]:
                offset = self._offsets[source]
                self._offsets[source] += 1
                stream_time = self._stream_time[source]
                if stream_time is not None and e.t < stream_time - LATENESS:
                    continue
                self._stream_time[source] = e.t if stream_time is None else max(stream_time, e.t)
                target = (murmur2(e.user.encode()) & 0x7FFFFFFF) % self.partitions
                forward.setdefault(target, []).append((source, offset, e.t, e.user, e.type, e.page))
            for target, batch in forward.items():
                self.kafka.produce(topic, target, encode_events(batch))
            stream_time = self._stream_time[source]
            if stream_time is not None:
                mark = encode_mark(
                    WatermarkMark(source, self.sources, stream_time - LATENESS, False)
                )
                for target in range(self.partitions):
                    self.kafka.produce(topic, target, mark)


def scenario_of(seed: int, users: int, sources: int = 2) -> tuple[list, scenario.Expected, int]:
    """A 40-minute keyed scenario: (events per source partition, expected rows, longest
    partition)."""
    per_source, expected, _ = scenario.in_the_past(seed, users, sources, keyed=True)
    return per_source, expected, max(len(s) for s in per_source)


def difference(expected: scenario.Expected, got: scenario.Expected) -> str | None:
    problems = []
    for name in ("page_views", "active_users", "sessions"):
        want, have = getattr(expected, name), getattr(got, name)
        if want != have:
            wrong = {k: (v, have.get(k)) for k, v in want.items() if have.get(k) != v}
            extra = {k: v for k, v in have.items() if k not in want}
            problems.append(
                f"{name}: {len(wrong)} wrong, e.g. {list(wrong.items())[:3]}; {len(extra)} extra"
            )
    return "; ".join(problems) or None
