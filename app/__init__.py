"""Activity pipeline. `faust -A app worker` loads `app.app`, built on first access."""

from __future__ import annotations

from typing import Any

_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name not in ("app", "worker"):
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    if "worker" not in _built:
        from app.settings import get_settings
        from app.worker import build, default_to_uvloop

        default_to_uvloop()
        _built["worker"] = build(get_settings())
    worker = _built["worker"]
    return worker if name == "worker" else worker.app
