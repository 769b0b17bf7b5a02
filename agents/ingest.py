"""Agent on `user_activity`: the source stage (app/ingest.py) plus its watermark timer."""

from __future__ import annotations

import logging

from faust.types import TP

from app.faust_app import app, dlq_topic, enriched_topic, input_topic, settings
from app.runtime import ingest

BATCH = 5_000
MARK_INTERVAL_S = 0.25


@app.agent(input_topic, name="ingest")
async def ingest_agent(stream):
    async for events in stream.take_events(BATCH, within=0.05):
        await ingest.handle(events)


def _assigned_sources() -> list[int]:
    return sorted(ingest.owned or ())


@app.timer(MARK_INTERVAL_S)
async def send_watermarks() -> None:
    assigned = _assigned_sources()
    if not assigned:
        return
    sources = app.consumer.topic_partitions(settings.input_topic) or max(assigned) + 1
    await ingest.flush_if_due()
    await ingest.send_marks(
        assigned,
        sources,
        settings.partitions,
        highwater=lambda p: app.consumer.highwater(TP(settings.input_topic, p)),
    )


@app.on_partitions_revoked.connect
async def on_revoked(sender, revoked, **kwargs) -> None:
    await ingest.revoke({tp.partition for tp in revoked if tp.topic == settings.input_topic})


@app.on_partitions_assigned.connect
async def on_assigned(sender, assigned, **kwargs) -> None:
    ingest.assign({tp.partition for tp in assigned if tp.topic == settings.input_topic})


@app.task
async def declare_output_topics() -> None:
    # aiokafka formats a debug record for every message it sends when its logger is at
    # DEBUG (some faust log setups leave it there): a fifth of the worker's time.
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
    for topic in (enriched_topic, dlq_topic):
        await topic.maybe_declare()


@app.on_before_shutdown.connect
async def stop_ingest(sender, **kwargs) -> None:
    await ingest.flush()
    await ingest.stop()
