"""The stateful stage's Faust agent: batches of user-keyed records into the processor."""

from __future__ import annotations

BATCH = 5_000
WITHIN_S = 0.2  # longer batches: fewer state writes per event, PostgreSQL ~0.2 s later


def register(worker, topic) -> None:
    app, merge, settings = worker.app, worker.merge, worker.settings

    @app.agent(topic, name="merge")
    async def merge_agent(stream):
        async for events in stream.take_events(BATCH, within=WITHIN_S):
            await merge.handle(events)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked, **kwargs) -> None:
        merge.revoke({tp.partition for tp in revoked if tp.topic == settings.internal_topic})

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs) -> None:
        merge.assign(
            {tp.partition for tp in assigned if tp.topic == settings.internal_topic},
            app.consumer_generation_id,
        )
