import base64
import hashlib
import hmac
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote_plus, urlencode

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import random_inputs

from devstack.oidc import DevstackError, OAuthError, OidcIssuer, TokenRequest, parse_token_request

ROOT = Path(__file__).resolve().parents[2]
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def issuer():
    with OidcIssuer(audience="brokerguard") as issuer:
        issuer.register_client("svc-payments", "s3cret:+/ &", subject="svc-payments", groups=["services"])
        yield issuer


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.load(response)


def post(url, form, headers=None):
    data = urlencode(form).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": FORM, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.load(err), err.headers


def basic(client_id, secret):
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def verify(issuer, token, **options):
    keys = jwt.PyJWKClient(issuer.jwks_url, cache_keys=False, cache_jwk_set=False)
    key = keys.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience="brokerguard",
                      issuer=issuer.url, **options)


def test_discovery_names_the_issuer_and_its_endpoints(issuer):
    before = issuer.discovery_requests
    status, document = get_json(issuer.url + "/.well-known/openid-configuration")
    assert status == 200
    assert document["issuer"] == issuer.url
    assert issuer.url.startswith("http://127.0.0.1:")
    assert document["jwks_uri"] == issuer.jwks_url
    assert document["token_endpoint"] == issuer.token_url
    assert document["grant_types_supported"] == ["client_credentials"]
    assert issuer.discovery_requests == before + 1


def test_jwks_publishes_public_keys_only(issuer):
    before = issuer.requests
    status, jwks = get_json(issuer.jwks_url)
    assert status == 200 and issuer.requests == before + 1
    [key] = [k for k in jwks["keys"] if k["kid"] == issuer.signing_kid]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_issued_tokens_verify_against_the_served_keys(issuer):
    token = issuer.issue("alice", groups=["analysts"], team="payments")
    claims = verify(issuer, token)
    assert claims["sub"] == "alice" and claims["groups"] == ["analysts"] and claims["team"] == "payments"
    assert claims["aud"] == "brokerguard" and claims["exp"] - claims["iat"] == 300
    assert jwt.get_unverified_header(token)["kid"] == issuer.signing_kid


def test_claims_can_be_changed_and_left_out(issuer):
    token = issuer.issue("alice", audience=["other", "brokerguard"], exp=None, groups=None, not_before=time.time() - 5)
    claims = verify(issuer, token, options={"require": []})
    assert "exp" not in claims and "groups" not in claims and "nbf" in claims and claims["aud"] == ["other", "brokerguard"]

    with pytest.raises(jwt.ExpiredSignatureError):
        verify(issuer, issuer.issue("alice", expires_in=-60))
    with pytest.raises(jwt.ImmatureSignatureError):
        verify(issuer, issuer.issue("alice", not_before=time.time() + 600))
    with pytest.raises(jwt.InvalidAudienceError):
        verify(issuer, issuer.issue("alice", audience="someone-else"))


def test_tokens_a_verifier_must_refuse(issuer):
    confused = issuer.issue("alice", algorithm="HS256")
    assert jwt.get_unverified_header(confused)["alg"] == "HS256"
    # Signed with the public key as an HMAC secret: the algorithm-confusion attack, for real.
    public_pem = issuer._key_for(None, None).public_pem()
    signing_input, _, signature = confused.rpartition(".")
    expected = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input.encode(), hashlib.sha256)
                                        .digest()).rstrip(b"=").decode()
    assert signature == expected
    unsigned = issuer.issue("alice", algorithm="none")
    assert unsigned.endswith(".")
    for token in (confused, unsigned):
        with pytest.raises(jwt.InvalidTokenError):
            verify(issuer, token)
    with OidcIssuer() as other:
        forged = other.issue("alice", iss=issuer.url)
        with pytest.raises(jwt.PyJWKClientError):
            verify(issuer, forged)


def test_client_credentials_with_basic_and_form(issuer):
    for form, headers in (({"grant_type": "client_credentials"}, basic("svc-payments", "s3cret:+/ &")),
                          ({"grant_type": "client_credentials", "client_id": "svc-payments",
                            "client_secret": "s3cret:+/ &", "scope": "kafka"}, {})):
        status, body, response_headers = post(issuer.token_url, form, headers)
        assert status == 200, body
        assert body["token_type"] == "Bearer" and body["expires_in"] == 300
        assert response_headers["Cache-Control"] == "no-store"
        claims = verify(issuer, body["access_token"])
        assert claims["sub"] == "svc-payments" and claims["groups"] == ["services"]
        assert claims["azp"] == "svc-payments"
    assert claims["scope"] == "kafka"


@pytest.mark.parametrize("form, headers, status, error", [
    ({"grant_type": "client_credentials"}, basic("svc-payments", "wrong"), 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, basic("nobody", "s3cret"), 401, "invalid_client"),
    ({"grant_type": "client_credentials", "client_id": "svc-payments", "client_secret": "no"}, {}, 401,
     "invalid_client"),
    ({"grant_type": "client_credentials"}, {}, 401, "invalid_client"),
    ({"grant_type": "password"}, basic("svc-payments", "s3cret:+/ &"), 400, "unsupported_grant_type"),
    ({"grant_type": "client_credentials", "client_secret": "s3cret:+/ &"}, basic("svc-payments", "s3cret:+/ &"),
     400, "invalid_request"),
    ({"grant_type": "client_credentials"}, {"Authorization": "Basic !!!"}, 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, {"Authorization": "Bearer abc"}, 401, "invalid_client"),
])
def test_bad_token_requests(issuer, form, headers, status, error):
    got_status, body, response_headers = post(issuer.token_url, form, headers)
    assert (got_status, body["error"]) == (status, error)
    if status == 401 and "Authorization" in headers:
        assert response_headers["WWW-Authenticate"].startswith("Basic")


def test_token_endpoint_refuses_other_shapes(issuer):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(issuer.token_url, timeout=5)
    assert caught.value.code == 405
    big = urllib.request.Request(issuer.token_url, data=b"x" * 70_000, headers={"Content-Type": FORM})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(big, timeout=5)
    assert caught.value.code == 413
    json_body = urllib.request.Request(issuer.token_url, data=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(json_body, timeout=5)
    assert caught.value.code == 400


def test_rotation_keeps_the_old_key_published_until_retired():
    with OidcIssuer() as issuer:
        old_kid = issuer.signing_kid
        old_token = issuer.issue("alice")
        new_kid = issuer.rotate()
        assert new_kid != old_kid and issuer.kids == [old_kid, new_kid]
        assert jwt.get_unverified_header(issuer.issue("alice"))["kid"] == new_kid
        before = issuer.requests
        assert verify(issuer, old_token)["sub"] == "alice"
        assert issuer.requests == before + 1  # the verifier fetched the keys again
        assert jwt.get_unverified_header(issuer.issue("alice", kid=old_kid))["kid"] == old_kid

        es_kid = issuer.rotate("ES256", retire=True)
        assert issuer.kids == [es_kid]
        [key] = get_json(issuer.jwks_url)[1]["keys"]
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
        assert jwt.get_unverified_header(issuer.issue("bob"))["alg"] == "ES256"
        assert verify(issuer, issuer.issue("bob"))["sub"] == "bob"
        with pytest.raises(jwt.PyJWKClientError):
            verify(issuer, old_token)
        with pytest.raises(DevstackError, match="rotate"):
            issuer.issue("bob", algorithm="RS256")
        with pytest.raises(DevstackError, match="signing key"):
            issuer.retire(es_kid)


def test_gateway_config_fits_the_gateway(issuer):
    from brokerguard.config import Oidc
    import msgspec

    section = msgspec.convert(issuer.gateway_config(), Oidc)
    assert section.issuer == issuer.url and section.audience == ["brokerguard"]


# --------------------------------------------------------------------------- the request parser

@random_inputs(500)
@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()), st.binary(max_size=2000))
def test_token_request_parser_takes_any_bytes(authorization, content_type, body):
    try:
        request = parse_token_request(authorization, content_type, body)
    except OAuthError as err:
        assert err.status in (400, 401) and err.error
    else:
        assert isinstance(request, TokenRequest) and request.client_id


@random_inputs(300)
@given(st.text(min_size=1), st.text(), st.text(alphabet="&=+%; abc\x00", max_size=50))
def test_token_request_parser_on_near_valid_forms(client_id, secret, noise):
    body = f"grant_type=client_credentials&{noise}".encode()
    try:
        request = parse_token_request(basic(client_id, secret)["Authorization"], FORM, body)
    except OAuthError as err:
        assert err.status in (400, 401)
    else:
        assert (request.client_id, request.client_secret) == (client_id, secret)


# --------------------------------------------------------------------------- the command line

def wait_for_state(path, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"oidc.py exited with {proc.returncode}: {proc.stderr.read()}")
        if path.exists():
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        time.sleep(0.05)
    raise AssertionError("no state file")


def test_cli_run_serves_until_terminated(tmp_path):
    state_file = tmp_path / "oidc" / "state.json"
    proc = subprocess.Popen([sys.executable, str(ROOT / "devstack" / "oidc.py"), "run", "--state-file",
                             str(state_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        state = wait_for_state(state_file, proc)
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        assert get_json(state["discovery_url"])[1]["issuer"] == state["issuer"]
        keys = jwt.PyJWKClient(state["jwks_url"])
        token = state["demo"]["token"]
        claims = jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"],
                            audience=state["audience"], issuer=state["issuer"])
        assert claims["sub"] == state["demo"]["subject"]
        client = state["client"]
        status, body, _ = post(state["token_endpoint"], {"grant_type": "client_credentials"},
                               basic(client["client_id"], client["client_secret"]))
        assert status == 200 and body["access_token"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert not state_file.exists()
    assert client["client_secret"] not in out + err and token not in out + err


def test_cli_start_status_stop(tmp_path):
    state_file = str(tmp_path / "state.json")
    script = [sys.executable, str(ROOT / "devstack" / "oidc.py")]

    def cli(*args):
        return subprocess.run([*script, *args, "--state-file", state_file], capture_output=True, text=True,
                              timeout=60)

    started = cli("start")
    assert started.returncode == 0, started.stderr
    state = json.loads(Path(state_file).read_text())
    try:
        assert started.stdout.strip() == state["issuer"]
        status = cli("status")
        assert status.returncode == 0 and "running, answering" in status.stdout
        assert state["demo"]["token"] not in status.stdout
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not os.path.exists(f"/proc/{state['pid']}") or b"oidc.py" not in Path(
        f"/proc/{state['pid']}/cmdline").read_bytes()
    assert cli("status").returncode == 1
