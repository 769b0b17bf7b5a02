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
from dataclasses import dataclass
from pathlib import Path

import faust
import mode.loop
from faust.app.base import BootStrategy

from app.kafka_clients import KafkaClients
from app.settings import Settings
from app.sinks.contract import Sink
from app.sinks.lake import LakeTable
from app.sinks.postgres import PostgresSink
from app.source.service import SourceStage
from app.stateful.service import StatefulStage
from app.stats import Stats


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

    def sinks(self) -> list[Sink]:
        """Every sink; the Kafka outputs exist once the source stage has started."""
        source = self.source
        return [s for s in (source.outputs, source.lake, self.postgres) if s is not None]


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
    )
    stats = Stats()
    clients = KafkaClients(settings)
    postgres = PostgresSink(
        settings.database_url,
        settings.sink_flush_ms,
        settings.database_ssl_rootcert,
        app_id=settings.app_id,
    )
    if lake is None:
        lake = LakeTable(
            settings.lake_dir, settings.app_id, retention_ms=settings.lake_retention_ms
        )
    source = SourceStage(settings, stats, lake, clients, loop=app.loop, beacon=app.beacon)
    stateful = StatefulStage(settings, postgres, clients, loop=app.loop, beacon=app.beacon)
    worker = Worker(settings, app, stats, source, stateful, postgres)

    from agents import source as source_agent
    from agents import stateful as stateful_agent
    from app.web import views

    _lifecycle(worker)
    source_agent.register(worker)
    stateful_agent.register(worker)
    views.register(worker)
    return worker


def _lifecycle(worker: Worker) -> None:
    app = worker.app

    @app.task
    async def start_sinks() -> None:
        # aiokafka formats a debug record for every message it sends when its logger is
        # at DEBUG (some faust log setups leave it there): a fifth of the worker's time.
        aiokafka_log = logging.getLogger("aiokafka")
        aiokafka_log.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
        await worker.postgres.start()

    @app.on_before_shutdown.connect
    async def stop_stages(sender, **kwargs) -> None:
        await asyncio.gather(worker.source.stop(), worker.stateful.stop())
        await worker.postgres.stop()
