"""docs/metrics.md lists exactly the families /metrics serves, and the Grafana
dashboard (docs/grafana-dashboard.json) queries only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.outages import Outages
from app.web.prometheus import render
from tests.unit.app.web.test_prometheus import snapshot

ROOT = Path(__file__).resolve().parents[4]
DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
# PromQL words that look like metric names but are not
PROMQL = {
    "sum", "by", "rate", "increase", "histogram_quantile", "min", "max", "time", "or",
    "vector", "le", "sink", "stage", "reason", "instance", "job", "dependency", "m",
}  # fmt: skip


def served() -> dict[str, str]:
    """Family name -> type, with every series a family has (a dependency registered)."""
    outages = Outages()
    outages.register("kafka", "127.0.0.1:9092")
    text = render(snapshot(dependencies=outages.snapshot()))
    return {
        line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")
    }


def documented() -> dict[str, str]:
    rows = re.findall(r"^\| `(pipeline_\w+)` \| (\w+) \|", DOC.read_text(), re.M)
    return dict(rows)


def test_the_doc_lists_every_family_and_its_type() -> None:
    families = {n: t for n, t in served().items() if n.startswith("pipeline_")}
    assert documented() == families


def test_the_doc_names_the_process_metrics() -> None:
    text = DOC.read_text()
    for name in served():
        if name.startswith("process_"):
            assert f"`{name}`" in text, name


def test_every_metric_the_grafana_dashboard_queries_exists() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    families = served()
    series = set(families)
    series |= {
        f"{n}_{s}"
        for n, t in families.items()
        if t == "histogram"
        for s in ("bucket", "sum", "count")
    }
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) >= 10 and exprs
    for expr in exprs:
        without_strings = re.sub(r'"[^"]*"', "", expr)
        without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
        names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges)) - PROMQL
        names = {n for n in names if not re.fullmatch(r"e\d*|\d+", n)}
        assert names, expr
        assert names <= series, f"{expr}: {sorted(names - series)} not served"
    labels = {"sink", "stage", "reason", "dependency", "partition", "le", "instance", "job"}
    for expr in exprs:
        for used in re.findall(r"by \(([^)]*)\)", expr):
            assert {x.strip() for x in used.split(",")} <= labels, expr


def test_the_doc_lists_the_dashboard_panels() -> None:
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    listed = re.findall(r"^- (.+)$", DOC.read_text().split("## Grafana", 1)[1], re.M)
    assert listed == titles
