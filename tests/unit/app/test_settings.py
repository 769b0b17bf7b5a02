"""Settings from the environment, transport security and secrets.

The variables and their defaults: docs/contract.md, Configuration.
"""

import ast
import logging
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import orjson
import pytest

from app.errors import ConfigError
from app.settings import (
    Settings,
    database_dsn,
    kafka_client_options,
    kafka_ssl_context,
    mask_url,
    parse_duration_ms,
    redact,
    url_secrets,
)


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


# -- transport security (docs/security.md) ------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]
SASL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_USERNAME": "pipeline",
    "KAFKA_SASL_PASSWORD": "kafka-s3cret",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, str]:
    """A self-signed certificate and its key (as CA file and as client certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("certs")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=kafka.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return {"cafile": str(cert), "certfile": str(cert), "keyfile": str(key)}


def test_security_defaults_are_plaintext_without_credentials():
    s = Settings.from_env({})
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert s.kafka_sasl_mechanism == "PLAIN"
    assert s.kafka_sasl_username is s.kafka_sasl_password is None
    assert s.kafka_ssl_cafile is s.kafka_ssl_certfile is s.kafka_ssl_keyfile is None
    assert s.database_ssl_rootcert is None
    assert kafka_client_options(s) == {"security_protocol": "PLAINTEXT"}
    assert kafka_ssl_context(s) is None
    assert database_dsn(s.database_url, s.database_ssl_rootcert) == s.database_url


def test_security_settings_are_read_and_normalised():
    s = Settings.from_env(
        {
            **SASL,
            "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_MECHANISM": "scram-sha-512",
            "KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem",
            "KAFKA_SSL_CERTFILE": "/etc/kafka/client.pem",
            "KAFKA_SSL_KEYFILE": "/etc/kafka/client.key",
            "DATABASE_SSL_ROOTCERT": "/etc/pg/root.crt",
        }
    )
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (s.kafka_sasl_username, s.kafka_sasl_password) == ("pipeline", "kafka-s3cret")
    assert s.kafka_ssl_cafile == "/etc/kafka/ca.pem"
    assert s.kafka_ssl_certfile == "/etc/kafka/client.pem"
    assert s.kafka_ssl_keyfile == "/etc/kafka/client.key"
    assert s.database_ssl_rootcert == "/etc/pg/root.crt"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({**SASL, "KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SSL_CAFILE": "/ca.pem"}, "KAFKA_SSL_CAFILE set but KAFKA_SECURITY_PROTOCOL"),
        ({**SASL, "KAFKA_SSL_CERTFILE": "/c.pem"}, "use SSL or SASL_SSL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/k.pem"},
            "KAFKA_SSL_KEYFILE set without KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_inconsistent_security_settings_are_config_errors(environ, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(environ)


def test_sasl_plaintext_maps_to_aiokafka_options():
    s = Settings.from_env(SASL)
    options = kafka_client_options(s)
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "pipeline",
        "sasl_plain_password": "kafka-s3cret",
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_mechanisms_pass_through(mechanism):
    s = Settings.from_env({**SASL, "KAFKA_SASL_MECHANISM": mechanism})
    assert kafka_client_options(s)["sasl_mechanism"] == mechanism


def test_ssl_builds_a_verifying_context_from_the_files(certs):
    s = Settings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CAFILE": certs["cafile"],
            "KAFKA_SSL_CERTFILE": certs["certfile"],
            "KAFKA_SSL_KEYFILE": certs["keyfile"],
        }
    )
    context = kafka_ssl_context(s)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(c.get("subject") == ((("commonName", "kafka.test"),),) for c in
               context.get_ca_certs())  # fmt: skip
    options = kafka_client_options(s, ssl_context=context)
    assert options == {"security_protocol": "SSL", "ssl_context": context}


def test_sasl_ssl_carries_both(certs):
    s = Settings.from_env(
        {**SASL, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SSL_CAFILE": certs["cafile"]}
    )
    context = kafka_ssl_context(s)
    options = kafka_client_options(s, ssl_context=context)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["ssl_context"] is context
    assert options["sasl_plain_password"] == "kafka-s3cret"


def test_ssl_without_a_cafile_verifies_against_the_system_cas():
    context = kafka_ssl_context(Settings(kafka_security_protocol="SSL"))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_missing_certificate_file_fails_at_startup():
    s = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile="/nonexistent/ca.pem")
    with pytest.raises(OSError):
        kafka_ssl_context(s)


async def test_the_stages_kafka_clients_get_the_security_options():
    """Both stages make their producers and consumers through KafkaClients."""
    from app.kafka_clients import KafkaClients

    clients = KafkaClients(Settings.from_env(SASL))
    producer = clients.producer("app-input-0")
    consumer = clients.consumer("app-source")
    for client in (producer.client, consumer._client):
        assert client._security_protocol == "SASL_PLAINTEXT"
        assert client._sasl_mechanism == "PLAIN"
        assert client._sasl_plain_username == "pipeline"
        assert client._sasl_plain_password == "kafka-s3cret"
    assert producer._txn_manager.transactional_id == "app-input-0"
    assert consumer._isolation_level == "read_committed"


def test_database_dsn_adds_the_root_certificate_and_keeps_sslmode():
    url = "postgresql://u:pw@db.example:5432/stream_data"
    assert database_dsn(url, "/etc/pg/root.crt") == (
        url + "?sslrootcert=/etc/pg/root.crt&sslmode=verify-full"
    )
    kept = database_dsn(url + "?sslmode=verify-ca", "/etc/pg/root.crt")
    assert kept == url + "?sslmode=verify-ca&sslrootcert=/etc/pg/root.crt"
    assert database_dsn(url + "?sslmode=require", None) == url + "?sslmode=require"


def test_postgres_sink_passes_tls_options_to_asyncpg():
    from app.sinks.postgres import PostgresSink

    url = "postgresql://u:pw@db.example:5432/stream_data?sslmode=require"
    plain = PostgresSink(url, ssl_rootcert=None).connect_options()
    assert plain["dsn"] == url
    verified = PostgresSink(url, ssl_rootcert="/etc/pg/root.crt").connect_options()
    assert verified["dsn"] == url + "&sslrootcert=/etc/pg/root.crt"


# -- secrets never shown ----------------------------------------------------------------


def test_mask_url_hides_a_password_parameter():
    masked = mask_url("postgresql://db/x?user=u&password=s3cret&sslmode=require")
    assert "s3cret" not in masked
    assert masked == "postgresql://db/x?user=u&password=***&sslmode=require"


def test_url_secrets_and_redact():
    url = "postgresql://u:p%40ss@db/x?password=other"
    assert set(url_secrets(url)) == {"p%40ss", "p@ss", "other"}
    text = "could not connect with p@ss (p%40ss) or other"
    assert redact(text, *url_secrets(url)) == "could not connect with *** (***) or ***"
    assert url_secrets("postgresql://u@db/x") == ()


def test_settings_repr_masks_secrets():
    s = Settings.from_env({**SASL, "DATABASE_URL": "postgresql://u:db-s3cret@db/x"})
    shown = repr(s)
    assert "db-s3cret" not in shown and "kafka-s3cret" not in shown
    assert "postgresql://u:***@db/x" in shown and "kafka_sasl_password='***'" in shown
    assert "kafka_sasl_username='pipeline'" in shown


def test_postgres_sink_shows_and_logs_only_the_masked_url():
    from app.sinks.postgres import PostgresSink

    sink = PostgresSink("postgresql://u:db-s3cret@db:5432/x", ssl_rootcert=None)
    assert sink.target == "postgresql://u:***@db:5432/x"
    sink._failed(OSError("auth as u:db-s3cret@db failed"))
    health = sink.health
    assert health.target == sink.target
    assert health.last_error == "OSError: auth as u:***@db failed"
    assert (health.errors, health.consecutive_errors) == (1, 1) and health.failing_since
    sink._succeeded()
    assert health.consecutive_errors == 0 and health.failing_since is None
    assert health.errors == 1 and health.last_success_at


# -- SQL only with parameters ---------------------------------------------------------------

SQL_WORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES|FROM|INTO|SET|JOIN)\b")
EXECUTES = {"execute", "executemany", "fetch", "fetchval", "fetchrow", "copy_records_to_table"}


def _sql_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.JoinedStr):  # an f-string that reads as SQL
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if SQL_WORD.search(text):
                problems.append(f"{where}: f-string SQL")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
            and SQL_WORD.search(str(node.func.value.value))
        ):
            problems.append(f"{where}: str.format SQL")
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, (ast.Mod, ast.Add))
            and any(
                isinstance(side, ast.Constant)
                and isinstance(side.value, str)
                and SQL_WORD.search(side.value)
                for side in (node.left, node.right)
            )
        ):
            problems.append(f"{where}: SQL built with % or +")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in EXECUTES
            and node.args
            and not isinstance(node.args[0], (ast.Name, ast.Constant, ast.Attribute))
            and not (  # the DDL file, read as is
                isinstance(node.args[0], ast.Call)
                and isinstance(node.args[0].func, ast.Attribute)
                and node.args[0].func.attr == "read_text"
            )
        ):
            problems.append(f"{where}: {node.func.attr}() with computed SQL")
    return problems


@pytest.mark.parametrize("relative", ["app/sinks/postgres.py", "app/web/queries.py"])
def test_sql_is_constant_text_with_parameters(relative):
    assert _sql_problems(ROOT / relative) == []


def test_the_sql_check_catches_interpolation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "async def f(conn, user):\n"
        "    await conn.fetch(f\"SELECT * FROM t WHERE u = '{user}'\")\n"
        "    await conn.execute(\"DELETE FROM t WHERE u = '%s'\" % user)\n"
        "    await conn.fetchval('SELECT {}'.format(user))\n"
        "    await conn.fetchrow('SELECT * FROM t WHERE u = ' + user)\n"
    )
    assert len(_sql_problems(bad)) >= 4


def test_max_future_from_is_an_instant_and_unset_means_the_wall_clock():
    assert Settings.from_env({}).max_future_from_ms is None
    s = Settings.from_env({"MAX_FUTURE_FROM": "2026-01-29T10:00:00Z"})
    assert s.max_future_from_ms == 1_769_680_800_000
    with pytest.raises(ConfigError, match="MAX_FUTURE_FROM"):
        Settings.from_env({"MAX_FUTURE_FROM": "tomorrow"})


def test_prefixed_names_are_read_and_win_over_the_old_ones(caplog):
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        s = Settings.from_env(
            {"ACTIVITY_WEB_PORT": "7000", "WEB_PORT": "7001", "ACTIVITY_LATENESS": "1m"}
        )
    assert s.web_port == 7000 and s.lateness_ms == 60_000
    assert caplog.records == []  # nothing read under an old name


def test_old_names_still_work_with_one_deprecation_line(caplog):
    with caplog.at_level(logging.WARNING, logger="app.settings"):
        s = Settings.from_env({"WEB_PORT": "7001", "STATE_DIR": "/tmp/s", "LATENESS": "5s"})
    assert (s.web_port, s.state_dir, s.lateness_ms) == (7001, "/tmp/s", 5000)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "WEB_PORT" in line and "ACTIVITY_STATE_DIR" in line and "deprecated" in line


def test_an_unknown_prefixed_variable_is_refused_with_the_closest_name():
    with pytest.raises(ConfigError, match=r"ACTIVITY_LATENES \(did you mean ACTIVITY_LATENESS\?\)"):
        Settings.from_env({"ACTIVITY_LATENES": "1m"})
    with pytest.raises(ConfigError, match="unknown settings: ACTIVITY_A, ACTIVITY_ZZZ"):
        Settings.from_env({"ACTIVITY_ZZZ": "1", "ACTIVITY_A": "2"})
    # other programs' variables are not ours to judge
    assert Settings.from_env({"PIPELINE_FAILPOINTS": "x", "WEB_PORTS": "1"}) == Settings()


def test_log_format_is_text_or_json():
    assert Settings.from_env({"ACTIVITY_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="ACTIVITY_LOG_FORMAT='xml' is not text or json"):
        Settings.from_env({"ACTIVITY_LOG_FORMAT": "xml"})


def test_json_log_lines():
    from app.logs import JsonFormatter, logging_config

    record = logging.LogRecord("app.x", logging.WARNING, __file__, 1, "p %d", (3,), None)
    record.created = 1_796_608_800.5
    line = orjson.loads(JsonFormatter().format(record))
    assert line == {
        "time": "2026-12-07T02:00:00.500Z",
        "level": "WARNING",
        "logger": "app.x",
        "message": "p 3",
    }
    assert logging_config("text") is None
    assert logging_config("json")["handlers"]["default"]["formatter"] == "json"
