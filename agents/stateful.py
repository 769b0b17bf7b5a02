"""The stateful stage (app/stateful/): the user-keyed topic -> windows, distinct users
and sessions per partition, committed with their changelog in Kafka transactions, and
their rows to PostgreSQL. A service with its own aiokafka loop, started with the app,
as the source stage: Faust's per-record stream was the measured bottleneck, and a
Faust table cannot commit its changelog in the transaction that moves its input."""

from __future__ import annotations


def register(worker) -> None:
    app = worker.app

    @app.task
    async def stateful_stage() -> None:
        await app.add_runtime_dependency(worker.stateful)
