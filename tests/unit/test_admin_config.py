"""The `admin` section: mistakes fail at load with the key and what to do."""

import pytest

from brokerguard import config
from brokerguard.errors import ConfigError

BASE = "identity: {credentials_file: users.json}\nkafka: {}\n"
TOKEN = "a-token-of-twenty-six-chars"


def parse(admin: str):
    return config.parse(BASE + f"admin: {admin}\n", source="gw.yaml")


def error_of(admin: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(admin)
    return str(caught.value)


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("BG_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("BG_SHORT_TOKEN", "short")
    monkeypatch.setenv("BG_REPLAY_PASSWORD", "replay-secret")
    monkeypatch.delenv("BG_UNSET_VAR", raising=False)


def test_no_admin_section_means_no_admin_server():
    assert config.parse(BASE).admin is None


def test_a_token_from_the_environment_and_replay_credentials():
    admin = parse("{listen: '0.0.0.0:19000', token_env: BG_ADMIN_TOKEN, replay_username: tester, "
                  "replay_password_env: BG_REPLAY_PASSWORD}").admin
    assert admin.address == ("0.0.0.0", 19000)
    assert admin.token().reveal() == TOKEN and admin.replay_password().reveal() == "replay-secret"
    assert admin.replay_mechanism == "SCRAM-SHA-512"
    assert TOKEN not in repr(admin.token()) and "replay-secret" not in repr(admin.replay_password())


@pytest.mark.parametrize("listen", ["127.0.0.1:19000", "localhost:19000", "[::1]:19000"])
def test_loopback_may_go_without_a_token_when_the_config_says_so(listen):
    admin = parse(f"{{listen: '{listen}', allow_unauthenticated_loopback: true}}").admin
    assert admin.token() is None and admin.replay_password() is None


@pytest.mark.parametrize(
    "admin, message",
    [
        ("{}", "`token_env` is required: name the environment variable holding the admin API's bearer token "
               "(or, on a loopback `listen` only, set `allow_unauthenticated_loopback: true`) - at `$.admin`"),
        ("{listen: '0.0.0.0:19000', allow_unauthenticated_loopback: true}",
         "`allow_unauthenticated_loopback` needs a loopback `listen` (127.0.0.1, ::1, localhost), not 0.0.0.0: "
         "set `token_env` - at `$.admin`"),
        ("{token_env: BG_ADMIN_TOKEN, allow_unauthenticated_loopback: true}",
         "give `token_env` or `allow_unauthenticated_loopback`, not both - at `$.admin`"),
        ("{token_env: BG_UNSET_VAR}", "`token_env`: environment variable BG_UNSET_VAR is not set - at `$.admin`"),
        ("{token_env: BG_SHORT_TOKEN}",
         "`token_env`: the token in BG_SHORT_TOKEN is shorter than 16 characters - at `$.admin`"),
        ("{listen: '19000', token_env: BG_ADMIN_TOKEN}",
         "`listen` '19000' is not HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:19000) - at `$.admin`"),
        ("{listen: '127.0.0.1:70000', token_env: BG_ADMIN_TOKEN}",
         "`listen` '127.0.0.1:70000' is not HOST:PORT with a port from 1 to 65535"),
        ("{token_env: BG_ADMIN_TOKEN, replay_username: tester}",
         "`replay_username` and `replay_password_env` go together - at `$.admin`"),
        ("{token_env: BG_ADMIN_TOKEN, replay_username: tester, replay_password_env: BG_UNSET_VAR}",
         "`replay_password_env`: environment variable BG_UNSET_VAR is not set - at `$.admin`"),
        ("{token_env: BG_ADMIN_TOKEN, replay_mechanism: OAUTHBEARER}",
         "Invalid enum value 'OAUTHBEARER' - at `$.admin.replay_mechanism`"),
        ("{token_env: BG_ADMIN_TOKEN, token: x}", "Object contains unknown field `token` - at `$.admin`"),
    ],
)
def test_mistakes_name_the_key_and_why(admin, message):
    assert message in error_of(admin)


def test_errors_never_show_the_token():
    assert "short" not in error_of("{token_env: BG_SHORT_TOKEN}").replace("shorter", "")
