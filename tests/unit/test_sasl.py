import pytest

from brokerguard.plugins.kafka import sasl
from brokerguard.secret import Secret

# RFC 7677 section 3: SCRAM-SHA-256, user "user", password "pencil".
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_client() -> sasl.Scram:
    client = sasl.Scram("SCRAM-SHA-256", "user", Secret("pencil"))
    client._nonce = CLIENT_NONCE
    client._first_bare = f"n=user,r={CLIENT_NONCE}"
    return client


def test_scram_sha_256_matches_rfc_7677():
    client = rfc_client()
    assert client.first() == b"n,,n=user,r=" + CLIENT_NONCE.encode()
    assert client.respond(SERVER_FIRST) == CLIENT_FINAL
    assert client.respond(SERVER_FINAL) is None


def test_scram_rejects_a_server_that_does_not_know_the_password():
    client = rfc_client()
    client.respond(SERVER_FIRST)
    with pytest.raises(sasl.SaslError, match="signature is wrong"):
        client.respond(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")


@pytest.mark.parametrize("server_first, reason", [
    (b"r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
    (SERVER_FIRST.replace(b"i=4096", b"i=1"), "iteration"),
    (b"\xff\xfe", "malformed"),
])
def test_scram_rejects_bad_server_first(server_first, reason):
    with pytest.raises(sasl.SaslError, match=reason):
        rfc_client().respond(server_first)


def test_scram_escapes_the_username():
    client = sasl.Scram("SCRAM-SHA-512", "a=b,c", Secret("x"))
    assert client.first().startswith(b"n,,n=a=3Db=2Cc,r=")


def test_plain_is_one_message():
    plain = sasl.Plain("gateway", Secret("pw"))
    assert plain.first() == b"\0gateway\0pw"
    assert plain.respond(b"") is None
