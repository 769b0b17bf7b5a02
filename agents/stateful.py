"""The stateful stage's Faust agent: windows, distinct users and sessions per user-keyed
partition, committed with their changelog in Kafka transactions (app/stateful/).

The agent runs the stage's loop, which reads the user-keyed topic with its own
aiokafka consumer and hands whole fetched batches to the aggregators: Faust's
per-record stream was the measured bottleneck, and a Faust table cannot commit its
changelog in the transaction that moves its input. So the agent's own channel stays
empty; what it runs is `StatefulStage.run`, and Faust restarts it if it crashes.
"""

from __future__ import annotations


def register(worker) -> None:
    app, stage = worker.app, worker.stateful

    @app.agent(name="stateful")
    async def stateful(unused_channel) -> None:
        await stage.run()

    @app.task
    async def stateful_stage() -> None:
        await app.add_runtime_dependency(stage)
