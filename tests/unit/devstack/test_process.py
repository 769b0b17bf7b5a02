"""devstack.process.Background: the one way devstack and the bench start, watch and
stop a program in the background."""

from __future__ import annotations

import sys

import pytest

from devstack.process import Background, StackError, stop_together

SLEEP = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]


def test_a_program_with_a_pidfile_is_found_again_and_stopped(tmp_path):
    program = Background(tmp_path / "p.log", tmp_path / "p.pid")
    pid = program.start(SLEEP)
    again = Background(tmp_path / "p.log", tmp_path / "p.pid")  # a later launcher
    assert again.running_pid() == pid and program.alive()
    assert again.stop(grace_s=5) is True
    assert program.running_pid() is None and not (tmp_path / "p.pid").exists()
    assert again.stop() is False  # nothing left to stop


def test_without_a_pidfile_only_the_starter_knows_it(tmp_path):
    program = Background(tmp_path / "p.log")
    assert program.running_pid() is None and not program.alive()
    pid = program.start(SLEEP)
    assert program.running_pid() == pid
    program.kill()
    assert not program.alive()


def test_programs_are_stopped_together(tmp_path):
    programs = [Background(tmp_path / f"{i}.log") for i in range(3)]
    for program in programs:
        program.start(SLEEP)
    assert stop_together(programs, grace_s=5) is True
    assert not any(program.alive() for program in programs)


def test_a_program_that_exits_before_it_is_ready_is_reported_with_its_log(tmp_path):
    program = Background(tmp_path / "p.log", tmp_path / "p.pid")
    argv = [sys.executable, "-c", "print('no config here')"]
    with pytest.raises(StackError, match=r"(?s)thing did not start within 5s.*no config here"):
        program.start_until_ready(argv, lambda: False, 5, "thing did not start")
    assert program.running_pid() is None
