"""The lake read by deltalake/pyarrow, Polars, DuckDB and Spark, each pruning on event_date,
from a folder and from the object store (devstack's S3 server).

The table is written through LakeTable (several commits over three UTC dates, one of
them compacted), with no Kafka: what is checked is what the readers make of it.
"""

from __future__ import annotations

import os
import shutil
import uuid
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
from app.sinks.lake.location import LakeLocation, resolve
from tests.integration.conftest import TEST_BUCKET

DAY = 86_400_000
FIRST = 20_000 * DAY  # 2024-10-04T00:00:00Z
DATES = ["2024-10-04", "2024-10-05", "2024-10-06"]
PICKED = "2024-10-05"
PER_COMMIT = 300
COMMITS = 6
PARTITIONS = 3
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_SPARK = os.environ.get("DELTA_SPARK_PACKAGE", "io.delta:delta-spark_2.13:4.1.0")
# s3a for Spark: the hadoop-aws of pyspark 4.1.1's Hadoop (3.4.2); it brings the AWS SDK
HADOOP_AWS = os.environ.get("HADOOP_AWS_PACKAGE", "org.apache.hadoop:hadoop-aws:3.4.2")


@pytest.fixture(scope="module", params=["folder", "s3"])
def lake(request, tmp_path_factory) -> LakeLocation:
    """The table in a folder, or on the S3 server (LAKE_URI=s3://... and its options)."""
    if request.param == "folder":
        location = LakeLocation(str(tmp_path_factory.mktemp("lake")))
    else:
        s3 = request.getfixturevalue("s3")
        prefix = f"readers-{uuid.uuid4().hex[:10]}"
        location = resolve(f"s3://{TEST_BUCKET}/{prefix}", s3.environment())
    lake = LakeTable(location, "readers")
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
    return location


def table_of(lake: LakeLocation) -> DeltaTable:
    return DeltaTable(lake.uri, storage_options=options(lake))


def options(lake: LakeLocation) -> dict | None:
    return dict(lake.storage_options) or None


def expected_per_date() -> Counter:
    return Counter(DATES[(c + n) % 3] for c in range(COMMITS) for n in range(PER_COMMIT))


def picked_files(lake: LakeLocation) -> set[str]:
    """Names of the files holding PICKED, as the Delta log says."""
    return names(table_of(lake).file_uris([("event_date", "=", PICKED)]))


def names(paths) -> set[str]:
    return {os.path.basename(p) for p in paths}


def test_deltalake_and_pyarrow(lake):
    table = table_of(lake)
    data = table.to_pyarrow_table()
    assert data.num_rows == COMMITS * PER_COMMIT
    partitions, offsets = data["kafka_partition"].to_pylist(), data["kafka_offset"].to_pylist()
    pairs = Counter(zip(partitions, offsets, strict=True))
    assert max(pairs.values()) == 1
    assert Counter(str(d) for d in data["event_date"].to_pylist()) == expected_per_date()
    assert data.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert set(data["extra"].to_pylist()) == {'{"campaign":"spring"}'}
    # pruning: the partition filter picks only that date's files
    files = picked_files(lake)
    uris = table.file_uris([("event_date", "=", PICKED)])
    assert uris and all(f"event_date={PICKED}" in f for f in uris)
    assert len(files) < len(table.file_uris())
    dataset = table.to_pyarrow_dataset()
    fragments = list(dataset.get_fragments(filter=ds.field("event_date") == date(2024, 10, 5)))
    assert names(f.path for f in fragments) == files
    one_day = table.to_pyarrow_table(partitions=[("event_date", "=", PICKED)])
    assert one_day.num_rows == expected_per_date()[PICKED]


def test_polars(lake):
    frame = pl.read_delta(lake.uri, storage_options=options(lake))
    assert frame.height == COMMITS * PER_COMMIT
    assert frame.schema["event_time"] == pl.Datetime("us", "UTC")
    lazy = pl.scan_delta(lake.uri, storage_options=options(lake))
    lazy = lazy.filter(pl.col("event_date") == date(2024, 10, 5))
    assert lazy.select(pl.len()).collect().item() == expected_per_date()[PICKED]
    # the scan is planned over that date's files only
    plan = lazy.explain()
    shown = names(f for f in table_of(lake).file_uris() if os.path.basename(f) in plan)
    assert shown <= picked_files(lake), plan


def test_duckdb_over_the_arrow_dataset(lake):
    dataset = table_of(lake).to_pyarrow_dataset()
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
    assert names(f.path for f in picked) == picked_files(lake)


def test_duckdb_delta_extension(lake):
    with duckdb.connect() as con:
        try:
            con.execute("INSTALL delta; LOAD delta")
        except duckdb.Error as exc:
            pytest.skip(f"the duckdb delta extension cannot be installed here: {exc}")
        if not lake.local:
            pytest.skip("delta_scan over s3:// (an S3 secret in DuckDB) is not checked here")
        query = f"SELECT count(*) FROM delta_scan('{lake.uri}') WHERE event_date = '{PICKED}'"
        assert con.execute(query).fetchone()[0] == expected_per_date()[PICKED]


@pytest.mark.slow
def test_spark(lake):
    """Spark reads the folder as `path`, and the bucket through s3a (hadoop-aws)."""
    if shutil.which("java") is None:
        pytest.skip("no java")
    from pyspark.sql import SparkSession

    # one JVM per test process: its packages serve both variants (the first one starts it)
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("lake-readers")
        .config("spark.jars.packages", f"{DELTA_SPARK},{HADOOP_AWS}")
        # Spark's own cache (~/.ivy2), not the checkout's: hadoop-aws brings the AWS SDK
        # bundle (about 600 MB), downloaded once per machine rather than once per clone
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    path = lake.uri
    if not lake.local:  # the same options, in s3a's words
        options = lake.storage_options
        hadoop = spark.sparkContext._jsc.hadoopConfiguration()
        for key, value in {
            "fs.s3a.endpoint": options["AWS_ENDPOINT_URL"],
            "fs.s3a.endpoint.region": options["AWS_REGION"],
            "fs.s3a.access.key": options["AWS_ACCESS_KEY_ID"],
            "fs.s3a.secret.key": options["AWS_SECRET_ACCESS_KEY"],
            "fs.s3a.path.style.access": "true",
            "fs.s3a.connection.ssl.enabled": "false",
        }.items():
            hadoop.set(key, value)
        path = "s3a://" + lake.uri.removeprefix("s3://")
    try:
        frame = spark.read.format("delta").load(path)
        assert frame.count() == COMMITS * PER_COMMIT
        picked = frame.where(f"event_date = DATE '{PICKED}'")
        assert picked.count() == expected_per_date()[PICKED]
        assert names(picked.inputFiles()) == picked_files(lake)
        dupes = frame.groupBy("kafka_partition", "kafka_offset").count().where("count > 1")
        assert dupes.count() == 0
    finally:
        spark.stop()
