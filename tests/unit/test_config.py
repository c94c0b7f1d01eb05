import pytest

from brokerguard import config
from brokerguard.errors import ConfigError


def error_of(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config.parse(text, source="gw.yaml")
    return str(caught.value)


def test_defaults_need_only_an_adapter_section():
    settings = config.parse("kafka: {}")
    assert settings.kafka.listen.port == 19092
    assert settings.kafka.listen.broker_ports.port_for(1) == 19094
    assert settings.kafka.upstream.addresses == [("127.0.0.1", 9092)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("kafka: {listen: {port: x}}", "gw.yaml: Expected `int`, got `str` - at `$.kafka.listen.port`"),
        ("kafka: {listen: {port: 70000}}", "`port` must be a TCP port from 1 to 65535, got 70000 - at `$.kafka.listen`"),
        ("kafka: {listen: {prot: 1}}", "Object contains unknown field `prot` - at `$.kafka.listen`"),
        ("kafka: {listen: {port: 19094}}", "`port` 19094 overlaps `broker_ports` - at `$.kafka.listen`"),
        ("kafka: {listen: {host: 0.0.0.0}}", "set `advertised_host`: clients cannot connect to 0.0.0.0"),
        ("kafka: {upstream: {bootstrap_servers: [nohost]}}", "`nohost` is not HOST:PORT - at `$.kafka.upstream`"),
        ("kafka: {upstream: {security_protocol: SASL_SSL}}", "`sasl` is required with security_protocol SASL_SSL"),
        ("kafka: {upstream: {security_protocol: TLS}}", "Invalid enum value 'TLS' - at `$.kafka.upstream.security_protocol`"),
        ("kafka: {upstream: {security_protocol: SASL_PLAINTEXT, sasl: {username: gw, password: a, password_env: B}}}",
         "give exactly one of `password_env`, `password_file`, `password` - at `$.kafka.upstream.sasl`"),
        ("kafka: {upstream: {security_protocol: SASL_PLAINTEXT, sasl: {username: gw, password_env: BG_UNSET_VAR}}}",
         "environment variable BG_UNSET_VAR is not set"),
        ("workers: 0\nkafka: {}", "`workers` must be at least 1"),
        ("{}", "no adapter is configured: add a `kafka` section"),
        ("kafka: [", "gw.yaml: not valid YAML"),
    ],
)
def test_mistakes_name_the_key_and_why(text, message):
    assert message in error_of(text)


def test_password_comes_from_env_or_file_and_never_prints(tmp_path, monkeypatch):
    monkeypatch.setenv("BG_PASSWORD", "s3cret-env")
    settings = config.parse(
        "kafka: {upstream: {security_protocol: SASL_PLAINTEXT, sasl: {username: gw, password_env: BG_PASSWORD}}}")
    secret = settings.kafka.upstream.sasl.secret()
    assert secret.reveal() == "s3cret-env"
    assert "s3cret" not in repr(secret) + str(secret) + repr(settings)

    password_file = tmp_path / "pw"
    password_file.write_text("s3cret-file\n")
    settings = config.parse(
        "kafka: {upstream: {security_protocol: SASL_SSL, "
        f"sasl: {{username: gw, password_file: {password_file}}}}}}}")
    assert settings.kafka.upstream.sasl.secret().reveal() == "s3cret-file"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "absent.yaml")
