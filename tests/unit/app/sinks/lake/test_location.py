"""LAKE_URI / LAKE_DIR: a folder or an object-store URI, its options from the environment,
its secrets nowhere in what is shown."""

import os
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.settings import Settings
from app.sinks.lake.location import LakeLocation, resolve

S3_ENV = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-secret",
    "AWS_SESSION_TOKEN": "session-token-value",
    "AWS_REGION": "eu-west-1",
    "AWS_ALLOW_HTTP": "true",
    "AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",  # for the AWS CLI, not delta-rs
    "GOOGLE_SERVICE_ACCOUNT": "/not/for/s3.json",
    "UNRELATED": "x",
}


def test_the_default_is_the_folder_data_lake():
    lake = Settings.from_env({}).lake
    assert lake.local and lake.uri == str(Path("data/lake").absolute())
    assert lake.storage_options == {}


@pytest.mark.parametrize("value", ["/tmp/lake", "file:///tmp/lake", "/tmp/lake/"])
def test_a_path_or_file_uri_is_a_folder(value):
    lake = resolve(value, S3_ENV)
    assert lake.local and Path(lake.uri) == Path("/tmp/lake")
    assert lake.storage_options == {}  # no AWS option for a folder


def test_s3_takes_the_aws_variables_and_conditional_puts():
    lake = resolve("s3://lake/events/", S3_ENV)
    assert not lake.local and lake.uri == "s3://lake/events"
    # every AWS_* but the CLI's CA bundle, and the conditional puts
    wanted = {k: v for k, v in S3_ENV.items() if k.startswith("AWS_") and k != "AWS_CA_BUNDLE"}
    assert lake.storage_options == {**wanted, "AWS_CONDITIONAL_PUT": "etag"}


def test_a_locking_provider_chosen_by_the_user_is_kept():
    env = {"AWS_S3_LOCKING_PROVIDER": "dynamodb", "DELTA_DYNAMO_TABLE_NAME": "t"}
    options = resolve("s3://lake/x", env).storage_options
    assert "AWS_CONDITIONAL_PUT" not in options
    assert options["AWS_S3_LOCKING_PROVIDER"] == "dynamodb"


@pytest.mark.parametrize(
    ("uri", "prefix"),
    [("gs://bucket/lake", "GOOGLE_"), ("az://container/lake", "AZURE_")],
)
def test_gcs_and_azure_pass_their_variables_through(uri, prefix):
    env = {f"{prefix}SOME_OPTION": "v", "AWS_REGION": "x"}
    assert resolve(uri, env).storage_options == {f"{prefix}SOME_OPTION": "v"}


@pytest.mark.parametrize(
    ("value", "says"),
    [("hdfs://nn/lake", "unknown scheme"), ("s3:///prefix", "no bucket"), ("  ", "empty")],
)
def test_a_bad_location_is_a_config_error(value, says):
    with pytest.raises(ConfigError, match=says):
        Settings.from_env({"LAKE_URI": value})


def test_lake_uri_wins_over_lake_dir_and_lake_dir_takes_a_uri_too():
    both = Settings.from_env({"LAKE_DIR": "data/lake", "LAKE_URI": "s3://a/b", **S3_ENV})
    assert both.lake.uri == "s3://a/b"
    only_dir = Settings.from_env({"LAKE_DIR": "s3://a/c", **S3_ENV})
    assert only_dir.lake.uri == "s3://a/c"
    assert only_dir.lake.storage_options["AWS_REGION"] == "eu-west-1"


def test_secrets_are_masked_in_every_form_shown():
    settings = Settings.from_env({"LAKE_URI": "s3://lake/events", **S3_ENV})
    secrets = ("wJalrXUtnFEMI-secret", "session-token-value")
    lake = settings.lake
    shown = [repr(settings), repr(lake), str(lake), lake.target]
    for text in shown:
        for secret in secrets:
            assert secret not in text
    assert "AWS_SECRET_ACCESS_KEY" in repr(settings)  # named, value masked
    error = "request failed: key=wJalrXUtnFEMI-secret token=session-token-value"
    assert lake.redact(error) == "request failed: key=*** token=***"


def test_user_info_in_a_uri_is_masked():
    lake = LakeLocation("az://account:topsecret@container/lake")
    assert "topsecret" not in lake.target
    assert lake.redact("failed for az://account:topsecret@container") == (
        "failed for az://account:***@container"
    )


def test_a_uri_with_user_info_is_masked_in_the_settings_repr():
    settings = Settings.from_env({"LAKE_URI": "az://account:topsecret@container/lake"})
    assert "topsecret" not in repr(settings)


def test_the_table_takes_a_uri_and_the_environment_s_options(monkeypatch):
    from app.sinks.lake import LakeTable

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    table = LakeTable("s3://lake/events", "app")
    assert table.path == "s3://lake/events"
    assert table.options == {"AWS_REGION": "eu-west-1", "AWS_CONDITIONAL_PUT": "etag"}
    assert LakeTable("relative/lake", "app").path == str(Path("relative/lake").absolute())
