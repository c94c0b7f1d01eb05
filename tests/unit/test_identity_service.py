import asyncio

import pytest

from brokerguard.config import IdentityConfig, Oidc
from brokerguard.errors import ConfigError
from brokerguard.identity import AuthenticationFailed, Identity
from brokerguard.identity.credentials import CredentialsFile
from brokerguard.identity.sasl import OAuthBearerServer, PlainServer, ScramServer
from brokerguard.identity.service import IdentityService
from brokerguard.plugins.kafka import sasl as kafka_sasl
from brokerguard.secret import Secret

PASSWORD = "service-password"
OIDC = Oidc(issuer="https://issuer.test", audience=["kafka"], jwks_url="http://127.0.0.1:9/jwks")


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def credentials_path(tmp_path):
    file = CredentialsFile(tmp_path / "credentials.json", create=True)
    file.add("svc", PASSWORD, ["writers"])
    file.add("fired", PASSWORD)
    return str(file.path)


def service(credentials_path=None, revoked=(), clock=None, **options):
    config = IdentityConfig(credentials_file=credentials_path, **options)
    return IdentityService(config, lambda subject: subject in revoked, **({"clock": clock} if clock else {}))


def test_mechanisms_offered(credentials_path):
    both = service(credentials_path, oidc=OIDC)
    assert both.mechanisms(tls=True) == ["OAUTHBEARER", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
    assert both.mechanisms(tls=False) == ["OAUTHBEARER", "SCRAM-SHA-512", "SCRAM-SHA-256"]
    assert both.mechanisms(tls=True, wanted=["PLAIN", "OAUTHBEARER"]) == ["OAUTHBEARER", "PLAIN"]
    assert service(credentials_path, allow_plain_without_tls=True).mechanisms(tls=False) == [
        "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
    assert service(oidc=OIDC).mechanisms(tls=True) == ["OAUTHBEARER"]
    assert service().mechanisms(tls=True) == []


def test_start_mechanism(credentials_path):
    identity = service(credentials_path, oidc=OIDC)
    assert isinstance(identity.start_mechanism("OAUTHBEARER", tls=False), OAuthBearerServer)
    assert isinstance(identity.start_mechanism("SCRAM-SHA-256", tls=False), ScramServer)
    assert isinstance(identity.start_mechanism("PLAIN", tls=True), PlainServer)
    with pytest.raises(AuthenticationFailed) as err:
        identity.start_mechanism("PLAIN", tls=False)
    assert "not offered" in err.value.detail
    assert "Unsupported SASL mechanism" in err.value.public
    with pytest.raises(AuthenticationFailed):
        identity.start_mechanism("GSSAPI", tls=True)
    with pytest.raises(AuthenticationFailed):
        identity.start_mechanism("SCRAM-SHA-256", tls=True, wanted=["OAUTHBEARER"])


def test_a_broken_credentials_file_fails_at_construction(tmp_path):
    (tmp_path / "bad.json").write_text("[")
    with pytest.raises(ConfigError, match="bad.json"):
        service(str(tmp_path / "bad.json"))


def login(identity: IdentityService, user: str, password: str, address="10.0.0.1", mechanism="SCRAM-SHA-512"):
    async def run():
        server = identity.start_mechanism(mechanism, tls=True)
        client = kafka_sasl.mechanism(mechanism, user, Secret(password))
        step = await identity.step(server, client.first(), address)
        if step.identity is None:
            step = await identity.step(server, client.respond(step.challenge), address)
        return step.identity

    return asyncio.run(run())


def test_login_through_the_service(credentials_path):
    identity = login(service(credentials_path, failed_auth_delay_ms=0), "svc", PASSWORD)
    assert identity.subject == "svc"
    assert identity.groups == frozenset({"writers"})
    plain = login(service(credentials_path, failed_auth_delay_ms=0), "svc", PASSWORD, mechanism="PLAIN")
    assert plain.mechanism == "PLAIN"


def test_revoked_subject_is_refused(credentials_path):
    identity = service(credentials_path, revoked={"fired"}, failed_auth_delay_ms=0)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        login(identity, "fired", PASSWORD)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        identity.identity_from_certificate({"subject": ((("commonName", "fired"),),)})
    assert identity.identity_from_certificate({"subject": ((("commonName", "svc"),),)}).subject == "svc"


def test_failures_per_address_are_limited(credentials_path):
    clock = Clock()
    identity = service(credentials_path, clock=clock, failed_auth_per_minute=3, failed_auth_delay_ms=0)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed, match="wrong password"):
            login(identity, "svc", "wrong")
    with pytest.raises(AuthenticationFailed) as err:
        login(identity, "svc", PASSWORD)  # even the right password: refused before any work
    assert err.value.detail == "too many failed authentications from 10.0.0.1"
    assert "try again later" in err.value.public
    assert login(identity, "svc", PASSWORD, address="10.0.0.2").subject == "svc"  # other addresses unaffected
    clock.now += 61
    assert login(identity, "svc", PASSWORD).subject == "svc"


def test_limiter_window_slides(credentials_path):
    clock = Clock()
    identity = service(credentials_path, clock=clock, failed_auth_per_minute=2)
    identity.record_failure("1.2.3.4")
    clock.now += 40
    identity.record_failure("1.2.3.4")
    with pytest.raises(AuthenticationFailed):
        identity.check_address("1.2.3.4")
    clock.now += 21  # the first failure left the window
    identity.check_address("1.2.3.4")
    identity.maintain()


def test_failure_delay(credentials_path):
    clock = Clock()
    identity = service(credentials_path, clock=clock, failed_auth_delay_ms=250)
    assert identity.failure_delay(clock.now) == pytest.approx(0.25)
    clock.now += 0.1
    assert identity.failure_delay(1000.0) == pytest.approx(0.15)
    clock.now += 1
    assert identity.failure_delay(1000.0) == 0.0


def test_failures_are_answered_after_the_delay(credentials_path):
    import time

    identity = service(credentials_path, failed_auth_delay_ms=200)
    for user in ("svc", "nobody"):
        started = time.monotonic()
        with pytest.raises(AuthenticationFailed):
            login(identity, user, "wrong", address=f"10.9.0.{len(user)}")
        assert time.monotonic() - started >= 0.2


def test_session_expiry():
    identity = service(oidc=OIDC, max_session_lifetime_s=600)
    token = Identity("alice", "OAUTHBEARER", expires_at=5000.0)
    scram = Identity("svc", "SCRAM-SHA-512")
    assert identity.session_expiry(token, now=1000.0) == 1600.0
    assert identity.session_expiry(token, now=4800.0) == 5000.0
    assert identity.session_expiry(scram, now=1000.0) == 1600.0
    unlimited = service(oidc=OIDC)
    assert unlimited.session_expiry(token, now=1000.0) == 5000.0
    assert unlimited.session_expiry(scram, now=1000.0) is None


def test_maintain_reloads_the_credentials_file(credentials_path):
    identity = service(credentials_path, failed_auth_delay_ms=0)
    CredentialsFile(credentials_path).rotate("svc", "rotated")
    identity.maintain()
    assert login(identity, "svc", "rotated").subject == "svc"
    with pytest.raises(AuthenticationFailed):
        login(identity, "svc", PASSWORD)


def test_start_and_close_with_an_unreachable_issuer():
    identity = service(oidc=Oidc(issuer="https://issuer.test", audience=["kafka"],
                                 jwks_url="http://127.0.0.1:9/jwks", jwks_timeout_s=0.5))

    async def run():
        await identity.start()
        await identity.close()

    asyncio.run(run())


def test_engine_does_not_import_plugins():
    import pathlib

    for path in (pathlib.Path(__file__).parents[2] / "engine" / "identity").glob("*.py"):
        assert "brokerguard.plugins" not in path.read_text(), path
