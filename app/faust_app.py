"""The Faust app, its topics and its RocksDB-backed state tables."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import faust
import mode.loop

from app.settings import faust_broker_credentials, get_settings


def _default_to_uvloop() -> None:
    """Run the worker on uvloop unless `-L`/`FAUST_LOOP` says otherwise.

    `faust worker` defaults to asyncio's own loop; on uvloop Faust's per-record path
    carries about a quarter more records per second here (README, Performance). Only
    under the faust CLI, before it creates its loop: an importer such as pytest keeps
    its own.
    """
    if "faust.cli.faust" in sys.modules and not os.environ.get("FAUST_LOOP"):
        mode.loop.use("uvloop")


_default_to_uvloop()
settings = get_settings()
Path(settings.state_dir).mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.app_id,
    broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
    # KAFKA_SECURITY_PROTOCOL and friends (docs/security.md); None for PLAINTEXT.
    broker_credentials=faust_broker_credentials(settings),
    store="rocksdb://",
    datadir=settings.state_dir,
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_port=settings.web_port,
    web_bind=settings.web_host,
    web_host=settings.web_host,
    # The worker's own views (app/web.py) replace Faust's: its sensor dump at `/`, the
    # service graph, and the table/router views (table_route misroutes, DESIGN.md).
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
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
    # On shutdown Faust would wait for every record read to be acknowledged, but the
    # source stage acknowledges only after its lake flush, which runs at shutdown.
    stream_wait_empty=False,
)

input_topic = app.topic(settings.input_topic, key_type=bytes, value_type=bytes, allow_empty=True)
by_user_topic = app.topic(
    settings.internal_topic,
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    internal=True,
)
enriched_topic = app.topic(
    settings.enriched_topic, key_type=bytes, value_type=bytes, partitions=settings.partitions
)
dlq_topic = app.topic(
    settings.dlq_topic,
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    allow_empty=True,
)

# The name encodes the state's layout; renaming it abandons the old state.
state_table = app.Table(
    "merge-state-v2",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
    # Faust's RocksDB defaults (64 MB x 3 write buffers and a 2 GB block cache, per
    # partition) let a worker with 100k users grow past 700 MB (make bench). The state
    # is written per batch and read only when a partition is assigned.
    options={
        "write_buffer_size": 8 << 20,
        "max_write_buffer_number": 2,
        "block_cache_size": 16 << 20,
    },
)
