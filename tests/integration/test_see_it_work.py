"""README, "See it work": every command block, run as written against a live pipeline.

The test lays out a folder as `make up` leaves the repository (`data/lake`,
`.state/logs/producer.log`, `.venv/bin/python`, the Makefile, `.state/stack.env` naming
the database), starts a worker and the producer there on the shared Kafka and
PostgreSQL, and runs each ```sh block of the section with bash. Only the test's own
topic names and web port are put in place of the defaults (a shared broker), nothing
else in the commands changes.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson

from tests.integration.conftest import ROOT, create_topic, wait_for

PARTITIONS = 4
README = ROOT / "README.md"


def blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## See it work", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(found) == 4, "the tables, the lake, the topics, the LATE events"
    return found


def make_up_layout(root: Path, database_url: str) -> None:
    """The files the commands expect where `make up` leaves them."""
    venv = root / ".venv"
    venv.mkdir()
    real = Path(sys.prefix)
    for name in ("bin", "lib", "pyvenv.cfg"):
        (venv / name).symlink_to(real / name)
    (root / "Makefile").symlink_to(ROOT / "Makefile")
    (root / "pyproject.toml").symlink_to(ROOT / "pyproject.toml")
    (venv / ".installed-up").touch()  # newer than pyproject.toml: make installs nothing
    state = root / ".state"
    (state / "logs").mkdir(parents=True)
    (state / "stack.env").write_text(f"export DATABASE_URL={database_url}\n")


def run(script: str, root: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{script}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


async def test_the_readme_commands_show_every_result(
    bootstrap, pipeline_env, start_worker, tmp_path
):
    root = tmp_path / "repo"
    root.mkdir()
    make_up_layout(root, pipeline_env["DATABASE_URL"])
    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker(LAKE_DIR=str(root / "data" / "lake"), ACTIVITY_LOG_FORMAT="json")
    web = f"http://127.0.0.1:{worker.env['WEB_PORT']}"

    async with aiohttp.ClientSession() as http:

        async def ready():
            assert worker.alive(), f"worker died:\n{worker.tail()}"
            try:
                async with http.get(f"{web}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout=90, interval=0.5, what="/readyz 200")
        # the producer as `make up` runs it, bounded: 270 s of event time in about 5 s
        with open(root / ".state" / "logs" / "producer.log", "wb") as log:
            producer = await asyncio.create_subprocess_exec(
                sys.executable,
                *("-m", "producer", "--bootstrap-servers", bootstrap, "--topic", topic),
                *("--count", "9000", "--rate", "2000", "--speed", "60", "--users", "300"),
                *("--bad-ratio", "0.01", "--late-ratio", "0.05", "--seed", "30", "--quiet"),
                cwd=root,
                env={**pipeline_env, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await producer.communicate()
        assert producer.returncode == 0, err.decode()
        assert "progress:" not in err.decode(), "--quiet prints no progress lines"
        assert "done: sent=9000" in err.decode()

        async def all_in():
            async with http.get(f"{web}/api/stats") as response:
                stats = await response.json()
            sinks = stats["sinks"]
            valid = stats["totals"]["events"]
            lake_done = valid > 8000 and sinks["lake"]["rows_written"] == valid
            return lake_done and sinks["postgres"]["rows_written"] > 0 and stats["totals"]

        totals = await wait_for(all_in, timeout=120, interval=1, what="the lake to hold all")
        async with http.get(f"{web}/") as response:
            assert response.status == 200 and "text/html" in response.headers["Content-Type"]

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ACTIVITY_")},
        "ACTIVITY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STATE_DIR": str(root / ".state"),  # devstack's folder, for `make psql`
        "PYTHONPATH": str(ROOT),
    }

    def as_written(block: str) -> str:
        """The test's topics and port in place of the defaults (a shared broker)."""
        block = block.replace("user_activity_dlq", pipeline_env["DLQ_TOPIC"])
        block = block.replace("enriched_activity", pipeline_env["ENRICHED_TOPIC"])
        return block.replace("127.0.0.1:6066", web.removeprefix("http://"))

    tables, lake, topics, late = blocks()

    out = run(as_written(tables), root, env)
    assert out.count("(5 rows)") == 2, out  # page views, active users
    assert re.search(r"^ (active|ended|timed_out) +\| +\d+", out, re.M), out

    out = run(as_written(lake), root, env)
    assert "_delta_log" in out and "event_date=" in out, out
    counted = re.search(r"│ \d{4}-\d\d-\d\d │ +(\d+) │ +(\d+) │", out)
    assert counted, out
    assert int(counted.group(2)) > 0 and int(counted.group(1)) <= totals["events"]
    assert "shape: (5, 4)" in out, out

    out = run(as_written(topics), root, env)
    lines = out.splitlines()
    assert len(lines) == 10, out
    assert all('"processing_time"' in x for x in lines[:5]), out
    assert all('"reason"' in x for x in lines[5:]), out

    out = run(as_written(late), root, env)
    lines = out.splitlines()
    assert len([x for x in lines if x.startswith("LATE event ")]) == 3, out
    assert len([x for x in lines if '"late":true' in x]) == 3, out
    event_id = next(x for x in lines if re.fullmatch(r"e\d+", x))
    assert re.search(rf"│ {event_id} ┆ .* ┆ (true|false) +│", out), out

    # ACTIVITY_LOG_FORMAT=json: after Faust's start banner, every line is one object
    logged = [x for x in worker.log.read_text().splitlines() if x.startswith("{")]
    assert len(logged) > 20, worker.tail()
    assert all(set(orjson.loads(x)) >= {"time", "level", "logger", "message"} for x in logged)
