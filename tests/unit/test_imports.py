"""Nothing is built at import: the pure modules, the producer and the settings load
without Faust (the worker is built by app.worker.build, on first use of `app.app`)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["tables.aggregator", "producer.simulator", "app.events", "app.settings", "app"]
)
def test_importing_does_not_load_faust(module):
    code = f"import sys, {module}; print('faust' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
