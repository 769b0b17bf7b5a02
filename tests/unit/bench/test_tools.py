"""The bench's helpers that need no broker: CPU time from /proc, py-spy's collapsed
stacks, the mechanism variants."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

from app.settings import Settings
from bench.latency import bucket_percentiles
from bench.profile import top_functions
from bench.variant import VARIANTS, NoLake
from bench.worker import process_cpu_seconds


def test_cpu_seconds_count_the_process_and_its_children():
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\n"
            "while time.process_time() - t < 0.5: pass\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while (process_cpu_seconds(child.pid) or 0) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.1)
        own = process_cpu_seconds(child.pid)
        assert own >= 0.4
        # the child counts towards this process's figure while it runs
        assert process_cpu_seconds(os.getpid()) >= own
    finally:
        child.kill()
        child.wait()
    assert process_cpu_seconds(child.pid) is None  # gone


def test_top_functions_by_own_and_total_time():
    collapsed = "\n".join(
        [
            "main (/x/app/run.py:10);step (/x/app/step.py:5);"
            "loads (/v/site-packages/orjson.py:1) 60",
            "main (/x/app/run.py:10);step (/x/app/step.py:7) 30",
            "main (/x/app/run.py:12) 10",
            "",
        ]
    )
    top = top_functions(collapsed, 2)
    assert top["samples"] == 100
    assert [f["function"] for f in top["own"]] == ["loads (orjson.py)", "step (/x/app/step.py)"]
    assert top["own"][0]["share"] == 0.6
    assert top["total"][0] == {"function": "main (/x/app/run.py)", "samples": 100, "share": 1.0}
    assert top_functions("")["own"] == []


def test_variants_are_settings_and_build_arguments():
    settings = Settings()
    assert set(VARIANTS) == {"as-shipped", "no-lake", "commit-every-1s"}
    assert VARIANTS["as-shipped"](settings) == (settings, {})
    changed, kwargs = VARIANTS["commit-every-1s"](settings)
    assert changed == dataclasses.replace(settings, commit_interval_ms=1000) and kwargs == {}
    same, kwargs = VARIANTS["no-lake"](settings)
    assert same is settings and isinstance(kwargs["lake"], NoLake)
    lake = kwargs["lake"]
    assert lake.resume(0).next_offset >= 2**62 and lake.maintain(0) == {}
    assert lake.commit({}, {}) is None


def test_bucket_percentiles_of_what_was_counted_between_two_snapshots():
    before = {"buckets": [[0.001, 10], [0.01, 10], [0.1, 10], ["+Inf", 10]]}
    after = {"buckets": [[0.001, 108], [0.01, 109], [0.1, 110], ["+Inf", 110]]}
    # 100 counted: 98 within 1 ms, 1 within 10 ms, 1 within 100 ms
    assert bucket_percentiles(before, after) == {
        "count": 100,
        "p50_at_most_ms": 1.0,
        "p99_at_most_ms": 10.0,
    }
