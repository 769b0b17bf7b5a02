"""The lake on a real S3-compatible server (devstack's versitygw): conditional writes,
writers racing for a version, and every operation of the table as on a folder.

No Kafka here: the table (app/sinks/lake/) against the server's real behaviour and
errors. The workers on several hosts: test_lake_hosts.py.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import multiprocessing
import threading
import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from app.sinks.lake import LakeFenced, LakePosition, LakeTable
from app.sinks.lake.location import resolve
from tests.integration.conftest import TEST_BUCKET
from tests.unit.app.sinks.lake.support import (
    APP,
    DAY,
    T0,
    check_contiguous,
    compete,
    offsets,
    rows_for,
)

WRITERS = 8
ROUNDS = 5


def signed_put(s3, key: str, body: bytes, **headers: str) -> tuple[int, dict]:
    """PUT /TEST_BUCKET/key, signed with AWS Signature V4 (stdlib only)."""
    now = datetime.now(UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    path = f"/{TEST_BUCKET}/{key}"
    payload = hashlib.sha256(body).hexdigest()
    head = {
        "host": f"{s3.host}:{s3.port}",
        "x-amz-content-sha256": payload,
        "x-amz-date": stamp,
        **{k.lower().replace("_", "-"): v for k, v in headers.items()},
    }
    names = sorted(head)
    canonical = "\n".join(
        ["PUT", path, "", "".join(f"{k}:{head[k]}\n" for k in names), ";".join(names), payload]
    )
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key_ = ("AWS4" + s3.secret_key).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key_ = hmac.new(key_, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key_, to_sign.encode(), hashlib.sha256).hexdigest()
    head["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={s3.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    conn = http.client.HTTPConnection(s3.host, s3.port, timeout=10)
    try:
        conn.request("PUT", path, body=body, headers=head)
        reply = conn.getresponse()
        reply.read()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}
    finally:
        conn.close()


def test_the_server_implements_conditional_writes(s3, unique):
    """If-None-Match: * creates only a new key; If-Match replaces only the named version."""
    key = f"{unique}/conditional.json"
    status, first = signed_put(s3, key, b"one", If_None_Match="*")
    assert status == 200, status
    status, _ = signed_put(s3, key, b"two", If_None_Match="*")
    assert status == 412, f"a second create of one key got {status}, not 412"
    status, _ = signed_put(s3, key, b"three", If_Match='"0123456789abcdef0123456789abcdef"')
    assert status == 412, f"a replace naming a wrong ETag got {status}, not 412"
    status, _ = signed_put(s3, key, b"four", If_Match=first["etag"])
    assert status == 200, f"a replace naming the current ETag got {status}"


def test_writers_racing_for_one_version_exactly_one_wins(s3, s3_lake):
    """WRITERS handles of one version append at once, without retries: each round the
    version moves by one, one commit wins and the others get CommitFailedError."""
    lake = resolve(s3_lake["LAKE_URI"], s3_lake)
    uri, options = lake.uri, dict(lake.storage_options)
    data = pa.table({"x": pa.array([1, 2, 3], pa.int64())})
    write_deltalake(uri, data, storage_options=options)
    outcomes = []
    for _ in range(ROUNDS):
        tables = [DeltaTable(uri, storage_options=options) for _ in range(WRITERS)]
        before = tables[0].version()
        assert {t.version() for t in tables} == {before}
        barrier = threading.Barrier(WRITERS)
        results = [""] * WRITERS

        def write(i, tables=tables, barrier=barrier, results=results):
            barrier.wait()
            try:
                write_deltalake(
                    tables[i],
                    data,
                    mode="append",
                    commit_properties=CommitProperties(max_commit_retries=0),
                )
                results[i] = "won"
            except CommitFailedError:
                results[i] = "lost"
            except Exception as exc:  # anything else is a finding
                results[i] = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        after = DeltaTable(uri, storage_options=options).version()
        outcomes.append((before, after, sorted(results)))
        assert sorted(results) == ["lost"] * (WRITERS - 1) + ["won"], outcomes
        assert after == before + 1, outcomes
    table = DeltaTable(uri, storage_options=options)
    assert table.to_pyarrow_table().num_rows == 3 * (ROUNDS + 1)
    print(f"\n{WRITERS} writers per round, (version before, after, outcomes): {outcomes}")


def test_commits_positions_and_fencing_as_on_a_folder(s3, s3_lake):
    location = resolve(s3_lake["LAKE_URI"], s3_lake)
    lake = LakeTable(location, APP)
    assert lake.resume(0) == LakePosition(0, None)
    spanning = rows_for(0, 0, 3, day_of=lambda offset: T0 + (offset - 1) * DAY)
    lake.commit({0: spanning, 1: rows_for(1, 0, 5)}, {0: 777})
    # another host: a table object of its own, the same positions
    other = LakeTable(location, APP)
    assert other.resume(0) == LakePosition(3, 777)
    assert other.resume(1) == LakePosition(5, None)
    with pytest.raises(LakeFenced) as fenced:
        other.commit({1: rows_for(1, 5, 2), 0: rows_for(0, 2, 4)}, {0: 900, 1: 900})
    assert fenced.value.held == {0: 2}
    other.commit({0: rows_for(0, 3, 4)}, {0: 900})
    assert lake.resume(0) == LakePosition(7, 900)
    assert check_contiguous(offsets(lake.open())) == {0: 7, 1: 5}
    dates = {str(d) for d in lake.open().to_pyarrow_table()["event_date"].to_pylist()}
    assert dates == {"2024-10-03", "2024-10-04", "2024-10-05"}


def test_two_processes_racing_for_the_same_partitions_repeat_nothing(s3, s3_lake):
    location = resolve(s3_lake["LAKE_URI"], s3_lake)
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(2) as pool:
        results = [
            pool.apply_async(compete, (location, [0, 1, 2], 12, 40, "today")) for _ in range(2)
        ]
        outcomes = [r.get(timeout=240) for r in results]
    counts = check_contiguous(offsets(LakeTable(location, APP).open()))
    assert counts == {0: 960, 1: 960, 2: 960}, outcomes
    print(f"\nfenced / commit retries per process: {outcomes}")


def test_compaction_while_another_process_commits_then_vacuum(s3, s3_lake):
    """OPTIMIZE on the object store beside a concurrent writer, every version whole;
    vacuum deletes the replaced objects from the bucket once the retention has passed."""
    location = resolve(s3_lake["LAKE_URI"], s3_lake)
    folder = s3.root / location.uri.removeprefix("s3://")  # the bucket's folder on disk
    # No vacuum while the writer runs and every version is read: with a 3-s retention, a
    # writer slower than 3 s (a loaded CI machine) had older versions' files vacuumed
    # before they were checked. The short retention is the last step's alone.
    lake = LakeTable(location, APP, retention_ms=3_600_000, target_file_rows=1_000_000)
    for _ in range(6):
        batch = {p: rows_for(p, lake.resume(p).next_offset, 50, lambda o: T0 - DAY) for p in (0, 1)}
        lake.commit(batch, {p: T0 for p in batch})
    after_t0 = T0 + 2 * DAY
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        writing = pool.apply_async(compete, (location, [0, 1, 2], 15, 30, "mixed"))
        figures = []
        while not writing.ready():
            figures.append(lake.maintain(after_t0))
            time.sleep(0.2)
        writing.get(timeout=5)
    figures.append(lake.maintain(after_t0))
    assert sum(f["days_compacted"] for f in figures) >= 1, figures
    assert figures[-1]["files_per_day_after"] == {"2024-10-03": 1, "2024-10-04": 1}, figures
    latest = lake.open().version()
    for version in range(latest + 1):
        check_contiguous(offsets(DeltaTable(location.uri, version=version, **_opts(location))))
    on_disk = set(folder.glob("event_date=*/*.parquet"))
    in_table = {u.rsplit("/", 1)[1] for u in lake.open().file_uris()}
    assert len(on_disk) > len(in_table)  # replaced files stay for older readers
    time.sleep(3.5)
    vacuuming = LakeTable(location, APP, retention_ms=3_000, target_file_rows=1_000_000)
    final = vacuuming.maintain(after_t0)
    assert final["files_vacuumed"] >= len(on_disk) - len(in_table), final
    assert {p.name for p in folder.glob("event_date=*/*.parquet")} == in_table
    counts = check_contiguous(offsets(lake.open()))
    assert counts == {0: 300 + 450, 1: 300 + 450, 2: 450}, counts


def _opts(location) -> dict:
    return {"storage_options": dict(location.storage_options)}
