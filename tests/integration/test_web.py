"""The worker's web views (docs/web.md), against a running worker on real Kafka and PostgreSQL.

A seeded scenario (tests/integration/scenario.py) plus bad records of known reasons is
produced; once PostgreSQL holds exactly the expected rows, every endpoint must agree
with those rows, `/api/stats` and `/metrics` must count exactly what was produced, and
the dashboard in headless Chromium must show the API's numbers.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.integration import scenario
from tests.integration.browser import Browser, find_chromium
from tests.integration.conftest import create_topic, random_free_port, wait_for
from tests.integration.web_support import (
    MIN,
    PARTITIONS,
    Api,
    Plan,
    converge,
    iso,
    make_plan,
    parse_metrics,
    produce,
    started_api,
    total,
)

pytestmark = pytest.mark.integration
STATUSES = ("active", "ended", "timed_out")


def open_at(sessions: dict, t: int) -> int:
    return sum(
        1 for (_, start), (end, _) in sessions.items() if start <= t and (end is None or end > t)
    )


def duration(start: int, end: int | None) -> float | None:
    return None if end is None else (end - start) / 1000


async def check_stats(api: Api, plan: Plan, got: scenario.Expected, port: int) -> int:
    """`/api/stats` counts exactly what was produced; returns the open sessions count."""

    async def settled():  # the lake flushes every 2 s
        s = await api.json("/api/stats")
        return s if s["lake"]["rows"] == sum(plan.valid) else f"lake {s['lake']}"

    stats = await wait_for(settled, timeout=30, interval=0.5, what="lake rows")
    assert "this worker" in stats["scope"]
    assert stats["worker"]["id"] == f"{socket.gethostname()}:{port}"
    assert stats["worker"]["port"] == port
    assert stats["worker"]["event_loop"] == "uvloop"  # the worker's default (app/worker.py)
    totals = stats["totals"]
    assert totals["events"] == sum(plan.valid)
    assert totals["late"] == plan.expected.late
    assert totals["dead_letters"] == sum(plan.bad) == sum(plan.reasons.values())
    assert totals["records"] == plan.total
    assert stats["dead_letter_reasons"] == dict(plan.reasons)
    assert [s["partition"] for s in stats["sources"]] == list(range(PARTITIONS))
    for s in stats["sources"]:
        p = s["partition"]
        stream_time = max(e.t for e in plan.sends[p] if not isinstance(e, bytes))
        assert s["assigned"] is True
        assert (s["events"], s["late"], s["dead_letters"]) == (
            plan.valid[p],
            plan.late[p],
            plan.bad[p],
        )
        assert s["highwater"] == len(plan.sends[p]) == s["last_read_offset"] + 1
        assert s["consumer_lag"] == 0
        assert s["stream_time_ms"] == stream_time
        assert s["stream_time"] == iso(stream_time)
        assert s["watermark_ms"] == stream_time - scenario.LATENESS
    merged = min(s["watermark_ms"] for s in stats["sources"])
    assert [u["partition"] for u in stats["user_partitions"]] == list(range(PARTITIONS))
    assert {u["merged_watermark_ms"] for u in stats["user_partitions"]} == {merged}
    open_sessions = sum(1 for _, status in got.sessions.values() if status == "active")
    assert totals["open_sessions"] == open_sessions
    assert stats["sink"]["connected"] and stats["sink"]["rows_written"] > 0
    assert stats["sink"]["errors"] == 0 and stats["sink"]["last_error"] is None
    assert stats["lake"]["errors"] == 0
    sinks = stats["sinks"]  # every sink in one shape (app/sinks/contract.py)
    assert set(sinks) == {"kafka", "lake", "postgres"}
    assert all(s["ok"] and s["errors"] == 0 and s["writes"] > 0 for s in sinks.values()), sinks
    assert sinks["lake"]["rows_written"] == sum(plan.valid)
    # enriched records alone are one per valid event; dead letters, forwards, marks on top
    assert sinks["kafka"]["rows_written"] > sum(plan.valid) + totals["dead_letters"]
    assert sinks["postgres"]["rows_written"] == stats["sink"]["rows_written"]
    return open_sessions


async def check_metrics(api: Api, plan: Plan, open_sessions: int) -> None:
    headers, body = await api.get("/metrics")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(body.decode())
    assert total(samples, "pipeline_events_processed_total") == sum(plan.valid)
    assert total(samples, "pipeline_late_events_total") == plan.expected.late
    by_reason = {labels["reason"]: v for labels, v in samples["pipeline_dead_letters_total"]}
    assert by_reason == dict(plan.reasons)
    lag = {
        (labels["stage"], labels["partition"])
        for labels, _ in samples["pipeline_consumer_lag_records"]
    }
    assert len(lag) == 2 * PARTITIONS
    assert len(samples["pipeline_source_watermark_timestamp_seconds"]) == PARTITIONS
    assert len(samples["pipeline_merged_watermark_timestamp_seconds"]) == PARTITIONS
    assert total(samples, "pipeline_open_sessions") == open_sessions
    written = {labels["sink"]: v for labels, v in samples["pipeline_sink_rows_written_total"]}
    assert written["postgres"] > 0 and written["lake"] == sum(plan.valid)
    assert total(samples, "pipeline_sink_errors_total") == 0
    assert {labels["sink"] for labels, _ in samples["pipeline_sink_last_write_duration_seconds"]}
    up = {labels["sink"]: value for labels, value in samples["pipeline_sink_up"]}
    assert up == {"kafka": 1, "lake": 1, "postgres": 1}
    assert total(samples, "process_cpu_seconds_total") > 0
    assert total(samples, "process_resident_memory_bytes") > 0


async def check_page_views(api: Api, got: scenario.Expected, newest: int) -> None:
    per_minute: Counter = Counter()
    per_page: Counter = Counter()
    for (start, url), n in got.page_views.items():
        per_minute[start] += n
        per_page[url] += n
    pv = await api.json("/api/page-views?minutes=1440&top=100")
    assert pv["newest_window_start"] == iso(newest)
    assert len(pv["windows"]) == 1440
    assert pv["windows"][-1]["window_start"] == iso(newest)
    nonzero = {w["window_start"]: w["total_views"] for w in pv["windows"] if w["total_views"]}
    assert nonzero == {iso(m): n for m, n in per_minute.items()}
    assert pv["total_views"] == sum(per_minute.values())
    ranked = sorted(per_page.items(), key=lambda kv: (-kv[1], kv[0]))
    assert pv["top_pages"] == [{"page_url": u, "view_count": n} for u, n in ranked]
    busiest = max(per_minute, key=lambda m: (per_minute[m], m))
    window = next(w for w in pv["windows"] if w["window_start"] == iso(busiest))
    pages = sorted(
        ((u, n) for (m, u), n in got.page_views.items() if m == busiest),
        key=lambda kv: (-kv[1], kv[0]),
    )
    assert window["top_pages"] == [{"page_url": u, "view_count": n} for u, n in pages]
    assert window["window_end"] == iso(busiest + MIN)

    recent = await api.json("/api/page-views")  # defaults: 10 minutes, top 5
    assert [w["window_start"] for w in recent["windows"]] == [
        iso(newest - k * MIN) for k in range(9, -1, -1)
    ]
    assert recent["total_views"] == sum(n for m, n in per_minute.items() if m > newest - 10 * MIN)
    assert len(recent["top_pages"]) <= 5


async def check_active_users(api: Api, got: scenario.Expected, newest: int) -> None:
    au = await api.json("/api/active-users?minutes=60")
    first = newest + MIN - 5 * MIN - 59 * MIN
    assert [(w["window_start"], w["active_user_count"]) for w in au["windows"]] == [
        (iso(first + k * MIN), got.active_users.get(first + k * MIN, 0)) for k in range(60)
    ]
    assert au["current"] == au["windows"][-1]
    assert au["current"]["window_end"] == iso(newest + MIN)


async def check_sessions(api: Api, got: scenario.Expected, newest: int, open_sessions: int):
    summary = await api.json("/api/sessions?minutes=30")
    statuses = Counter(status for _, status in got.sessions.values())
    assert summary["by_status"] == {s: statuses.get(s, 0) for s in STATUSES}
    assert summary["open"] == open_sessions
    assert [(p["at"], p["open_sessions"]) for p in summary["open_per_minute"]] == [
        (iso(t), open_at(got.sessions, t))
        for t in range(newest + MIN - 29 * MIN, newest + 2 * MIN, MIN)
    ]
    by_user: dict[str, list] = {}
    for (user, start), (end, status) in sorted(got.sessions.items()):
        by_user.setdefault(user, []).append((start, end, status))
    picked = {max(by_user, key=lambda u: (len(by_user[u]), u))}
    for status in STATUSES:
        picked.add(next(u for u, rows in by_user.items() if rows[-1][2] == status))
    for user in sorted(picked):
        answer = await api.json(f"/api/sessions/{user}")
        assert answer["user_id"] == user
        assert answer["count"] == len(by_user[user])
        keys = ("session_start_time", "session_end_time", "status", "session_duration_seconds")
        rows = [tuple(s[k] for k in keys) for s in answer["sessions"]]
        assert rows == [
            (iso(start), None if end is None else iso(end), status, duration(start, end))
            for start, end, status in by_user[user]
        ]
    nobody = await api.json("/api/sessions/no-such-user")
    assert nobody["count"] == 0 and nobody["sessions"] == []


async def check_pages_and_errors(api: Api) -> None:
    health = await api.json("/api/health")
    assert health["status"] == "ok" and health["checks"]["postgres"]["ok"]
    live = await api.json("/livez")
    assert live == {"status": "ok", "stages_alive": {"source": True, "stateful": True}}
    ready = await api.json("/readyz")
    assert ready["status"] == "ready", ready
    assert set(ready["checks"]) == {"kafka", "postgres", "lake", "partitions", "not_stuck"}
    assert ready["checks"]["partitions"]["assigned"] == 2 * PARTITIONS
    headers, body = await api.get("/")
    assert headers["Content-Type"].startswith("text/html")  # not Faust's {"status": "OK"}
    assert b"User activity pipeline" in body and b"/static/dashboard.js" in body
    headers, _ = await api.get("/static/dashboard.js")
    assert "javascript" in headers["Content-Type"]
    await api.get("/static/dashboard.css")
    for path in (
        "/api/page-views?minutes=abc",
        "/api/page-views?minutes=0",
        "/api/active-users?minutes=100000",
        "/api/sessions/user-0001?limit=0",
    ):
        assert "error" in await api.json(path, status=400)
    await api.get("/api/stats", status=405, method="POST")  # read-only
    await api.get("/assignment/", status=404)  # Faust's statistics views are off


async def test_api_agrees_with_postgres_and_with_what_was_produced(
    bootstrap, pipeline_env, start_worker
):
    plan = make_plan(users=40, seed=5, span_min=30)
    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    await produce(bootstrap, topic, plan.sends)
    worker = start_worker(IDLE_ADVANCE="1h")
    got = await converge(worker, pipeline_env["DATABASE_URL"], plan.expected)

    async with aiohttp.ClientSession() as http:
        api = await started_api(http, worker)
        open_sessions = await check_stats(api, plan, got, int(worker.env["WEB_PORT"]))
        await check_metrics(api, plan, open_sessions)
        await check_page_views(api, got, plan.newest_minute)
        await check_active_users(api, got, plan.newest_minute)
        await check_sessions(api, got, plan.newest_minute, open_sessions)
        await check_pages_and_errors(api)


DOM_VALUES = """JSON.stringify({
  refreshes: Number(document.body.dataset.refreshes),
  state: document.body.dataset.state,
  status: document.getElementById("status").textContent,
  worker: document.getElementById("worker-id").textContent,
  pvTotal: document.getElementById("pv-total").dataset.value,
  pvTotalText: document.getElementById("pv-total").textContent,
  pvLatest: document.getElementById("pv-latest").dataset.value,
  active: document.getElementById("active-current").dataset.value,
  open: document.getElementById("sessions-open").dataset.value,
  events: document.getElementById("events-total").dataset.value,
  late: document.getElementById("late-total").dataset.value,
  dlq: document.getElementById("dlq-total").dataset.value,
  topPage: document.querySelector("#top-pages tbody tr td")?.textContent,
  sourceRows: document.querySelectorAll("#sources tbody tr").length,
  canvases: [...document.querySelectorAll("canvas")].map((c) => c.width > 0),
})"""


async def test_dashboard_in_headless_chromium(bootstrap, pipeline_env, start_worker, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        message = "chromium is not installed (Debian: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    plan = make_plan(users=100, seed=9, span_min=40)
    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    split = [len(seq) * 3 // 5 for seq in plan.sends]
    first = [seq[:k] for seq, k in zip(plan.sends, split, strict=True)]
    rest = [seq[k:] for seq, k in zip(plan.sends, split, strict=True)]
    await produce(bootstrap, topic, first)
    worker = start_worker(IDLE_ADVANCE="1h")

    async with aiohttp.ClientSession() as http, Browser(chromium, tmp_path) as browser:
        api = await started_api(http, worker)
        await browser.goto(f"{api.base}/?minutes=60")
        await browser.wait_for("document.body.dataset.state === 'ok'", what="a first refresh")
        # The rest arrives live while the page polls, so its rate chart moves.
        await produce(bootstrap, topic, rest, pace_s=0.4)
        await converge(worker, pipeline_env["DATABASE_URL"], plan.expected)

        async def all_read():  # records after the last row-changing one change no rows
            totals = (await api.json("/api/stats"))["totals"]
            return totals["records"] == plan.total or f"{totals['records']} of {plan.total}"

        await wait_for(all_read, timeout=30, interval=0.5, what="every record to be read")
        seen = await browser.evaluate("Number(document.body.dataset.refreshes)")
        await browser.wait_for(
            f"Number(document.body.dataset.refreshes) >= {seen + 2}", what="two more refreshes"
        )
        dom = orjson.loads(await browser.evaluate(DOM_VALUES))
        pv = await api.json("/api/page-views?minutes=60&top=6")
        au = await api.json("/api/active-users?minutes=60")
        sessions = await api.json("/api/sessions?minutes=60")
        stats = await api.json("/api/stats")
        shot = tmp_path / "dashboard.png"
        png = await browser.screenshot(shot)

    assert dom["state"] == "ok" and dom["status"] == "live", dom
    assert dom["worker"] == stats["worker"]["id"]
    assert int(dom["pvTotal"]) == pv["total_views"] > 0
    assert dom["pvTotalText"] == f"{pv['total_views']:,}"
    assert int(dom["pvLatest"]) == pv["windows"][-1]["total_views"]
    assert int(dom["active"]) == au["current"]["active_user_count"]
    assert int(dom["open"]) == sessions["by_status"]["active"]
    assert int(dom["events"]) == stats["totals"]["events"] == sum(plan.valid)
    assert int(dom["late"]) == stats["totals"]["late"] == plan.expected.late
    assert int(dom["dlq"]) == stats["totals"]["dead_letters"] == sum(plan.bad)
    assert dom["topPage"] == pv["top_pages"][0]["page_url"]
    assert dom["sourceRows"] == PARTITIONS
    assert dom["canvases"] == [True] * 4
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    target = os.environ.get("DASHBOARD_SCREENSHOT")
    if target:  # e.g. DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the docs image
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


async def test_probes_when_postgresql_cannot_be_reached(bootstrap, pipeline_env, start_worker):
    """/livez stays 200 (a restart would not bring PostgreSQL back); /readyz is 503 and
    says which check failed, Kafka's among those that pass."""
    await create_topic(bootstrap, pipeline_env["INPUT_TOPIC"], PARTITIONS)
    nowhere = f"postgresql://user:password@127.0.0.1:{random_free_port()}/stream_data"
    worker = start_worker(DATABASE_URL=nowhere)
    port = int(worker.env["WEB_PORT"])
    async with aiohttp.ClientSession() as http:

        async def probed():
            assert worker.alive(), f"worker died:\n{worker.tail()}"
            try:
                async with http.get(f"http://127.0.0.1:{port}/livez") as live:
                    if live.status != 200:
                        return False
                async with http.get(f"http://127.0.0.1:{port}/readyz") as ready:
                    body = await ready.json()
                    # Kafka and the partitions become ready with the first rebalance
                    checks = body["checks"]
                    settled = checks["kafka"]["ok"] and checks["partitions"]["ok"]
                    return ready.status == 503 and settled and body
            except aiohttp.ClientError:
                return False

        ready = await wait_for(probed, timeout=90, interval=0.5, what="/livez 200, /readyz 503")
    assert ready["status"] == "not ready", ready
    checks = ready["checks"]
    assert checks["postgres"]["ok"] is False, checks
    assert checks["lake"]["ok"] and checks["partitions"]["ok"], checks
    assert "password" not in orjson.dumps(ready).decode()
