"""Read-only web views, served by the worker's Faust web server on WEB_HOST:WEB_PORT.

- `/`                         live dashboard (static/, plain JS, no build step)
- `/api/page-views?minutes=N` recent 1-minute page-view windows and top pages   (PostgreSQL)
- `/api/active-users?minutes=N` recent 5-minute distinct-user windows           (PostgreSQL)
- `/api/sessions?minutes=N`   sessions by status, open sessions per minute       (PostgreSQL)
- `/api/sessions/{user_id}`   one user's sessions                                (PostgreSQL)
- `/api/stats`                this worker's partitions: clocks, lag, counters, sinks
- `/api/health`               PostgreSQL reachable, the lake writable, both stages' loops
                              running and no partition stuck: 200, else 503
- `/livez`                    liveness: both stages' loops running (200), else 503
- `/readyz`                   readiness: Kafka, PostgreSQL and the lake reachable,
                              partitions assigned, none stuck (200), else 503
- `/metrics`                  Prometheus text of `/api/stats` (docs/metrics.md)

PostgreSQL holds the results of every worker, so any worker answers the window and
session endpoints for the whole pipeline. Reads go through the sink's asyncpg pool,
at most one at a time, so the sink always has a connection for its writes.
Faust's own index at `/` (a plain `{"status": "OK"}`) is shadowed by the dashboard:
aiohttp resolves routes in registration order and these register when the worker is
built, before Faust adds its blueprints; its statistics, graph, router and table
views are off (app/worker.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import orjson
from faust import web
from faust.web.exceptions import ServiceUnavailable, ValidationError

from app.web import observe, prometheus, queries

STATIC_DIR = Path(__file__).with_name("static")
INDEX_HTML = (STATIC_DIR / "index.html").read_bytes()
MAX_MINUTES = 24 * 60
ACQUIRE_TIMEOUT_S = 5.0
NO_STORE = {"Cache-Control": "no-store"}


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]; 400 otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}, not {value}")
    return value


def json_response(view: web.View, payload, status: int = 200) -> web.Response:
    return view.bytes(
        orjson.dumps(payload),
        content_type="application/json",
        status=status,
        headers=dict(NO_STORE),
    )


def register(worker) -> None:
    """Add the views to `worker.app`; they read the worker's processors and sinks."""
    app, settings = worker.app, worker.settings
    postgres_sink = worker.postgres
    db_gate = asyncio.Semaphore(1)

    async def read_db(query, *args):
        """Run one read-only query function on a pooled connection; 503 when PostgreSQL fails."""
        pool = postgres_sink.pool
        if pool is None:
            raise ServiceUnavailable("PostgreSQL is not connected yet")
        try:
            async with db_gate, pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                return await query(conn, *args)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ServiceUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    async def worker_snapshot() -> dict:
        return await observe.snapshot(worker)

    # -- dashboard ----------------------------------------------------------------

    app.web.add_static("/static/", STATIC_DIR)

    @app.page("/", name="dashboard")
    async def dashboard(self: web.View, request: web.Request) -> web.Response:
        return self.bytes(INDEX_HTML, content_type="text/html", headers=dict(NO_STORE))

    # -- PostgreSQL: the whole pipeline ---------------------------------------------

    @app.page("/api/page-views", name="page_views")
    async def page_views(self: web.View, request: web.Request) -> web.Response:
        minutes = int_param(request, "minutes", 10, 1, MAX_MINUTES)
        top = int_param(request, "top", 5, 1, 100)
        result = await read_db(queries.page_views, minutes, top)
        return json_response(self, {"scope": "pipeline", **result})

    @app.page("/api/active-users", name="active_users")
    async def active_users(self: web.View, request: web.Request) -> web.Response:
        minutes = int_param(request, "minutes", 10, 1, MAX_MINUTES)
        result = await read_db(queries.active_users, minutes)
        return json_response(self, {"scope": "pipeline", **result})

    @app.page("/api/sessions", name="sessions_summary")
    async def sessions_summary(self: web.View, request: web.Request) -> web.Response:
        minutes = int_param(request, "minutes", 10, 1, MAX_MINUTES)
        result = await read_db(queries.sessions_summary, minutes)
        return json_response(self, {"scope": "pipeline", **result})

    @app.page("/api/sessions/{user_id}", name="user_sessions")
    async def user_sessions(self: web.View, request: web.Request, user_id: str) -> web.Response:
        limit = int_param(request, "limit", 100, 1, 10_000)
        result = await read_db(queries.user_sessions, user_id, limit)
        return json_response(self, {"scope": "pipeline", **result})

    # -- this worker ------------------------------------------------------------------

    @app.page("/api/stats", name="stats")
    async def worker_stats(self: web.View, request: web.Request) -> web.Response:
        return json_response(self, await worker_snapshot())

    @app.page("/metrics", name="metrics")
    async def metrics(self: web.View, request: web.Request) -> web.Response:
        text = prometheus.render(await worker_snapshot())
        return self.bytes(
            text.encode(), headers={"Content-Type": prometheus.CONTENT_TYPE, **NO_STORE}
        )

    async def _ping(conn) -> int:
        return await conn.fetchval("SELECT 1", timeout=2)

    async def _kafka_check() -> dict:
        """A broker of KAFKA_BOOTSTRAP_SERVERS accepts a TCP connection, and no stage has
        seen Kafka fail since its last success (app/outages.py)."""
        dep = worker.outages.snapshot().get("kafka", {})
        if dep and not dep["up"]:
            return {"ok": False, "error": dep["last_error"]}
        errors = []
        for server in settings.kafka_bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            started = time.monotonic()
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), 2.0
                )
            except (OSError, TimeoutError, ValueError) as exc:
                errors.append(f"{server.strip()}: {type(exc).__name__}: {exc}")
                continue
            writer.close()
            latency = round((time.monotonic() - started) * 1000, 1)
            return {"ok": True, "broker": server.strip(), "latency_ms": latency}
        return {"ok": False, "error": "; ".join(errors)}

    async def _postgres_check() -> dict:
        started = time.monotonic()
        try:
            await read_db(_ping)
        except ServiceUnavailable as exc:
            return {"ok": False, "error": exc.detail}
        return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}

    def _lake_check() -> dict:
        lake_health = worker.source.lake.health
        return {"ok": lake_health.ok, "error": None if lake_health.ok else lake_health.last_error}

    def _stages() -> dict:
        return {
            name: observe.stage_fields(stage)
            for name, stage in (("source", worker.source), ("stateful", worker.stateful))
        }

    @app.page("/livez", name="livez")
    async def livez(self: web.View, request: web.Request) -> web.Response:
        """For a liveness probe: 503 only when a stage's supervised loop is not running
        (a restart helps); a dependency away is readiness, not liveness."""
        alive = {name: st["alive"] for name, st in _stages().items()}
        ok = all(alive.values())
        payload = {"status": "ok" if ok else "dead", "stages_alive": alive}
        return json_response(self, payload, status=200 if ok else 503)

    @app.page("/readyz", name="readyz")
    async def readyz(self: web.View, request: web.Request) -> web.Response:
        """For a readiness probe: Kafka, PostgreSQL and the lake reachable, partitions
        assigned, no partition stuck; each check in the body."""
        postgres, lake = await _postgres_check(), _lake_check()
        assigned = observe.assigned_partitions(worker)
        stuck = [
            {"stage": name, **s}
            for name, st in _stages().items()
            for s in st["stuck_partitions"] + st["not_opened"]
        ]
        checks = {
            "kafka": await _kafka_check(),
            "postgres": postgres,
            "lake": lake,
            "partitions": {"ok": assigned > 0, "assigned": assigned},
            "not_stuck": {"ok": not stuck, "stuck_partitions": stuck},
        }
        ok = all(c["ok"] for c in checks.values())
        payload = {"status": "ready" if ok else "not ready", "checks": checks}
        return json_response(self, payload, status=200 if ok else 503)

    @app.page("/api/health", name="health")
    async def health(self: web.View, request: web.Request) -> web.Response:
        postgres, lake = await _postgres_check(), _lake_check()
        assigned = observe.assigned_partitions(worker)
        stages = _stages()
        loops_ok = all(
            st["alive"] and not st["stuck_partitions"] and not st["not_opened"]
            for st in stages.values()
        )
        ok = postgres["ok"] and lake["ok"] and loops_ok
        payload = {
            "status": "ok" if ok else "degraded",
            "worker": observe.worker_identity(settings)["id"],
            "checks": {"postgres": postgres, "lake": lake, "stages": stages},
            "assigned_partitions": assigned,
            "rebalancing": worker.source.rebalancing or worker.stateful.rebalancing,
        }
        return json_response(self, payload, status=200 if ok else 503)
