"""The lake's own figures on a synthetic backlog, without Kafka: what a Delta commit costs.

`figures(work_dir, events)` (what the main benchmark calls; about 20 s for 200,000
events on 2 cores) measures, in folders under `work_dir`:

- add_us_per_event: LakeRows.add alone (the per-event hot path), best of 3 over all
  events with the garbage collector on, loop included;
- write_us_per_event: LakeRows.add plus LakeTable.commit, per event, for a backlog of
  `partitions` source partitions over `days` UTC dates in commits of `commit_rows`;
- commit_ms_median: one such commit's latency (Arrow conversion, Parquet, Delta log);
- files_per_day_before / files_per_day_after: files per day of the backlog before and
  after maintain() once every day is closed;
- duckdb_day_ms_uncompacted / duckdb_day_ms_compacted: a DuckDB aggregate over one day
  through the table's Arrow dataset, before and after that maintain();
- open_day: one open day fed by `open_commits` small commits, maintain() after every
  `maintain_every` commits: the day's most files at any moment, its files after each
  maintain, and the bytes compaction rewrote per byte of the day.

`python -m bench.lake [events]` prints them as JSON.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from app.events import Event
from app.sinks.lake import LakeRows, LakeTable
from app.sinks.lake.maintenance import files_per_day

DAY_MS = 86_400_000
FIRST_DAY_MS = 20_000 * DAY_MS
QUERY = (
    "SELECT event_type, count(*), count(DISTINCT user_id) FROM lake "
    "WHERE event_date = DATE '{day}' GROUP BY 1"
)


def synthetic_events(count: int, days: int) -> list[Event]:
    step = max(1, days * DAY_MS // count)
    kinds = ("page_view", "click", "session_start", "session_end")
    events = []
    for n in range(count):
        t = FIRST_DAY_MS + n * step
        fields = {"event_time": t, "user_id": f"user-{n % 5000}", "event_type": kinds[n % 4]}
        fields |= {"page_url": f"/p/{n % 300}", "event_id": f"e-{n}"}
        if n % 10 == 0:
            fields["campaign"] = "autumn"
        events.append(Event(t, fields["user_id"], kinds[n % 4], fields["page_url"], fields))
    return events


def add_us_per_event(backlog: list[Event], partitions: int, repeat: int = 3) -> float:
    """LakeRows.add as the reader calls it (a bound method in a loop), gc on."""
    items = [(n % partitions, n // partitions, e, e.event_time) for n, e in enumerate(backlog)]
    best = float("inf")
    for _ in range(repeat):
        rows = LakeRows()
        add = rows.add
        gc.collect()
        began = time.perf_counter()
        for partition, offset, event, now_ms in items:
            add(partition, offset, event, now_ms, False)
        best = min(best, time.perf_counter() - began)
        del rows
    return round(best / len(items) * 1e6, 3)


def query_ms(lake: LakeTable, day: str, repeat: int = 5) -> float:
    dataset = lake.open().to_pyarrow_dataset()
    timings = []
    with duckdb.connect() as con:
        con.register("lake", dataset)
        for _ in range(repeat):
            started = time.perf_counter()
            con.execute(QUERY.format(day=day)).fetchall()
            timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 2)


def backlog_figures(
    lake_dir: Path, backlog: list[Event], partitions: int, commit_rows: int, days: int
) -> dict:
    lake = LakeTable(lake_dir, "bench")
    rows, offsets, clocks = LakeRows(), [0] * partitions, {}
    add_s, commit_s = 0.0, []
    for start in range(0, len(backlog), commit_rows):
        began = time.perf_counter()
        for n, event in enumerate(backlog[start : start + commit_rows], start):
            partition = n % partitions
            rows.add(partition, offsets[partition], event, event.event_time, False)
            offsets[partition] += 1
            clocks[partition] = event.event_time
        add_s += time.perf_counter() - began
        began = time.perf_counter()  # the conversion to Arrow (take seals) and the write
        lake.commit(rows.take(), clocks)
        commit_s.append(time.perf_counter() - began)
    table = lake.open()
    day = str(table.to_pyarrow_table(columns=["event_date"])["event_date"][0])
    uncompacted = query_ms(lake, day)
    began = time.perf_counter()
    maintained = lake.maintain(FIRST_DAY_MS + (days + 1) * DAY_MS)
    maintain_s = time.perf_counter() - began
    return {
        "write_us_per_event": round((add_s + sum(commit_s)) / len(backlog) * 1e6, 2),
        "commit_ms_median": round(statistics.median(commit_s) * 1000, 1),
        "commits": len(commit_s),
        "files_per_day_before": maintained["files_per_day_before"],
        "files_per_day_after": maintained["files_per_day_after"],
        "maintain_s": round(maintain_s, 2),
        "duckdb_day": day,
        "duckdb_day_ms_uncompacted": uncompacted,
        "duckdb_day_ms_compacted": query_ms(lake, day),
    }


def open_day_figures(
    lake_dir: Path, partitions: int, commits: int, commit_rows: int, maintain_every: int
) -> dict:
    """Commits into one open day (each adds a file to it), maintain() every few."""
    lake = LakeTable(lake_dir, "bench-open")
    day = "2024-10-04"
    now_ms = FIRST_DAY_MS + DAY_MS // 2  # the day stays open throughout
    backlog = synthetic_events(commits * commit_rows, 0)  # all at FIRST_DAY_MS, one day
    offsets = [0] * partitions
    most, after_maintain, rewritten, maintain_s = 0, [], 0, []
    for commit in range(commits):
        rows = LakeRows()
        for n in range(commit * commit_rows, (commit + 1) * commit_rows):
            partition = n % partitions
            rows.add(partition, offsets[partition], backlog[n], now_ms, False)
            offsets[partition] += 1
        lake.commit(rows.take(), {})
        most = max(most, files_per_day(lake.open())[0][day])
        if (commit + 1) % maintain_every == 0:
            began = time.perf_counter()
            maintained = lake.maintain(now_ms)
            maintain_s.append(time.perf_counter() - began)
            rewritten += maintained["bytes_rewritten"]
            after_maintain.append(maintained["files_per_day_after"][day])
    day_bytes = files_per_day(lake.open())[1][day]
    return {
        "commits": commits,
        "commit_rows": commit_rows,
        "maintain_every_commits": maintain_every,
        "most_files": most,
        "files_after_each_maintain": after_maintain,
        "files_without_compaction": commits,
        "rewritten_bytes_per_byte": round(rewritten / day_bytes, 2),
        "maintain_ms_median": round(statistics.median(maintain_s) * 1000, 1),
    }


def figures(
    work_dir: Path,
    events: int = 200_000,
    partitions: int = 4,
    commit_rows: int = 5_000,
    days: int = 3,
    open_commits: int = 120,
    maintain_every: int = 10,
) -> dict:
    """The lake's figures, written under `work_dir` (see the module's docstring)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    backlog = synthetic_events(events, days)
    out = {"events": events, "partitions": partitions, "commit_rows": commit_rows}
    out["add_us_per_event"] = add_us_per_event(backlog, partitions)
    out |= backlog_figures(work_dir / "lake-backlog", backlog, partitions, commit_rows, days)
    out["open_day"] = open_day_figures(
        work_dir / "lake-open-day", partitions, open_commits, 400, maintain_every
    )
    return out


def delta_figures(events: int = 200_000, **options) -> dict:
    """figures() in a scratch folder that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="lake-bench-") as scratch:
        return figures(Path(scratch), events, **options)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    started = time.perf_counter()
    result = delta_figures(count)
    result["bench_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
