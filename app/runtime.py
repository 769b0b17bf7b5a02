"""The worker's single instances of its processors and sinks, wired to the Faust app."""

from __future__ import annotations

from app.faust_app import app, settings, state_table
from app.ingest import IngestProcessor
from app.merge import MergeProcessor
from app.sinks.postgres import PostgresSink
from app.stats import Stats

stats = Stats()


postgres_sink = PostgresSink(settings.database_url, settings.sink_flush_ms)
ingest = IngestProcessor(settings, app.consumer, stats)
merge = MergeProcessor(settings, state_table, postgres_sink)

# Table changelog writes go through Faust's producer buffer (100 by default, then it
# logs "buffer full" and waits); one batch writes thousands of keys.
app.producer.buffer.max_messages = 50_000
