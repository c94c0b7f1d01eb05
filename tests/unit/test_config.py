import pytest

from brokerguard import config
from brokerguard.errors import ConfigError


def error_of(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config.parse(text, source="gw.yaml")
    return str(caught.value)


IDENTITY = "identity: {credentials_file: users.json}\n"


def test_defaults_need_only_an_adapter_and_a_way_to_log_in():
    settings = config.parse(IDENTITY + "kafka: {}")
    assert settings.kafka.listen.port == 19092
    assert settings.rules.dir == "rules" and settings.state.sqlite_path == ".brokerguard/state.db"
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
        (IDENTITY + "kafka: {}\naudit: {digest: md5}", "Invalid enum value 'md5' - at `$.audit.digest`"),
    ],
)
def test_mistakes_name_the_key_and_why(text, message):
    assert message in error_of(text)


def test_password_comes_from_env_or_file_and_never_prints(tmp_path, monkeypatch):
    monkeypatch.setenv("BG_PASSWORD", "s3cret-env")
    settings = config.parse(
        IDENTITY + "kafka: {upstream: {security_protocol: SASL_PLAINTEXT, sasl: {username: gw, password_env: BG_PASSWORD}}}")
    secret = settings.kafka.upstream.sasl.secret()
    assert secret.reveal() == "s3cret-env"
    assert "s3cret" not in repr(secret) + str(secret) + repr(settings)

    password_file = tmp_path / "pw"
    password_file.write_text("s3cret-file\n")
    settings = config.parse(
        IDENTITY + "kafka: {upstream: {security_protocol: SASL_SSL, "
        f"sasl: {{username: gw, password_file: {password_file}}}}}}}")
    assert settings.kafka.upstream.sasl.secret().reveal() == "s3cret-file"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "absent.yaml")


def test_clients_need_a_way_to_authenticate():
    with pytest.raises(ConfigError, match="clients have no way to authenticate"):
        config.parse("kafka: {}")


@pytest.mark.parametrize(
    "text, message",
    [
        ("identity: {oidc: {issuer: https://id.example, audience: []}}\nkafka: {}", "`audience` needs at least one value"),
        ("identity: {oidc: {issuer: https://id.example, audience: [x], algorithms: [HS256]}}\nkafka: {}",
         "Invalid enum value 'HS256' - at `$.identity.oidc.algorithms[0]`"),
        ("identity: {credentials_file: u.json}\nstate: {poll_interval_ms: 5000}\nkafka: {}",
         "revocation must act within a second"),
        ("identity: {credentials_file: u.json}\nkafka: {listen: {tls: {cert_file: /nope, key_file: /nope}}}",
         "`cert_file` /nope is not a readable file"),
    ],
)
def test_identity_and_state_mistakes_name_the_key(text, message):
    with pytest.raises(ConfigError) as err:
        config.parse(text, source="gw.yaml")
    assert message in str(err.value)
