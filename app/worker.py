"""The composition root: `build(settings)` makes one worker; nothing is built at import.

`faust -A app worker` finds `app.app` (a lazy attribute of the package, see
app/__init__.py), which builds the worker from the environment's settings.

Both stages own their Kafka clients (app/source/, app/stateful/): Faust runs the web
server, the agents (agents/: what runs in the worker, one entry point per stage) and
the worker's lifecycle, and has no Kafka consumer, producer or table of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import faust
import mode.loop
from faust.app.base import BootStrategy

from app.kafka_clients import KafkaClients
from app.logs import logging_config
from app.outages import LogGovernor, Outages
from app.settings import Settings
from app.sinks.contract import Sink
from app.sinks.lake import LakeTable
from app.sinks.postgres import PostgresSink
from app.source.service import SourceStage
from app.stateful.service import StatefulStage
from app.stats import Stats, watch_loop_lag


class _Boot(BootStrategy):
    """Faust's web server and agents, without its Kafka clients and tables."""

    enable_kafka = False

    def tables(self):
        return []


class PipelineApp(faust.App):
    BootStrategy = _Boot


@dataclass
class Worker:
    settings: Settings
    app: faust.App
    stats: Stats
    source: SourceStage
    stateful: StatefulStage
    postgres: PostgresSink
    outages: Outages

    def sinks(self) -> list[Sink]:
        """Every sink of both stages; the Kafka outputs exist once the source stage has
        started."""
        return [*(self.source.sinks or [self.source.lake]), *self.stateful.sinks]


def default_to_uvloop() -> None:
    """Run the worker on uvloop unless `-L`/`FAUST_LOOP` says otherwise.

    `faust worker` defaults to asyncio's own loop; on uvloop the worker carried about
    a third more events per second here. Only under the faust CLI, before it creates
    its loop: an importer such as pytest keeps its own.
    """
    if "faust.cli.faust" in sys.modules and not os.environ.get("FAUST_LOOP"):
        mode.loop.use("uvloop")


def build(settings: Settings, lake=None) -> Worker:
    """The worker for `settings`; `lake` replaces the lake table (the bench's variants)."""
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    app = PipelineApp(
        settings.app_id,
        broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
        datadir=settings.state_dir,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        # The worker's own views (app/web/) replace Faust's sensor dump at `/`, the
        # service graph, and the table/router views.
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_tables_enabled=False,
        web_router_enabled=False,
        logging_config=logging_config(settings.log_format),
    )
    stats = Stats()
    clients = KafkaClients(settings)
    outages = Outages()
    postgres = PostgresSink(
        settings.database_url,
        settings.database_ssl_rootcert,
        app_id=settings.app_id,
        outages=outages,
    )
    if lake is None:
        lake = LakeTable(settings.lake, settings.app_id, retention_ms=settings.lake_retention_ms)
    services = {"outages": outages, "loop": app.loop, "beacon": app.beacon}
    source = SourceStage(settings, stats, lake, clients, **services)
    stateful = StatefulStage(settings, [postgres], clients, **services)
    worker = Worker(settings, app, stats, source, stateful, postgres, outages)
    _register_dependencies(worker, clients)

    from agents import source as source_agent
    from agents import stateful as stateful_agent
    from app.web import views

    _lifecycle(worker)
    source_agent.register(worker)
    stateful_agent.register(worker)
    views.register(worker)
    return worker


def _register_dependencies(worker: Worker, clients: KafkaClients) -> None:
    """What the outage lines name, and what each says is held back (app/outages.py)."""
    settings, source, stateful = worker.settings, worker.source, worker.stateful

    def kafka_held() -> str:
        uncommitted = source.outputs.pending_rows() if source.outputs else 0
        parts = [p for p in stateful.tasks.values() if p.input_next > p.committed_input]
        return (
            f"{uncommitted:,} output records not committed and {len(parts)} user-keyed "
            "partitions with state not committed; reading waits for the commits"
        )

    lake = source.lake
    worker.outages.register("kafka", settings.kafka_bootstrap_servers, kafka_held)
    worker.outages.watch("kafka", clients.broker_away)
    worker.outages.register(
        "postgres",
        worker.postgres.target,
        lambda: f"{worker.postgres.pending_rows():,} rows for PostgreSQL (kept in state)",
    )
    worker.outages.register(
        "lake",
        settings.lake.target,  # the URI, no secret
        lambda: (
            f"{lake.pending_rows():,} rows for the lake (reading waits past {lake.max_buffered:,})"
        ),
        away="cannot be written",
    )


KAFKA_PROBE_S = 5.0
# The stages allocate a few objects per event (records, decoded JSON) that die young,
# and keep many that live long (every user's state). Python's default thresholds run
# a collection every 700 allocations and a full one over all the users' state every
# hundred of those: measured, the catch-up ran a third faster with these
# (`python -m bench --only pipeline`, medians of three: docs/performance.md).
GC_THRESHOLDS = (50_000, 50, 1000)


def tune_gc() -> None:
    import gc

    gc.freeze()  # what the start built (Faust, the modules) is never collected
    gc.set_threshold(*GC_THRESHOLDS)


def _lifecycle(worker: Worker) -> None:
    app, settings = worker.app, worker.settings

    @app.task
    async def start_sinks() -> None:
        # aiokafka formats a debug record for every message it sends when its logger is
        # at DEBUG (some faust log setups leave it there): a fifth of the worker's time.
        aiokafka_log = logging.getLogger("aiokafka")
        aiokafka_log.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
        LogGovernor(worker.outages).install()  # Faust has set up its handlers by now
        tune_gc()
        await worker.postgres.start()

    @app.task
    async def loop_lag() -> None:
        await watch_loop_lag(worker.stats.loop_lag)

    @app.timer(KAFKA_PROBE_S)
    async def probe_kafka() -> None:
        """While Kafka is away, ask it something every few seconds: a worker with no
        partitions has no commits that would say it is back."""
        admin = worker.source.admin
        if worker.outages.down("kafka") and admin is not None:
            try:
                await asyncio.wait_for(admin.list_topics(), KAFKA_PROBE_S)
            except Exception:
                return
            worker.outages.ok("kafka")

    @app.on_before_shutdown.connect
    async def stop_stages(sender, **kwargs) -> None:
        """SIGTERM: everything stops within SHUTDOWN_TIMEOUT, whatever is away."""
        budget_s = settings.shutdown_timeout_ms / 1000
        _exit_at_the_deadline(budget_s)
        began = time.monotonic()
        stages = budget_s * 0.7  # Faust's own stop takes about a second after this
        await asyncio.gather(worker.source.stop_within(stages), worker.stateful.stop_within(stages))
        await worker.postgres.stop(max(0.5, budget_s * 0.85 - (time.monotonic() - began)))


def _exit_at_the_deadline(budget_s: float) -> None:
    """A stop that is still under way at SHUTDOWN_TIMEOUT ends the process: a stop that
    hangs would become a SIGKILL from the supervisor anyway, with nothing said."""

    def exit_now() -> None:
        logging.getLogger(__name__).error(
            "worker: still stopping %.0fs after SIGTERM (SHUTDOWN_TIMEOUT); exiting now, "
            "what was not committed is left to the next owner",
            budget_s,
        )
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(max(0.5, budget_s - 0.3), exit_now)
    timer.daemon = True
    timer.start()
