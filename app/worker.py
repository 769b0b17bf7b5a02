"""The composition root: `build(settings)` makes one worker; nothing is built at import.

`faust -A app worker` finds `app.app` (a lazy attribute of the package, see
app/__init__.py), which builds the worker from the environment's settings.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import faust
import mode.loop
from faust import stores as faust_stores

from app.settings import Settings, faust_broker_credentials
from app.sinks.contract import Sink
from app.sinks.lake import LakeTable
from app.sinks.postgres import PostgresSink
from app.source.service import SourceStage
from app.stateful.fenced_store import STORE_SCHEME
from app.stateful.processor import MergeProcessor
from app.stateful.stall import StallGuard
from app.stateful.transport import ReadCommittedTransport
from app.stats import Stats

# Faust's RocksDB defaults (64 MB x 3 write buffers and a 2 GB block cache, per
# partition) let a worker with 100k users grow past 700 MB. The state is written per
# batch and read only when a partition is assigned.
STATE_ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 << 20,
}


def state_table_name(settings: Settings) -> str:
    """The state table's name encodes its layout: a changed layout starts anew."""
    from tables.windows import layout_tag

    return f"merge-state-v4-{layout_tag()}-p{settings.partitions}"


SESSION_TIMEOUT_S = 10.0


class PipelineApp(faust.App):
    def _new_transport(self):
        return ReadCommittedTransport(self.conf.broker_consumer, self)


@dataclass
class Worker:
    settings: Settings
    app: faust.App
    stats: Stats
    source: SourceStage
    merge: MergeProcessor
    postgres: PostgresSink

    def sinks(self) -> list[Sink]:
        """Every sink; the Kafka outputs exist once the source stage has started."""
        source = self.source
        return [s for s in (source.outputs, source.lake, self.postgres) if s is not None]


def default_to_uvloop() -> None:
    """Run the worker on uvloop unless `-L`/`FAUST_LOOP` says otherwise.

    `faust worker` defaults to asyncio's own loop; on uvloop Faust's per-record path
    carries about a quarter more records per second here. Only under the faust CLI,
    before it creates its loop: an importer such as pytest keeps its own.
    """
    if "faust.cli.faust" in sys.modules and not os.environ.get("FAUST_LOOP"):
        mode.loop.use("uvloop")


def build(settings: Settings, lake=None) -> Worker:
    """The worker for `settings`; `lake` replaces the lake table (the bench's variants)."""
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    app = PipelineApp(
        settings.app_id,
        broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=faust_broker_credentials(settings),
        store="rocksdb://",
        datadir=settings.state_dir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        # Topics Faust creates at start (the user-keyed topic, the changelog) can be
        # missing from a just-started broker's metadata when the consumer subscribes;
        # it then notices them at the next refresh, so refresh every 5 s, not 5 min.
        consumer_metadata_max_age_ms=5_000,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        # The worker's own views (app/web/) replace Faust's sensor dump at `/`, the
        # service graph, and the table/router views (table_route misroutes).
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_tables_enabled=False,
        web_router_enabled=False,
        producer_linger_ms=5,
        producer_max_batch_size=262_144,
        stream_buffer_maxsize=16_384,
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        # A killed worker's partitions wait this long before others take them over.
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=2.0,
        # A rebalance does not wait for a batch in hand: the stateful stage drops what it
        # no longer owns, and its writes wait for the rebalance after a stall (stall.py).
        stream_wait_empty=False,
    )
    by_user_topic = app.topic(
        settings.internal_topic,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        internal=True,
    )
    # RocksDB, replaying only the changelog records of each partition's current writer
    faust_stores.STORES.aliases[STORE_SCHEME] = "app.stateful.fenced_store:FencedStore"
    table_name = state_table_name(settings)
    state_table = app.Table(
        table_name,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        options=STATE_ROCKSDB_OPTIONS,
        # the path is the files' name, as Faust's own `rocksdb://` makes it; a URL
        # with nothing after the scheme is falsy, and Faust would use its default store
        store=f"{STORE_SCHEME}:{table_name}",
    )
    stats = Stats()
    guard = StallGuard(SESSION_TIMEOUT_S)
    postgres = PostgresSink(
        settings.database_url,
        settings.sink_flush_ms,
        settings.database_ssl_rootcert,
        guard,
        app_id=settings.app_id,
    )
    if lake is None:
        lake = LakeTable(
            settings.lake_dir, settings.app_id, retention_ms=settings.lake_retention_ms
        )
    source = SourceStage(settings, stats, lake, loop=app.loop, beacon=app.beacon)
    merge = MergeProcessor(settings, state_table, postgres, guard)
    worker = Worker(settings, app, stats, source, merge, postgres)

    # Table changelog writes go through Faust's producer buffer (100 by default, then
    # it logs "buffer full" and waits); one batch writes thousands of keys.
    app.producer.buffer.max_messages = 50_000

    from agents import merge as merge_agent
    from app.web import views

    merge_agent.register(worker, by_user_topic)
    views.register(worker)

    @app.timer(1.0)
    async def keep_guard_fresh() -> None:
        guard.alive()

    @app.task
    async def start_stages() -> None:
        # aiokafka formats a debug record for every message it sends when its logger is
        # at DEBUG (some faust log setups leave it there): a fifth of the worker's time.
        aiokafka_log = logging.getLogger("aiokafka")
        aiokafka_log.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
        await postgres.start()
        await app.add_runtime_dependency(source)

    @app.on_before_shutdown.connect
    async def stop_stages(sender, **kwargs) -> None:
        await source.stop()
        await postgres.stop()

    return worker
