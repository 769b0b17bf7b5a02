"""The launcher's messages and choices that need no server (devstack/): a missing
program says what to install, a port held by another program is refused or stepped
over. Starting, reusing and stopping real servers: tests/integration/test_devstack.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import postgres, probes, stack
from devstack.kafka import KafkaBroker
from devstack.process import StackError, require

ROOT = Path(__file__).resolve().parents[3]


def test_a_missing_program_is_named_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: nothing found
    with pytest.raises(StackError, match=r"`java` is not installed\. Install a JDK 17\+"):
        KafkaBroker(tmp_path).classpath()
    with pytest.raises(StackError, match="`mvn` is not installed"):
        require("mvn", "Install Maven")


def test_missing_postgresql_binaries_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(StackError, match=r"initdb, pg_ctl\) not found\. Install the PostgreSQL"):
        postgres.find_bindir()


def test_the_command_line_says_what_is_missing_and_exits_2(tmp_path):
    """`python -m devstack infra` without java on the PATH, on ports nothing uses."""
    port = probes.next_free_port("127.0.0.1", 30500)
    env = {
        "PATH": str(Path(sys.executable).parent),  # python, and no java or mvn
        "STATE_DIR": str(tmp_path / "state"),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "HOME": os.environ.get("HOME", "/root"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "infra"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "error: `java` is not installed. Install a JDK 17+" in done.stderr
    assert done.stdout == ""  # no export lines for a stack that is not up


def test_a_port_held_by_another_program_is_refused_when_asked_for_and_stepped_over_else():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        never = lambda host, port: False  # noqa: E731 - whatever listens is not the service
        with pytest.raises(StackError, match=f"port {port} \\(KAFKA_BOOTSTRAP_SERVERS\\) is held"):
            stack._choose_port("Kafka", "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1", port, True, never)
        chosen, running = stack._choose_port(
            "Kafka", "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1", port, False, never
        )
        assert chosen > port and not running and probes.port_free("127.0.0.1", chosen)


def test_a_remote_address_where_nothing_answers_is_not_started_here():
    never = lambda host, port: False  # noqa: E731
    with pytest.raises(StackError, match="starts services on this machine only"):
        stack._choose_port("Kafka", "KAFKA_BOOTSTRAP_SERVERS", "kafka.example", 9092, True, never)
