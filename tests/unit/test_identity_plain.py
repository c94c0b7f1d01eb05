import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.identity import AuthenticationFailed
from brokerguard.identity import sasl
from brokerguard.identity.credentials import CredentialsFile
from brokerguard.plugins.kafka import sasl as kafka_sasl
from brokerguard.secret import Secret

PASSWORD = "plain-password-1"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    file = CredentialsFile(tmp_path_factory.mktemp("plain") / "credentials.json", create=True)
    file.add("svc", PASSWORD, ["writers"])
    return file


def step(credentials, message: bytes) -> sasl.Step:
    return asyncio.run(sasl.PlainServer(credentials, credentials.decoy_key).step(message))


def test_the_kafka_adapter_client_logs_in(credentials):
    result = step(credentials, kafka_sasl.Plain("svc", Secret(PASSWORD)).first())
    assert result.challenge == b""
    assert result.identity.subject == "svc"
    assert result.identity.mechanism == "PLAIN"
    assert result.identity.groups == frozenset({"writers"})


def test_authzid_equal_to_the_user_is_accepted(credentials):
    assert step(credentials, b"svc\0svc\0" + PASSWORD.encode()).identity.subject == "svc"


@pytest.mark.parametrize("message, detail", [
    (b"\0svc\0wrong", "wrong password"),
    (b"\0nobody\0" + PASSWORD.encode(), "unknown user"),
    (b"other\0svc\0" + PASSWORD.encode(), "differs"),
    (b"\0svc\0", "empty"),
    (b"\0\0" + PASSWORD.encode(), "1 to 255"),
    (b"svc\0" + PASSWORD.encode(), "authzid NUL user NUL password"),
    (b"\0svc\0a\0b", "authzid NUL user NUL password"),
    (b"\0sv\x1bc\0pw", "control"),
    (b"\0svc\0\xff", "UTF-8"),
    (b"\0svc\0" + b"x" * 2000, "1024"),
])
def test_refusals(credentials, message, detail):
    with pytest.raises(AuthenticationFailed) as err:
        step(credentials, message)
    assert detail in err.value.detail
    assert err.value.public == "Authentication failed"


def test_an_unknown_user_costs_a_key_derivation_too(credentials):
    def cost(message):
        started = time.perf_counter()
        with pytest.raises(AuthenticationFailed):
            step(credentials, message)
        return time.perf_counter() - started

    # Not a timing assertion (machines vary): the unknown user must not return without the
    # PBKDF2 work, which alone takes a clearly measurable time at 8192 iterations.
    known = min(cost(b"\0svc\0wrong") for _ in range(3))
    unknown = min(cost(b"\0nobody\0wrong") for _ in range(3))
    assert unknown > known / 4


def test_one_message_only(credentials):
    server = sasl.PlainServer(credentials, credentials.decoy_key)
    asyncio.run(server.step(b"\0svc\0" + PASSWORD.encode()))
    with pytest.raises(AuthenticationFailed, match="after the exchange"):
        asyncio.run(server.step(b"\0svc\0" + PASSWORD.encode()))


@random_inputs(300)
@given(st.binary(max_size=200) | st.lists(st.sampled_from(["\0", "svc", "a", "é", "\x01", PASSWORD]),
                                            max_size=8).map(lambda p: "".join(p).encode()))
def test_fuzz_plain(credentials, data):
    try:
        sasl.parse_plain(data)
    except AuthenticationFailed:
        pass
    try:
        step(credentials, data)
    except AuthenticationFailed:
        pass
