"""Agent on the user-keyed topic: windows, distinct users and sessions (app/merge.py)."""

from __future__ import annotations

from app.faust_app import app, by_user_topic, settings
from app.runtime import merge, postgres_sink

BATCH = 5_000
WITHIN_S = 0.2  # longer batches: fewer state writes per event, PostgreSQL ~0.2 s later


@app.agent(by_user_topic, name="merge")
async def merge_agent(stream):
    async for events in stream.take_events(BATCH, within=WITHIN_S):
        await merge.handle(events)


@app.task
async def start_postgres_sink() -> None:
    await postgres_sink.start()


@app.on_before_shutdown.connect
async def stop_postgres_sink(sender, **kwargs) -> None:
    await postgres_sink.stop()


@app.on_partitions_revoked.connect
async def on_revoked(sender, revoked, **kwargs) -> None:
    merge.revoke({tp.partition for tp in revoked if tp.topic == settings.internal_topic})


@app.on_partitions_assigned.connect
async def on_assigned(sender, assigned, **kwargs) -> None:
    merge.assign({tp.partition for tp in assigned if tp.topic == settings.internal_topic})
