"""The composition root wires the parts the guarantees rest on."""

from __future__ import annotations

from app.settings import Settings
from app.stateful.fenced_store import FencedStore


def test_the_state_table_replays_only_its_current_writers_records(tmp_path):
    from app.worker import build

    worker = build(Settings.from_env({"STATE_DIR": str(tmp_path)}))
    store = worker.merge.store.table.data
    assert isinstance(store, FencedStore)
    assert store.partition_path(0).name.startswith("merge-state-")  # files named as before
