"""`python -m bench.variant NAME -A app worker ...`: the worker built with one part
swapped through the composition root, to measure what that part costs.

Each variant is a function `(settings) -> (settings, build kwargs)`; the worker is
`app.worker.build(settings, **kwargs)`. Nothing is monkeypatched.

Bench-only: no setting reaches these variants.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from app.settings import Settings
from app.sinks.lake import LakePosition

NOWHERE = 2**62


class NoLake:
    """A lake that holds everything already and writes nothing."""

    def resume(self, partition: int) -> LakePosition:
        return LakePosition(NOWHERE, None)

    def commit(self, batches, stream_times) -> None:
        pass

    def maintain(self, now_ms: int) -> dict:
        return {}


Variant = Callable[[Settings], tuple[Settings, dict[str, Any]]]


def as_shipped(settings: Settings) -> tuple[Settings, dict[str, Any]]:
    return settings, {}


def no_lake(settings: Settings) -> tuple[Settings, dict[str, Any]]:
    """No Delta Lake table: the lake's own cost, for comparison."""
    return settings, {"lake": NoLake()}


def commit_every_1s(settings: Settings) -> tuple[Settings, dict[str, Any]]:
    """Source transactions every second instead of every COMMIT_INTERVAL (100 ms)."""
    return dataclasses.replace(settings, commit_interval_ms=1000), {}


VARIANTS: dict[str, Variant] = {
    "as-shipped": as_shipped,
    "no-lake": no_lake,
    "commit-every-1s": commit_every_1s,
}


def main() -> None:
    name, args = sys.argv[1], sys.argv[2:]
    from faust.cli.faust import cli

    import app
    from app.settings import get_settings
    from app.worker import build, default_to_uvloop

    default_to_uvloop()
    settings, kwargs = VARIANTS[name](get_settings())
    app._built["worker"] = build(settings, **kwargs)
    cli(args=args, prog_name="faust")


if __name__ == "__main__":
    main()
