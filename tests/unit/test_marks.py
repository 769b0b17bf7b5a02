"""The marks select what they say: `-m integration` is every test under
tests/integration and nothing else, `-m "not slow"` leaves out every slow test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(expression: str) -> set[str]:
    """The ids `pytest -m expression` would run (collection only: no server needed)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", expression, "tests"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, 5), result.stdout[-3000:] + result.stderr[-3000:]
    return {line for line in result.stdout.splitlines() if "::" in line}


def test_integration_selects_every_test_under_tests_integration_and_nothing_else():
    everything = collected("")
    integration = collected("integration")
    under = {t for t in everything if t.startswith("tests/integration/")}
    assert under, "no integration tests collected"
    assert integration == under
    files = {t.split("::")[0] for t in integration}
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "tests/integration").glob("test_*.py")}
    assert files == on_disk  # every module, not only those with a pytestmark of their own


def test_not_slow_leaves_out_the_slow_tests():
    slow = collected("slow")
    assert "tests/integration/test_outages.py" in {t.split("::")[0] for t in slow}
    assert not slow & collected("not slow")
