"""`python -m app.tail` (issue 30): options and the line it prints."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord

from app.tail import is_late, line, parse_args


def test_options() -> None:
    args = parse_args(["enriched_activity"])
    assert (args.topic, args.max, args.late, args.follow) == ("enriched_activity", 5, False, False)
    args = parse_args(["user_activity_dlq", "-n", "3", "--late", "--bootstrap-servers", "k:1"])
    assert (args.max, args.late, args.bootstrap_servers) == (3, True, "k:1")
    with pytest.raises(SystemExit):
        parse_args(["t", "-n", "0"])


def record(value: bytes | None, key=b"u1", headers=()):
    return ConsumerRecord("t", 2, 17, 0, 0, key, value, None, 0, 0, list(headers))


def test_a_line_per_record_with_its_headers() -> None:
    assert line(record(b'{"late":true}')) == '2/17 u1 {"late":true}'
    dead = record(b"{oops", key=None, headers=[("reason", b"invalid_json")])
    assert line(dead) == '2/17 - {oops  headers={"reason":"invalid_json"}'


def test_late_is_read_from_the_value() -> None:
    assert is_late(b'{"late": true}')
    assert not is_late(b'{"late": false}')
    assert not is_late(b"{oops") and not is_late(None) and not is_late(b"[1]")
