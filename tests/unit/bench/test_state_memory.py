"""bench/state_memory.py: the stateful logic's memory over a steady stream, no broker."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import state_memory
from tables import aggregator


def test_figures_sample_every_event_minute_and_name_what_is_held():
    got = state_memory.figures(aggregator, users=50, rate=200, minutes=3)
    assert [s["minute"] for s in got["samples"]] == [1, 2, 3]
    assert got["events"] == 3 * 60 * 200
    assert got["users_held"] == 50
    assert got["held"]["users"] == 50
    assert len(got["top"]) == 5


def test_another_version_of_the_aggregator_is_measured_from_its_path(tmp_path: Path):
    copy = tmp_path / "aggregator_then.py"
    shutil.copy(aggregator.__file__, copy)
    module = state_memory.load(str(copy))
    assert Path(module.__file__) == copy
    assert module.PartitionAggregator is not aggregator.PartitionAggregator
    assert state_memory.figures(module, users=10, rate=100, minutes=1)["events"] == 6_000
