"""The sections a run measures, in order, and the result they make together."""

from __future__ import annotations

import argparse
import asyncio

from bench import changelog, lake, report, scaleout, throughput
from bench.harness import Harness
from bench.live import live_latency, soak
from bench.mechanisms import mechanisms
from bench.memory import memory
from devstack.process import say

DEFAULT_SECTIONS = (
    "ceiling",
    "pipeline",
    "recovery",
    "scaleout",
    "memory",
    "latency",
    "latency10k",
    "lake",
    "changelog",
    "mechanisms",
)
# run only when asked for (--soak-minutes N)
SECTIONS = (*DEFAULT_SECTIONS, "soak")


def sections_of(args: argparse.Namespace) -> set[str]:
    """The sections `args` asks for; SystemExit on a request that cannot run."""
    sections = set(args.only.split(",")) if args.only else set(DEFAULT_SECTIONS)
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
    if args.soak_minutes > 0:
        sections.add("soak")
    elif "soak" in sections:
        raise SystemExit("the soak section needs --soak-minutes N")
    if args.profile and "pipeline" not in sections:
        raise SystemExit("--profile records the pipeline section's catch-up")
    return sections


async def run(args: argparse.Namespace, bootstrap: str, database_url: str) -> dict:
    sections = sections_of(args)
    h = Harness(args, bootstrap, database_url)
    result: dict = {
        "machine": report.machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    if sections & {"ceiling", "pipeline", "recovery", "scaleout"}:
        result.update(await _backlog_sections(h, sections))
    if "memory" in sections:
        result["memory"] = await memory(h, args.memory_users, args.memory_events)
    if "latency" in sections:
        result["latency"] = await live_latency(
            h, "latency", args.latency_rate, args.latency_seconds
        )
    if "latency10k" in sections:
        result["latency10k"] = await live_latency(
            h, "latency10k", args.latency10k_rate, args.latency10k_seconds
        )
    if "lake" in sections:
        events = args.lake_events
        say(f"lake: write cost, files per day and DuckDB reads over {events:,} events...")
        result["lake"] = await asyncio.to_thread(lake.figures, h.work / "lake", events=events)
    if "changelog" in sections:
        say("changelog: one record per changed key vs one per commit + snapshots...")
        result["changelog"] = await asyncio.to_thread(changelog.figures)
    if "mechanisms" in sections:
        result["mechanisms"] = await mechanisms(h)
    if "soak" in sections:
        result["soak"] = await soak(h)
    h.finish()  # not reached when a section fails: the workers' logs are kept
    return result


async def _backlog_sections(h: Harness, sections: set[str]) -> dict:
    """The sections that read one shared backlog: ceiling, scaleout, pipeline, recovery."""
    args = h.args
    topic, backlog = await h.backlog("backlog", args.events, args.users)
    result: dict = {"backlog": backlog}
    if "ceiling" in sections:
        result["ceiling"] = await throughput.ceiling(h, topic, args.events)
    if "scaleout" in sections:  # before recovery adds events to the backlog
        result["scaleout"] = await scaleout.scaleout(h, topic, backlog, args.scaleout_workers)
    if sections & {"pipeline", "recovery"}:
        result.update(
            await throughput.pipeline_and_recovery(
                h, topic, backlog, recover="recovery" in sections
            )
        )
    if "ceiling" in result and "pipeline" in result:
        result["ratio_pipeline_to_ceiling"] = round(
            result["pipeline"]["events_per_s"] / result["ceiling"]["events_per_s_median"], 4
        )
    return result
