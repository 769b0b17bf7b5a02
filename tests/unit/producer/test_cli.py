"""`python -m producer` options (issue 30): --bootstrap-servers, --quiet, --late-ratio."""

from __future__ import annotations

import pytest

from producer.__main__ import parse_args


def test_defaults_and_the_new_options() -> None:
    args = parse_args([])
    assert (args.bootstrap_servers, args.quiet, args.late_ratio) == (None, False, 0.05)
    args = parse_args(["--bootstrap-servers", "k1:9092,k2:9092", "--quiet", "--late-ratio", "0.2"])
    assert (args.bootstrap_servers, args.quiet, args.late_ratio) == ("k1:9092,k2:9092", True, 0.2)


@pytest.mark.parametrize("ratio", ["-0.1", "1.5"])
def test_a_ratio_outside_zero_to_one_is_refused(ratio, capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--late-ratio", ratio])
    assert "--late-ratio and --bad-ratio must be between 0 and 1" in capsys.readouterr().err
