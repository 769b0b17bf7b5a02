"""The table's rows of what things cost: memory, the changelog, the lake and each
mechanism."""

from __future__ import annotations

from bench.table.cells import Row, fmt, met
from bench.targets import TARGETS


def memory_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    pipe = r.get("pipeline", {})
    if pipe:
        users = r.get("backlog", {}).get("distinct_users")
        rows.append((f"peak RSS, {users:,} users", fmt(pipe["rss_peak_mb"], " MB"), "-", "-"))
    mem = r.get("memory")
    if mem:
        rss = mem["rss_peak_mb"]
        rows.append(
            (
                f"peak RSS, {mem['distinct_users']:,} users",
                fmt(rss, " MB"),
                f"<= {TARGETS['rss_100k_mb']} MB at 100k",
                met(rss <= TARGETS["rss_100k_mb"]) if mem["distinct_users"] >= 90_000 else "-",
            )
        )
    return rows


def changelog_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    cl = r.get("changelog")
    if cl:
        key, blob = cl["per_key"], cl["blob_with_snapshots"]
        rows.append(
            (
                f"changelog per commit of {cl['changed_keys_per_commit']:,} changed keys: "
                "per key / one blob + snapshots",
                f"{key['commit_us']:,} / {blob['commit_us']:,} us, "
                f"{key['commit_bytes']:,} / {blob['commit_bytes']:,} bytes",
                "-",
                "-",
            )
        )
        rows.append(
            (
                f"changelog restore of {cl['users']:,} users: per key / one blob + snapshots",
                f"{key['restore_ms']} / {blob['restore_ms']} ms",
                "-",
                "-",
            )
        )
    return rows


def mechanism_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    mech = r.get("mechanisms")
    if mech:
        for name, v in mech["variants"].items():
            rows.append(
                (
                    f"mechanism variant: {name}",
                    f"{fmt(v['events_per_s'], ' ev/s')} (x{v['vs_as_shipped']})",
                    "-",
                    "-",
                )
            )
        for name, v in mech["producer"].items():
            if isinstance(v, dict):
                extra = f", commit {v['commit_ms_median']} ms" if "commit_ms_median" in v else ""
                rows.append(
                    (f"producer: {name}", f"{fmt(v['records_per_s'], ' rec/s')}{extra}", "-", "-")
                )
    return rows


def lake_rows(r: dict) -> list[Row]:
    lake, mech = r.get("lake"), r.get("mechanisms")
    if not lake:
        return []
    rows = [
        (
            f"lake: write cost per event ({lake['events']:,} events, "
            f"commits of {lake['commit_rows']:,} rows)",
            f"{lake['write_us_per_event']:.3g} us (LakeRows.add alone "
            f"{lake['add_us_per_event']:.3g} us); commit median {lake['commit_ms_median']} ms",
            "-",
            "-",
        )
    ]
    before, after = lake.get("files_per_day_before") or {}, lake.get("files_per_day_after") or {}
    if before:
        rows.append(
            (
                f"lake: files per day before / after maintain ({len(before)} days)",
                f"{max(before.values()):,} / {max(after.values(), default=0):,} (most in a day)",
                "-",
                "-",
            )
        )
    rows.append(
        (
            "lake: DuckDB one-day aggregate, uncompacted / compacted",
            f"{lake['duckdb_day_ms_uncompacted']} / {lake['duckdb_day_ms_compacted']} ms",
            "-",
            "-",
        )
    )
    day = lake.get("open_day")
    if day:
        rows.append(
            (
                f"lake: open day, {day['commits']} commits, maintain every "
                f"{day['maintain_every_commits']}",
                f"at most {day['most_files']} files (vs {day['files_without_compaction']}), "
                f"{day['rewritten_bytes_per_byte']}x bytes rewritten",
                "-",
                "-",
            )
        )
    variants = (mech or {}).get("variants", {})
    if "as-shipped" in variants and "no-lake" in variants:
        with_lake = variants["as-shipped"]["events_per_s"]
        without = variants["no-lake"]["events_per_s"]
        rows.append(
            (
                "lake: pipeline with / without the lake",
                f"{fmt(with_lake, ' ev/s')} / {fmt(without, ' ev/s')} "
                f"(lake costs {(1 - with_lake / without) * 100:.0f}%)",
                "-",
                "-",
            )
        )
    return rows
