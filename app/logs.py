"""ACTIVITY_LOG_FORMAT=json: one JSON object a line, for log collectors.

`{"time": "2026-12-07T02:10:00.123Z", "level": "WARNING", "logger": "app.outages",
"message": "...", "exc": "Traceback ..."}` (`exc` only with a traceback). Faust's worker
sets up logging from `logging_config` (app/worker.py passes `logging_config()`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        line = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def logging_config(log_format: str) -> dict | None:
    """Faust's `logging_config` for the format: None keeps Faust's own (text)."""
    if log_format != "json":
        return None
    return {
        "merge": True,
        "version": 1,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
    }
