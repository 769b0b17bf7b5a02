"""The changelog's names and record values."""

import pytest

from app.stateful import changelog


def test_values_round_trip_and_another_format_is_refused_by_name():
    raw = changelog.encode([[1], None])
    assert changelog.decode(raw) == [[1], None]
    assert changelog.decode(None) is None
    with pytest.raises(changelog.StateFormatError, match="format 1"):
        changelog.decode(bytes([1]) + raw[1:])


def test_earlier_state_topics_are_a_faust_tables_and_other_formats_of_this_app():
    current = changelog.topic_name("app", 4)
    topics = [
        current,
        "app-merge-state-changelog",
        "app-stateful-v1-pv60s-au300s-hop60s-p4-changelog",
        "app-by-user",
        "other-stateful-v1-pv60s-au300s-hop60s-p4-changelog",
    ]
    assert changelog.earlier_state_topics("app", topics, current) == [
        "app-merge-state-changelog",
        "app-stateful-v1-pv60s-au300s-hop60s-p4-changelog",
    ]
