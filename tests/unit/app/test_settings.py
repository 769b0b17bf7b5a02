"""Settings from the environment (SPEC section 7)."""

import pytest

from app.errors import ConfigError
from app.settings import Settings, mask_url, parse_duration_ms


def test_empty_environment_gives_the_documented_defaults():
    s = Settings.from_env({})
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.database_url == "postgresql://user:password@localhost:5432/stream_data"
    assert s.lake_dir == "data/lake"
    assert (s.lateness_ms, s.session_timeout_ms) == (120_000, 900_000)
    assert (s.idle_advance_ms, s.max_future_ms) == (30_000, 300_000)
    assert s.web_port == 6066


def test_durations_accept_units_and_bare_numbers_as_seconds():
    s = Settings.from_env(
        {"LATENESS": "2m", "SESSION_TIMEOUT": "30s", "IDLE_ADVANCE": "1500ms", "MAX_FUTURE": "90"}
    )
    assert s.lateness_ms == 120_000
    assert s.session_timeout_ms == 30_000
    assert s.idle_advance_ms == 1_500
    assert s.max_future_ms == 90_000


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1h", 3_600_000), ("1.5m", 90_000), ("15min", 900_000), (" 30s ", 30_000), ("0", 0)],
)
def test_more_duration_forms(text, ms):
    assert parse_duration_ms("X", text) == ms


def test_plain_and_whole_number_settings_are_read():
    s = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "DATABASE_URL": "postgresql://a:b@db/x",
            "LAKE_DIR": "/tmp/lake",
            "WEB_PORT": "7000",
        }
    )
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert s.database_url == "postgresql://a:b@db/x"
    assert s.lake_dir == "/tmp/lake"
    assert s.web_port == 7000


def test_empty_value_keeps_the_default():
    assert Settings.from_env({"LATENESS": "", "WEB_PORT": ""}) == Settings()


@pytest.mark.parametrize("text", ["soon", "2 weeks", "-5s", "5d", "1e3", "m", "1,5s"])
def test_garbage_duration_is_a_config_error_naming_the_variable(text):
    with pytest.raises(ConfigError, match="LATENESS"):
        Settings.from_env({"LATENESS": text})


def test_garbage_whole_number_is_a_config_error_naming_the_variable():
    with pytest.raises(ConfigError, match="WEB_PORT"):
        Settings.from_env({"WEB_PORT": "http"})


def test_mask_url_hides_the_password():
    masked = mask_url("postgresql://user:s3cret@localhost:5432/stream_data")
    assert masked == "postgresql://user:***@localhost:5432/stream_data"


def test_mask_url_hides_a_password_containing_at_and_colon():
    masked = mask_url("postgresql://user:p:a@ss@db:5432/x")
    assert "p:a@ss" not in masked
    assert masked == "postgresql://user:***@db:5432/x"


@pytest.mark.parametrize(
    "url", ["postgresql://user@localhost/db", "postgresql://localhost/db", "localhost:9092"]
)
def test_mask_url_leaves_urls_without_a_password_alone(url):
    assert mask_url(url) == url
