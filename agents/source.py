"""The source stage (app/source/): `user_activity` -> enriched, dead letters, the lake
and the user-keyed topic. A service with its own aiokafka loop, started with the app:
Faust's per-record path was the measured bottleneck of this hot path."""

from __future__ import annotations


def register(worker) -> None:
    app = worker.app

    @app.task
    async def source_stage() -> None:
        await app.add_runtime_dependency(worker.source)
