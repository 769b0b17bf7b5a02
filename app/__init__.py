"""Activity pipeline: `faust -A app worker` loads `app` and registers the agents."""

import agents  # noqa: F401  (registers the agents, timers and web views)
from app.faust_app import app

__all__ = ["app"]
