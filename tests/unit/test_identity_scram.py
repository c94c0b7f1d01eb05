import asyncio
import base64
import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.identity import AuthenticationFailed
from brokerguard.identity import sasl
from brokerguard.identity.credentials import CredentialsFile, derive_verifier
from brokerguard.plugins.kafka import sasl as kafka_sasl
from brokerguard.secret import Secret

PASSWORD = "s3cret-password"

# RFC 7677 section 3: SCRAM-SHA-256, user "user", password "pencil".
RFC_SALT = "W22ZaJ0SNY7soEsUEjb6gQ=="
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    file = CredentialsFile(tmp_path_factory.mktemp("scram") / "credentials.json", create=True)
    file.add("svc-payments", PASSWORD, ["payments"])
    file.add("odd,name=x", PASSWORD)
    return file


def run(coro):
    return asyncio.run(coro)


async def exchange(server: sasl.ScramServer, client: kafka_sasl.Scram) -> sasl.Step:
    first = await server.step(client.first())
    assert first.identity is None
    final = await server.step(client.respond(first.challenge))
    assert client.respond(final.challenge) is None  # the client checks our signature: we know the key
    return final


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("user", ["svc-payments", "odd,name=x"])
def test_full_exchange_with_the_kafka_adapter_client(credentials, mechanism, user):
    server = sasl.ScramServer(mechanism, credentials, credentials.decoy_key)
    client = kafka_sasl.Scram(mechanism, user, Secret(PASSWORD))
    final = run(exchange(server, client))
    assert final.identity.subject == user
    assert final.identity.mechanism == mechanism
    assert final.identity.expires_at is None
    if user == "svc-payments":
        assert final.identity.groups == frozenset({"payments"})


def test_rfc_7677_vector(tmp_path, monkeypatch):
    verifier = derive_verifier("SCRAM-SHA-256", "pencil", salt=base64.b64decode(RFC_SALT), iterations=4096)
    other = derive_verifier("SCRAM-SHA-512", "pencil", iterations=4096)
    path = tmp_path / "credentials.json"
    path.write_bytes(msgspec.json.encode({"users": {"user": {"SCRAM-SHA-256": verifier, "SCRAM-SHA-512": other}}}))
    file = CredentialsFile(path)
    monkeypatch.setattr(sasl.secrets, "token_urlsafe", lambda _: RFC_SERVER_NONCE)
    server = sasl.ScramServer("SCRAM-SHA-256", file, file.decoy_key)
    assert run(server.step(RFC_CLIENT_FIRST)).challenge == RFC_SERVER_FIRST
    final = run(server.step(RFC_CLIENT_FINAL))
    assert final.challenge == RFC_SERVER_FINAL
    assert final.identity.subject == "user"


def test_wrong_password_fails_at_the_proof(credentials):
    server = sasl.ScramServer("SCRAM-SHA-512", credentials, credentials.decoy_key)
    client = kafka_sasl.Scram("SCRAM-SHA-512", "svc-payments", Secret("wrong"))
    first = run(server.step(client.first()))
    with pytest.raises(AuthenticationFailed) as err:
        run(server.step(client.respond(first.challenge)))
    assert "wrong password" in err.value.detail
    assert err.value.public == "Authentication failed"


def _shape(challenge: bytes) -> tuple:
    attributes = dict(part.split("=", 1) for part in challenge.decode().split(","))
    return (sorted(attributes), len(attributes["r"]), len(base64.b64decode(attributes["s"])), attributes["i"])


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_unknown_user_looks_like_a_known_one(credentials, mechanism):
    def first_for(user):
        server = sasl.ScramServer(mechanism, credentials, credentials.decoy_key)
        client = kafka_sasl.Scram(mechanism, user, Secret("guess"))
        client._nonce = "fixednonce"
        client._first_bare = f"n={user},r=fixednonce"
        return server, client, run(server.step(client.first()))

    _, _, known = first_for("svc-payments")
    server, client, unknown = first_for("nobody")
    assert _shape(known.challenge) == _shape(unknown.challenge)
    # The same unknown name gets the same salt every time, in every worker, as a real user would.
    _, _, again = first_for("nobody")
    salt = re.search(rb"s=([^,]+)", unknown.challenge).group(1)
    assert re.search(rb"s=([^,]+)", again.challenge).group(1) == salt
    twin = CredentialsFile(credentials.path)
    other_worker = sasl.ScramServer(mechanism, twin, twin.decoy_key)
    assert re.search(rb"s=([^,]+)", run(other_worker.step(b"n,,n=nobody,r=abc")).challenge).group(1) == salt

    with pytest.raises(AuthenticationFailed) as err:
        run(server.step(client.respond(unknown.challenge)))
    assert "unknown user" in err.value.detail
    assert err.value.public == "Authentication failed"


@pytest.mark.parametrize("message, detail", [
    (b"n,,n=svc-payments,r=abc,tokenauth=true", "delegation tokens"),
    (b"y,,n=svc-payments,r=abc", "channel binding"),
    (b"p=tls-unique,,n=svc-payments,r=abc", "channel binding"),
    (b"n,,m=ext,n=svc-payments,r=abc", "reserved-mext"),
    (b"n,,n=svc-payments,r=abc,x=1", "extensions"),
    (b"n,,n=svc=payments,r=abc", "unescaped"),
    (b"n,,n=svc\x07,r=abc", "control"),
    (b"n,,n=,r=abc", "1 to 255"),
    (b"n,,n=svc-payments,r=", "nonce"),
    (b"n,,n=svc-payments,r=a\x7fb", "nonce"),
    (b"n,a=someone,n=svc-payments,r=abc", "differs"),
    (b"n,,r=abc,n=svc-payments", "n= then r="),
    (b"n,,", "n= then r="),
    (b"\xff\xfe", "UTF-8"),
    (b"nothing", "GS2"),
])
def test_bad_client_first_messages(credentials, message, detail):
    server = sasl.ScramServer("SCRAM-SHA-512", credentials, credentials.decoy_key)
    with pytest.raises(AuthenticationFailed) as err:
        run(server.step(message))
    assert detail in err.value.detail


def _client_final(first_bare: str, gs2_header: str, server_first: bytes, password: str) -> bytes:
    """A client-final computed by hand, for GS2 headers the adapter's client never sends."""
    import hashlib
    import hmac

    from brokerguard.identity.credentials import client_key, salted_password

    attributes = dict(part.split("=", 1) for part in server_first.decode().split(","))
    salted = salted_password("sha256", password, base64.b64decode(attributes["s"]), int(attributes["i"]))
    key = client_key("sha256", salted)
    without_proof = f"c={base64.b64encode(gs2_header.encode()).decode()},r={attributes['r']}"
    auth_message = f"{first_bare},{server_first.decode()},{without_proof}".encode()
    signature = hmac.new(hashlib.sha256(key).digest(), auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(key, signature))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def test_authzid_equal_to_the_user_is_accepted(credentials):
    server = sasl.ScramServer("SCRAM-SHA-256", credentials, credentials.decoy_key)
    first = run(server.step(b"n,a=svc-payments,n=svc-payments,r=clientnonce"))
    final_message = _client_final("n=svc-payments,r=clientnonce", "n,a=svc-payments,", first.challenge, PASSWORD)
    assert run(server.step(final_message)).identity.subject == "svc-payments"


def test_client_final_must_repeat_the_authzid_header(credentials):
    server = sasl.ScramServer("SCRAM-SHA-256", credentials, credentials.decoy_key)
    first = run(server.step(b"n,a=svc-payments,n=svc-payments,r=clientnonce"))
    final_message = _client_final("n=svc-payments,r=clientnonce", "n,,", first.challenge, PASSWORD)
    with pytest.raises(AuthenticationFailed, match="channel binding"):
        run(server.step(final_message))


@pytest.mark.parametrize("mutate, detail", [
    (lambda m: m.replace(b"c=biws", b"c=eSws"), "channel binding"),
    (lambda m: re.sub(rb"r=[^,]+", b"r=other", m), "nonce"),
    (lambda m: m.replace(b",p=", b",x=1,p="), "without extensions"),
    (lambda m: m.split(b",p=")[0], "no proof"),
    (lambda m: m.split(b",p=")[0] + b",p=!!!", "base64"),
    (lambda m: m.split(b",p=")[0] + b",p=AAAA", "wrong"),
])
def test_bad_client_final_messages(credentials, mutate, detail):
    server = sasl.ScramServer("SCRAM-SHA-256", credentials, credentials.decoy_key)
    client = kafka_sasl.Scram("SCRAM-SHA-256", "svc-payments", Secret(PASSWORD))
    first = run(server.step(client.first()))
    with pytest.raises(AuthenticationFailed) as err:
        run(server.step(mutate(client.respond(first.challenge))))
    assert detail in err.value.detail


def test_no_message_after_the_end(credentials):
    server = sasl.ScramServer("SCRAM-SHA-256", credentials, credentials.decoy_key)
    run(exchange(server, kafka_sasl.Scram("SCRAM-SHA-256", "svc-payments", Secret(PASSWORD))))
    with pytest.raises(AuthenticationFailed, match="after the exchange"):
        run(server.step(b"n,,n=svc-payments,r=abc"))


# -- fuzz: hostile bytes only ever end in AuthenticationFailed --------------------------------

@random_inputs(400)
@given(st.binary(max_size=300))
def test_fuzz_client_first_bytes(credentials, data):
    try:
        sasl.parse_client_first(data)
    except AuthenticationFailed:
        pass


_PIECES = st.sampled_from(["n", "y", "p=x", ",", "=", "=2C", "=3D", "a=", "n=", "r=", "m=", "c=", "p=", "s=",
                           "svc-payments", "biws", "tokenauth=true", "\x00", "\x01", "é", "\x7f", "AAAA=="])


@random_inputs(400)
@given(st.lists(_PIECES, max_size=20).map("".join))
def test_fuzz_client_first_structured(credentials, text):
    try:
        sasl.parse_client_first(text.encode())
    except AuthenticationFailed:
        pass


_MESSAGES = st.binary(max_size=200) | st.lists(_PIECES, max_size=12).map(lambda p: "".join(p).encode())


@random_inputs(400)
@given(first=_MESSAGES, final=_MESSAGES)
def test_fuzz_server_steps(credentials, first, final):
    async def exchange_of(*messages):
        server = sasl.ScramServer("SCRAM-SHA-512", credentials, credentials.decoy_key)
        for message in messages:
            await server.step(message)

    for messages in ((first, final), (b"n,,n=svc-payments,r=abc", final), (b"n,,n=nobody,r=abc", final)):
        try:
            run(exchange_of(*messages))
        except AuthenticationFailed:
            pass


@random_inputs(400)
@given(st.binary(max_size=300))
def test_fuzz_client_final_bytes(data):
    try:
        sasl.parse_client_final(data)
    except AuthenticationFailed:
        pass
