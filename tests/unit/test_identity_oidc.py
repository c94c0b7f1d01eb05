import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from brokerguard.config import Oidc
from brokerguard.identity import AuthenticationFailed
from brokerguard.identity.oidc import KeyFetchError, TokenValidator, check_claims, parse_key_set
from brokerguard.identity.sasl import OAuthBearerServer, parse_oauthbearer

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(private_key, kid, **extra):
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    entry = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**entry, "kid": kid, "use": "sig", **extra}


class Issuer:
    """A tiny OIDC issuer on loopback: routes are JSON documents (or a status code), requests counted."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        self.delay = 0.0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                issuer.requests.append(self.path)
                time.sleep(issuer.delay)
                answer = issuer.routes.get(self.path, 404)
                if isinstance(answer, int):
                    self.send_response(answer)
                    self.end_headers()
                    return
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.issuer = self.base + "/realm"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def config(self, **changes) -> Oidc:
        options = {"issuer": self.issuer, "audience": ["kafka", "other"], "jwks_url": self.base + "/jwks",
                   "jwks_min_refresh_s": 0.0, "jwks_timeout_s": 2.0, **changes}
        return Oidc(**options)

    def token(self, key=RSA_KEY, kid="rsa-1", algorithm="RS256", **claims) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": "kafka", "sub": "alice", "exp": now + 300, "iat": now,
                "groups": ["analysts", "payments"], **claims}
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


@pytest.fixture(scope="module")
def issuer():
    issuer = Issuer()
    yield issuer
    issuer.server.shutdown()


@pytest.fixture(autouse=True)
def fresh_routes(issuer):
    issuer.routes = {"/jwks": {"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]}}
    issuer.requests.clear()
    issuer.delay = 0.0


def validate(config: Oidc, token: str, before=None):
    async def run():
        validator = TokenValidator(config)
        await validator.start()
        try:
            if before:
                await before(validator)
            return await validator.validate(token)
        finally:
            await validator.close()

    return asyncio.run(run())


def refused(config, token, detail):
    with pytest.raises(AuthenticationFailed) as err:
        validate(config, token)
    assert detail in err.value.detail, err.value.detail
    assert err.value.public == "Authentication failed"


def test_valid_rs256(issuer):
    token = issuer.token()
    identity = validate(issuer.config(), token)
    assert identity.subject == "alice"
    assert identity.mechanism == "OAUTHBEARER"
    assert identity.groups == frozenset({"analysts", "payments"})
    assert identity.claims["iss"] == issuer.issuer
    assert identity.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"]


def test_valid_es256(issuer):
    identity = validate(issuer.config(), issuer.token(EC_KEY, "ec-1", "ES256", sub="svc-ec", groups="a, b c"))
    assert identity.subject == "svc-ec"
    assert identity.groups == frozenset({"a", "b", "c"})


def test_forged_signature(issuer):
    refused(issuer.config(), issuer.token(RSA_KEY_2, "rsa-1"), "signature does not verify")


def test_tampered_claims(issuer):
    header, payload, signature = issuer.token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    refused(issuer.config(), f"{header}.{forged}.{signature}", "signature does not verify")


def test_expired(issuer):
    refused(issuer.config(), issuer.token(exp=int(time.time()) - 120), "expired")


def test_expiry_within_the_clock_skew_is_accepted(issuer):
    assert validate(issuer.config(), issuer.token(exp=int(time.time()) - 10)).subject == "alice"


def test_exp_is_required(issuer):
    refused(issuer.config(), issuer.token(exp=None), "no exp")


def test_not_yet_valid(issuer):
    refused(issuer.config(), issuer.token(nbf=int(time.time()) + 600), "nbf")


def test_issued_in_the_future(issuer):
    refused(issuer.config(), issuer.token(iat=int(time.time()) + 600), "iat")


def test_wrong_audience(issuer):
    refused(issuer.config(), issuer.token(aud="someone-else"), "audience")


def test_any_configured_audience_will_do(issuer):
    assert validate(issuer.config(), issuer.token(aud=["x", "other"])).subject == "alice"


def test_wrong_issuer(issuer):
    refused(issuer.config(), issuer.token(iss="https://evil.example"), "issuer")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict, claims: dict, sign) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _claims(issuer):
    return {"iss": issuer.issuer, "aud": "kafka", "sub": "mallory", "exp": int(time.time()) + 300}


def test_alg_none(issuer):
    token = _hand_made({"alg": "none", "kid": "rsa-1"}, _claims(issuer), lambda _: b"")
    refused(issuer.config(), token, "alg none")


def test_hs256_with_the_public_key_as_secret(issuer):
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = _hand_made({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, _claims(issuer),
                       lambda data: hmac.new(pem, data, hashlib.sha256).digest())
    refused(issuer.config(), token, "symmetric")


def test_alg_not_configured(issuer):
    refused(issuer.config(algorithms=["ES256"]), issuer.token(), "not one of")


def test_alg_must_fit_the_key_type(issuer):
    # An ES256 token naming the RSA key: refused before any signature check.
    refused(issuer.config(), issuer.token(EC_KEY, "rsa-1", "ES256"), "does not fit")


def test_alg_must_be_the_jwks_own_alg(issuer):
    issuer.routes["/jwks"] = {"keys": [jwk(RSA_KEY, "rsa-1", alg="RS256")]}
    config = issuer.config(algorithms=["RS256", "PS256"])
    assert validate(config, issuer.token()).subject == "alice"
    refused(config, issuer.token(algorithm="PS256"), "does not fit")


def test_critical_header_extensions_are_refused(issuer):
    token = jwt.encode(_claims(issuer), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1", "crit": ["exp"]})
    refused(issuer.config(), token, "critical")


def test_token_without_kid_is_tried_against_fitting_keys(issuer):
    assert validate(issuer.config(), issuer.token(kid=None)).subject == "alice"


def test_groups_claim_of_the_wrong_type_is_refused(issuer):
    refused(issuer.config(), issuer.token(groups=[1, 2]), "not a list of strings")


def test_nested_claims_and_missing_subject(issuer):
    config = issuer.config(subject_claim="client_id", groups_claim="realm_access.roles")
    token = issuer.token(client_id="svc-x", realm_access={"roles": ["writers"]})
    identity = validate(config, token)
    assert (identity.subject, identity.groups) == ("svc-x", frozenset({"writers"}))
    refused(config, issuer.token(), "client_id is missing")


def test_unknown_kid_refreshes_and_picks_up_a_rotated_key(issuer):
    async def rotate(validator):
        assert "rsa-2" not in validator.keys.keys
        issuer.routes["/jwks"] = {"keys": [jwk(RSA_KEY_2, "rsa-2")]}

    identity = validate(issuer.config(), issuer.token(RSA_KEY_2, "rsa-2", sub="bob"), before=rotate)
    assert identity.subject == "bob"
    assert issuer.requests == ["/jwks", "/jwks"]


def test_unknown_kid_refresh_is_rate_limited(issuer):
    async def rotate(validator):
        issuer.routes["/jwks"] = {"keys": [jwk(RSA_KEY_2, "rsa-2")]}

    config = issuer.config(jwks_min_refresh_s=60.0)
    with pytest.raises(AuthenticationFailed, match="no key"):
        validate(config, issuer.token(RSA_KEY_2, "rsa-2"), before=rotate)
    assert issuer.requests == ["/jwks"]  # only the fetch at start


def test_concurrent_unknown_kids_share_one_fetch(issuer):
    async def run():
        validator = TokenValidator(issuer.config())
        await validator.start()
        issuer.routes["/jwks"] = {"keys": [jwk(RSA_KEY_2, "rsa-2")]}
        issuer.delay = 0.2
        tokens = [issuer.token(RSA_KEY_2, "rsa-2", sub=f"u{i}") for i in range(10)]
        identities = await asyncio.gather(*(validator.validate(t) for t in tokens))
        await validator.close()
        return identities

    assert {i.subject for i in asyncio.run(run())} == {f"u{i}" for i in range(10)}
    assert issuer.requests == ["/jwks", "/jwks"]


def test_fetching_never_blocks_the_event_loop(issuer):
    issuer.delay = 0.3

    async def run():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        validator = TokenValidator(issuer.config())
        await validator.start()
        await validator.close()
        task.cancel()
        return ticks

    assert asyncio.run(run()) >= 10


def test_failed_fetch_keeps_the_old_keys(issuer, caplog):
    async def break_issuer(validator):
        issuer.routes["/jwks"] = 500
        assert await validator.refresh() is False

    assert validate(issuer.config(), issuer.token(), before=break_issuer).subject == "alice"
    assert "could not be fetched" in caplog.text


def test_start_survives_an_unreachable_issuer(issuer, caplog):
    async def run():
        validator = TokenValidator(issuer.config(jwks_url="http://127.0.0.1:9/jwks", jwks_timeout_s=0.5))
        await validator.start()  # logs, does not raise
        try:
            with pytest.raises(AuthenticationFailed, match="no key"):
                await validator.validate(issuer.token())
        finally:
            await validator.close()

    asyncio.run(run())
    assert "could not be fetched" in caplog.text


def test_periodic_refresh(issuer):
    async def run():
        validator = TokenValidator(issuer.config(jwks_refresh_s=0.05))
        await validator.start()
        await asyncio.sleep(0.5)
        await validator.close()

    asyncio.run(run())
    assert len(issuer.requests) >= 3


def test_discovery_document(issuer):
    issuer.routes["/realm/.well-known/openid-configuration"] = {"issuer": issuer.issuer,
                                                                "jwks_uri": issuer.base + "/jwks"}
    config = issuer.config(jwks_url=None)
    assert validate(config, issuer.token()).subject == "alice"
    assert issuer.requests[:2] == ["/realm/.well-known/openid-configuration", "/jwks"]


def test_discovery_with_a_wrong_issuer_is_refused(issuer, caplog):
    issuer.routes["/realm/.well-known/openid-configuration"] = {"issuer": "https://evil.example",
                                                                "jwks_uri": issuer.base + "/jwks"}
    with pytest.raises(AuthenticationFailed, match="no key"):
        validate(issuer.config(jwks_url=None), issuer.token())
    assert "/jwks" not in issuer.requests
    assert "names the issuer 'https://evil.example'" in caplog.text


def test_key_set_parsing_skips_unusable_keys():
    secret = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}
    private = {**jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True), "kid": "private"}
    encryption = jwk(RSA_KEY, "enc", use="enc")
    keys = parse_key_set({"keys": [secret, private, encryption, jwk(EC_KEY, "ec-1"), "junk"]}, "test")
    assert list(keys.keys) == ["ec-1"]
    with pytest.raises(KeyFetchError, match="no usable"):
        parse_key_set({"keys": [secret]}, "test")


# -- OAUTHBEARER (RFC 7628) --------------------------------------------------------------------

def oauthbearer(issuer, message: bytes):
    async def run():
        validator = TokenValidator(issuer.config())
        await validator.start()
        try:
            return await OAuthBearerServer(validator).step(message)
        finally:
            await validator.close()

    return asyncio.run(run())


def test_oauthbearer_initial_response(issuer):
    token = issuer.token()
    step = oauthbearer(issuer, f"n,,\x01auth=Bearer {token}\x01\x01".encode())
    assert step.identity.subject == "alice"
    assert step.challenge == b""
    # Kafka clients may add SASL extensions as more key/value pairs.
    step = oauthbearer(issuer, f"n,,\x01auth=Bearer {token}\x01traceId=abc\x01\x01".encode())
    assert step.identity.subject == "alice"


def test_oauthbearer_authzid_must_be_the_subject(issuer):
    token = issuer.token()
    assert oauthbearer(issuer, f"n,a=alice,\x01auth=Bearer {token}\x01\x01".encode()).identity.subject == "alice"
    with pytest.raises(AuthenticationFailed, match="not the token's subject"):
        oauthbearer(issuer, f"n,a=admin,\x01auth=Bearer {token}\x01\x01".encode())


@pytest.mark.parametrize("message, detail", [
    (b"n,,\x01auth=Bearer abc\x01", "two separators"),
    (b"n,,\x01\x01", "no auth="),
    (b"n,,\x01auth=Basic abc\x01\x01", "Bearer"),
    (b"p=tls,,\x01auth=Bearer abc\x01\x01", "channel binding"),
    (b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01", "twice"),
    (b"n,,\x011x=2\x01auth=Bearer a\x01\x01", "malformed"),
    (b"auth=Bearer abc", "GS2"),
    (b"n,,\x01auth=Bearer not.a.jwt\x01\x01", "not a JWT"),
])
def test_oauthbearer_malformed(issuer, message, detail):
    with pytest.raises(AuthenticationFailed) as err:
        oauthbearer(issuer, message)
    assert detail in err.value.detail


_OAUTH_PIECES = st.sampled_from(["n", "y", ",", "a=", "=2C", "\x01", "auth=", "Bearer ", "bearer  ", "abc.def.ghi",
                                 "=", " ", "é", "\x00", "x=y"])


@random_inputs(500)
@given(st.binary(max_size=200) | st.lists(_OAUTH_PIECES, max_size=15).map(lambda p: "".join(p).encode()))
def test_fuzz_oauthbearer_message(data):
    try:
        parse_oauthbearer(data)
    except AuthenticationFailed:
        pass


_B64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=60)
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=12)


@pytest.fixture(scope="module")
def offline_validator(issuer):
    validator = TokenValidator(issuer.config(jwks_min_refresh_s=3600))
    validator._keys = parse_key_set({"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]}, "test")
    validator._last_attempt = time.monotonic()  # keys are never fetched again during the fuzz
    return validator


@random_inputs(300)
@given(token=st.text(max_size=200) | st.tuples(_B64URL, _B64URL, _B64URL).map(".".join)
       | st.tuples(_JSON, _JSON).map(lambda hc: f"{_b64(json.dumps(hc[0]).encode())}."
                                              f"{_b64(json.dumps(hc[1]).encode())}.AAAA"))
def test_fuzz_tokens(offline_validator, token):
    validator = offline_validator
    try:
        asyncio.run(validator.validate(token))
    except AuthenticationFailed:
        pass


_HEADERS = st.fixed_dictionaries({"alg": st.sampled_from(["RS256", "ES256", "PS256", "none", "HS256", "EdDSA", ""]),
                                   "kid": st.sampled_from(["rsa-1", "ec-1", "nope", ""]) | _JSON})


@random_inputs(300)
@given(header=_HEADERS, claims=_JSON, signature=_B64URL)
def test_fuzz_tokens_with_plausible_headers(offline_validator, header, claims, signature):
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{signature}"
    try:
        asyncio.run(offline_validator.validate(token))
    except AuthenticationFailed:
        pass


@random_inputs(200)
@given(claims=st.dictionaries(st.text(max_size=8), _JSON) | _JSON)
def test_fuzz_signed_claims(issuer, offline_validator, claims):
    token = _hand_made({"alg": "RS256", "kid": "rsa-1"}, claims,
                       lambda data: RSA_KEY.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    try:
        asyncio.run(offline_validator.validate(token))
    except AuthenticationFailed:
        pass


@random_inputs(300)
@given(claims=st.dictionaries(st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "sub", "groups"]), _JSON))
def test_fuzz_claims(issuer, claims):
    try:
        check_claims(claims, issuer.config(), time.time())
    except AuthenticationFailed:
        pass


@random_inputs(300)
@given(document=_JSON | st.fixed_dictionaries({"keys": st.lists(
    st.dictionaries(st.sampled_from(["kty", "kid", "use", "alg", "n", "e", "crv", "x", "y", "d", "k"]),
                    st.sampled_from(["RSA", "EC", "OKP", "oct", "P-256", "Ed25519", "AQAB", "sig", "AAAA", "RS256"])
                    | _JSON), max_size=4)}))
def test_fuzz_key_sets(document):
    try:
        parse_key_set(document, "fuzz")
    except KeyFetchError:
        pass


def test_discovery_may_not_point_outside_http(issuer, caplog):
    issuer.routes["/realm/.well-known/openid-configuration"] = {"issuer": issuer.issuer, "jwks_uri": "file:///etc/passwd"}
    with pytest.raises(AuthenticationFailed, match="no key"):
        validate(issuer.config(jwks_url=None), issuer.token())
    assert "is not an http(s) address" in caplog.text


@pytest.fixture(scope="module")
def discovery_validator():
    return TokenValidator(Oidc(issuer="https://issuer.test", audience=["kafka"]))


@random_inputs(200)
@given(discovery=_JSON | st.fixed_dictionaries({"issuer": st.just("https://issuer.test") | _JSON,
                                                "jwks_uri": st.just("http://keys.test/jwks") | _JSON}),
       jwks=_JSON)
def test_fuzz_discovery_and_key_documents(discovery_validator, discovery, jwks):
    validator = discovery_validator
    validator._get_json = lambda url: discovery if url.endswith("openid-configuration") else jwks
    try:
        validator._download_keys()
    except KeyFetchError:
        pass
