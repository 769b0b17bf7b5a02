"""Thin Faust agents: receive, call app/ processors, emit; and the read-only web views."""

from agents import ingest, merge  # noqa: F401
from app import web  # noqa: F401  (registers the web views and the dashboard)
