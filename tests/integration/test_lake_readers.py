"""The lake read by deltalake/pyarrow, Polars, DuckDB and Spark, each pruning on event_date.

The table is written through LakeTable (several commits over three UTC dates, one of
them compacted), with no Kafka: what is checked is what the readers make of it.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from datetime import date

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable

from app.events import Event
from app.sinks.lake import LakeRows, LakeTable

DAY = 86_400_000
FIRST = 20_000 * DAY  # 2024-10-04T00:00:00Z
DATES = ["2024-10-04", "2024-10-05", "2024-10-06"]
PICKED = "2024-10-05"
PER_COMMIT = 300
COMMITS = 6
PARTITIONS = 3
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_SPARK = os.environ.get("DELTA_SPARK_PACKAGE", "io.delta:delta-spark_2.13:4.1.0")


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lake")
    lake = LakeTable(path, "readers")
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    for commit in range(COMMITS):
        rows = LakeRows()
        for n in range(PER_COMMIT):
            partition = n % PARTITIONS
            day = (commit + n) % 3
            event_time = FIRST + day * DAY + (n * 997_003) % DAY
            fields = {"event_time": event_time, "user_id": f"u{n % 17}", "event_type": "click"}
            fields |= {"page_url": "/p", "event_id": f"{commit}-{n}", "campaign": "spring"}
            event = Event(event_time, fields["user_id"], "click", "/p", fields)
            rows.add(partition, offsets[partition], event, FIRST + 3 * DAY, n % 11 == 0)
            offsets[partition] += 1
        lake.commit(rows.take(), {p: FIRST + 3 * DAY for p in range(PARTITIONS)})
    figures = lake.maintain(FIRST + DAY + 2 * 3_600_000)  # the first date is closed
    assert figures["files_per_day_after"][DATES[0]] == 1
    return str(path)


def expected_per_date() -> Counter:
    return Counter(DATES[(c + n) % 3] for c in range(COMMITS) for n in range(PER_COMMIT))


def picked_files(lake_dir: str) -> set[str]:
    """Names of the files holding PICKED, as the Delta log says."""
    return names(DeltaTable(lake_dir).file_uris([("event_date", "=", PICKED)]))


def names(paths) -> set[str]:
    return {os.path.basename(p) for p in paths}


def test_deltalake_and_pyarrow(lake_dir):
    table = DeltaTable(lake_dir)
    data = table.to_pyarrow_table()
    assert data.num_rows == COMMITS * PER_COMMIT
    partitions, offsets = data["kafka_partition"].to_pylist(), data["kafka_offset"].to_pylist()
    pairs = Counter(zip(partitions, offsets, strict=True))
    assert max(pairs.values()) == 1
    assert Counter(str(d) for d in data["event_date"].to_pylist()) == expected_per_date()
    assert data.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert set(data["extra"].to_pylist()) == {'{"campaign":"spring"}'}
    # pruning: the partition filter picks only that date's files
    files = picked_files(lake_dir)
    uris = table.file_uris([("event_date", "=", PICKED)])
    assert uris and all(f"event_date={PICKED}" in f for f in uris)
    assert len(files) < len(table.file_uris())
    dataset = table.to_pyarrow_dataset()
    fragments = list(dataset.get_fragments(filter=ds.field("event_date") == date(2024, 10, 5)))
    assert names(f.path for f in fragments) == files
    one_day = table.to_pyarrow_table(partitions=[("event_date", "=", PICKED)])
    assert one_day.num_rows == expected_per_date()[PICKED]


def test_polars(lake_dir):
    frame = pl.read_delta(lake_dir)
    assert frame.height == COMMITS * PER_COMMIT
    assert frame.schema["event_time"] == pl.Datetime("us", "UTC")
    lazy = pl.scan_delta(lake_dir).filter(pl.col("event_date") == date(2024, 10, 5))
    assert lazy.select(pl.len()).collect().item() == expected_per_date()[PICKED]
    # the scan is planned over that date's files only
    plan = lazy.explain()
    shown = names(f for f in DeltaTable(lake_dir).file_uris() if os.path.basename(f) in plan)
    assert shown <= picked_files(lake_dir), plan


def test_duckdb_over_the_arrow_dataset(lake_dir):
    dataset = DeltaTable(lake_dir).to_pyarrow_dataset()
    with duckdb.connect() as con:
        con.register("lake", dataset)
        query = "SELECT CAST(event_date AS VARCHAR), count(*) FROM lake GROUP BY 1"
        per_date = dict(con.execute(query).fetchall())
        assert per_date == dict(expected_per_date())
        (dupes,) = con.execute(
            "SELECT count(*) FROM (SELECT kafka_partition, kafka_offset FROM lake "
            "GROUP BY 1, 2 HAVING count(*) > 1)"
        ).fetchone()
        assert dupes == 0
        query = f"SELECT count(*) FROM lake WHERE event_date = DATE '{PICKED}'"
        assert con.execute(query).fetchone()[0] == expected_per_date()[PICKED]
    # DuckDB hands the filter to the dataset, whose fragments are per file and date
    picked = dataset.get_fragments(filter=ds.field("event_date") == date(2024, 10, 5))
    assert names(f.path for f in picked) == picked_files(lake_dir)


def test_duckdb_delta_extension(lake_dir):
    with duckdb.connect() as con:
        try:
            con.execute("INSTALL delta; LOAD delta")
        except duckdb.Error as exc:
            pytest.skip(f"the duckdb delta extension cannot be installed here: {exc}")
        query = f"SELECT count(*) FROM delta_scan('{lake_dir}') WHERE event_date = '{PICKED}'"
        assert con.execute(query).fetchone()[0] == expected_per_date()[PICKED]


@pytest.mark.slow
def test_spark(lake_dir, tmp_path):
    if shutil.which("java") is None:
        pytest.skip("no java")
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("lake-readers")
        .config("spark.jars.packages", DELTA_SPARK)
        .config("spark.jars.ivy", str(tmp_path / "ivy"))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        frame = spark.read.format("delta").load(lake_dir)
        assert frame.count() == COMMITS * PER_COMMIT
        picked = frame.where(f"event_date = DATE '{PICKED}'")
        assert picked.count() == expected_per_date()[PICKED]
        assert names(picked.inputFiles()) == picked_files(lake_dir)
        dupes = frame.groupBy("kafka_partition", "kafka_offset").count().where("count > 1")
        assert dupes.count() == 0
    finally:
        spark.stop()
