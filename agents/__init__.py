"""Thin Faust agents: receive, call app/ processors, emit."""

from agents import ingest, merge  # noqa: F401
