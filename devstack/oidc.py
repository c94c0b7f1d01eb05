"""A real OIDC token issuer on loopback, standing in for Keycloak or Okta in the dev stack and tests.

It publishes what a gateway needs to check tokens the way it would against a real issuer:
discovery (/.well-known/openid-configuration), signing keys (/jwks.json) and an OAuth2
client_credentials token endpoint (/token). Keys are generated at start (RSA 2048 for RS256 by
default; ES256 and the other asymmetric algorithms on request) and can be rotated while serving.

Library use::

    from devstack.oidc import OidcIssuer

    with OidcIssuer(audience="brokerguard") as issuer:
        issuer.url                  # the issuer id, "http://127.0.0.1:PORT"
        issuer.jwks_url             # its published keys
        token = issuer.issue("alice", groups=["analysts"])
        issuer.register_client("svc-payments", "s3cret", groups=["services"])  # for /token
        new_kid = issuer.rotate()   # new signing key; the old one stays published
        issuer.requests             # how many times the keys were fetched

For negative tests, `issue()` takes any claim as a keyword (None leaves a claim out: `exp=None`),
`algorithm="HS256"` signs with the public key as an HMAC secret (the algorithm-confusion attack)
and `algorithm="none"` leaves the token unsigned. A second issuer forges tokens that claim the
first one's identity: `other.issue("alice", iss=issuer.url)`.

Command line::

    python devstack/oidc.py run [--port N] [--state-file F]   # foreground until Ctrl-C/SIGTERM
    python devstack/oidc.py start | status | stop              # the same in the background

The state file (default .devstack/oidc/state.json, mode 0600) holds the issuer URL, the gateway
config section, a ready-made token for the demo identity and the demo client's secret; they are
never printed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

if __package__ in (None, ""):  # run as a script (python devstack/oidc.py ...): import as the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devstack.processes import DevstackError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OIDC_DIR = ROOT / ".devstack" / "oidc"
STATE_FILE = OIDC_DIR / "state.json"

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks.json"
TOKEN_PATH = "/token"
MAX_FORM_BYTES = 64 * 1024
START_TIMEOUT = 30.0

log = logging.getLogger("devstack.oidc")


# --------------------------------------------------------------------------- keys

def _rsa() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY_MAKERS = {
    "RS256": _rsa, "RS384": _rsa, "RS512": _rsa, "PS256": _rsa, "PS384": _rsa, "PS512": _rsa,
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ES512": lambda: ec.generate_private_key(ec.SECP521R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}
# The members RFC 7638 hashes for a key thumbprint, by key type.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key: Any = field(repr=False)
    jwk: dict[str, str] = field(repr=False)

    @classmethod
    def generate(cls, algorithm: str) -> SigningKey:
        if algorithm not in KEY_MAKERS:
            raise DevstackError(f"unsupported algorithm {algorithm}; use one of {', '.join(KEY_MAKERS)}")
        private = KEY_MAKERS[algorithm]()
        public = get_default_algorithms()[algorithm].to_jwk(private.public_key(), as_dict=True)
        members = {k: public[k] for k in _THUMBPRINT_MEMBERS[public["kty"]]}
        kid = _b64url(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True)
                                     .encode()).digest())
        return cls(kid, algorithm, private, {**members, "kid": kid, "alg": algorithm, "use": "sig"})

    def fits(self, algorithm: str) -> bool:
        """Whether this key can sign with `algorithm` (RS256 and PS512 share RSA keys)."""
        if algorithm[:2] in ("RS", "PS"):
            return self.jwk["kty"] == "RSA"
        return algorithm == self.algorithm

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _unsigned_or_hmac(algorithm: str) -> bool:
    return algorithm in ("none", "HS256", "HS384", "HS512")


def _unverified_token(header: dict[str, Any], payload: dict[str, Any], algorithm: str,
                      secret: bytes) -> str:
    """HS* signed with `secret`, or alg "none": tokens a verifier must refuse, built by hand
    because PyJWT rightly will not make an HMAC token from a public key."""
    parts = [_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)]
    signing_input = ".".join(parts).encode("ascii")
    if algorithm == "none":
        return f"{signing_input.decode()}."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[algorithm]
    return f"{signing_input.decode()}.{_b64url(hmac.new(secret, signing_input, digest).digest())}"


# --------------------------------------------------------------------------- the token request

class OAuthError(Exception):
    """An OAuth2 error response (RFC 6749 section 5.2)."""

    def __init__(self, status: int, error: str, description: str, basic: bool = False) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.basic = basic  # the client tried HTTP Basic: a 401 must then carry WWW-Authenticate

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class TokenRequest:
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None
    basic: bool


def parse_token_request(authorization: str | None, content_type: str | None,
                        body: bytes) -> TokenRequest:
    """Read a client_credentials request from outside bytes; raise OAuthError for anything else."""
    if (content_type or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError(400, "invalid_request", "send the parameters as application/x-www-form-urlencoded")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict",
                          max_num_fields=20)
    except ValueError:  # also UnicodeDecodeError
        raise OAuthError(400, "invalid_request", "the form is not valid UTF-8 form encoding") from None
    if any(len(values) > 1 for values in fields.values()):
        raise OAuthError(400, "invalid_request", "a parameter is repeated")
    form = {name: values[0] for name, values in fields.items()}

    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError(400, "invalid_request", "grant_type is missing")
    if grant_type != "client_credentials":
        raise OAuthError(400, "unsupported_grant_type", "only client_credentials is supported")

    basic = authorization is not None
    if basic:
        client_id, secret = _basic_credentials(authorization)
        if "client_secret" in form:
            raise OAuthError(400, "invalid_request", "use one way to authenticate the client, not two")
        if form.get("client_id", client_id) != client_id:
            raise OAuthError(400, "invalid_request", "client_id differs from the Authorization header")
    else:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if not client_id or not secret:
            raise OAuthError(401, "invalid_client", "client authentication is missing")
    return TokenRequest(client_id, secret, form.get("scope"), basic)


def _basic_credentials(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError(401, "invalid_client", "use HTTP Basic client authentication", basic=True)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise OAuthError(401, "invalid_client", "malformed Basic credentials", basic=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise OAuthError(401, "invalid_client", "malformed Basic credentials", basic=True)
    # RFC 6749 2.3.1: both parts are form-encoded before they are joined.
    return unquote_plus(client_id), unquote_plus(secret)


# --------------------------------------------------------------------------- the issuer

@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str = field(repr=False)
    subject: str
    groups: tuple[str, ...]


class OidcIssuer:
    """An OIDC issuer served on 127.0.0.1 from a background thread; see the module docstring."""

    def __init__(self, audience: str = "brokerguard", *, algorithm: str = "RS256",
                 host: str = "127.0.0.1", port: int = 0, token_lifetime_s: int = 300) -> None:
        self.audience = audience
        self.host = host
        self.token_lifetime_s = token_lifetime_s
        self._port = port
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}  # published, oldest first
        self._signing_kid = ""
        self._clients: dict[str, Client] = {}
        self._counts = {"jwks": 0, "discovery": 0, "token": 0}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.rotate(algorithm)

    # ---- lifecycle

    def start(self) -> OidcIssuer:
        if self._server is not None:
            raise DevstackError("the issuer is already serving")
        try:
            server = ThreadingHTTPServer((self.host, self._port), _Handler)
        except OSError as err:
            raise DevstackError(f"cannot listen on {self.host}:{self._port}: {err.strerror}") from err
        server.daemon_threads = True
        server.issuer = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"oidc-issuer-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- addresses

    @property
    def port(self) -> int:
        if self._server is None:
            raise DevstackError("the issuer is not serving: call start() or use it in a `with` block")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The issuer id (the `iss` of its tokens) and base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def discovery_url(self) -> str:
        return self.url + DISCOVERY_PATH

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    def gateway_config(self, **overrides: Any) -> dict[str, Any]:
        """The gateway's `identity.oidc` section for this issuer."""
        return {"issuer": self.url, "audience": [self.audience], "jwks_url": self.jwks_url, **overrides}

    # ---- what is served

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": self.jwks_url,
            "token_endpoint": self.token_url,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted(KEY_MAKERS),
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "groups"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(key.jwk) for key in self._published()]}

    @property
    def requests(self) -> int:
        """How many times the keys (JWKS) were fetched."""
        return self._counts["jwks"]

    @property
    def discovery_requests(self) -> int:
        return self._counts["discovery"]

    @property
    def token_requests(self) -> int:
        return self._counts["token"]

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    # ---- keys

    @property
    def signing_kid(self) -> str:
        return self._signing_kid

    @property
    def kids(self) -> list[str]:
        """The published key ids, oldest first."""
        return [key.kid for key in self._published()]

    def _published(self) -> list[SigningKey]:
        with self._lock:
            return list(self._keys.values())

    def rotate(self, algorithm: str = "RS256", retire: bool = False) -> str:
        """Publish a new key and sign with it from now on; with `retire`, unpublish all others."""
        key = SigningKey.generate(algorithm)
        with self._lock:
            if retire:
                self._keys.clear()
            self._keys[key.kid] = key
            self._signing_kid = key.kid
        return key.kid

    def retire(self, kid: str) -> None:
        """Stop publishing a key; tokens it signed no longer verify once a verifier refetches."""
        with self._lock:
            if kid not in self._keys:
                raise DevstackError(f"no published key {kid}")
            if kid == self._signing_kid:
                raise DevstackError("the signing key cannot be retired: rotate() first")
            del self._keys[kid]

    def _key_for(self, kid: str | None, algorithm: str | None) -> SigningKey:
        with self._lock:
            if kid is not None:
                if kid not in self._keys:
                    raise DevstackError(f"no published key {kid}")
                return self._keys[kid]
            signing = self._keys[self._signing_kid]
            if algorithm is None or _unsigned_or_hmac(algorithm) or signing.fits(algorithm):
                return signing
            for key in reversed(self._keys.values()):
                if key.fits(algorithm):
                    return key
        raise DevstackError(f"no published key signs {algorithm}: call rotate({algorithm!r}) first")

    # ---- tokens

    def issue(self, subject: str, groups: Iterable[str] | None = (), audience: str | list[str] | None = None,
              expires_in: float = 300, not_before: float | None = None, kid: str | None = None,
              algorithm: str | None = None, **claims: Any) -> str:
        """A signed access token (JWT). `not_before` is epoch seconds; extra keywords are claims
        and override the standard ones; a claim given as None (`groups=None` too) is left out."""
        key = self._key_for(kid, algorithm)
        algorithm = algorithm or key.algorithm
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.url, "sub": subject, "aud": audience if audience is not None else self.audience,
            "iat": now, "exp": int(now + expires_in), "jti": secrets.token_hex(8),
            "groups": None if groups is None else list(groups),
        }
        if not_before is not None:
            payload["nbf"] = int(not_before)
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        header = {"kid": key.kid, "typ": "JWT"}
        if _unsigned_or_hmac(algorithm):
            return _unverified_token({"alg": algorithm, **header}, payload, algorithm, key.public_pem())
        if not key.fits(algorithm):
            raise DevstackError(f"key {key.kid} ({key.algorithm}) cannot sign {algorithm}")
        return jwt.encode(payload, key.private_key, algorithm=algorithm, headers=header)

    def register_client(self, client_id: str, secret: str, subject: str | None = None,
                        groups: Iterable[str] = ()) -> Client:
        """Let `client_id` get tokens for `subject` (by default the client id) at /token."""
        if not client_id or not secret:
            raise DevstackError("a client needs an id and a secret")
        client = Client(client_id, secret, subject or client_id, tuple(groups))
        with self._lock:
            self._clients[client_id] = client
        return client

    def token_response(self, authorization: str | None, content_type: str | None,
                       body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer a /token request: (status, JSON body, extra headers)."""
        try:
            request = parse_token_request(authorization, content_type, body)
            with self._lock:
                client = self._clients.get(request.client_id)
            # Compared even for an unknown client, so timing does not tell which ids exist.
            expected = client.secret if client else secrets.token_urlsafe(16)
            if not hmac.compare_digest(expected.encode(), request.client_secret.encode()) or client is None:
                raise OAuthError(401, "invalid_client", "unknown client or wrong secret", request.basic)
        except OAuthError as err:
            challenge = err.basic and err.status == 401
            headers = {"WWW-Authenticate": 'Basic realm="devstack-oidc"'} if challenge else {}
            return err.status, err.body(), headers
        extra = {"scope": request.scope} if request.scope else {}
        token = self.issue(client.subject, client.groups, expires_in=self.token_lifetime_s,
                           azp=client.client_id, client_id=client.client_id, **extra)
        body_out: dict[str, Any] = {"access_token": token, "token_type": "Bearer",
                                    "expires_in": self.token_lifetime_s}
        if request.scope:
            body_out["scope"] = request.scope
        return 200, body_out, {}


class _Handler(BaseHTTPRequestHandler):
    server_version = "devstack-oidc"
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection does not hold a thread for long

    @property
    def issuer(self) -> OidcIssuer:
        return self.server.issuer  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == DISCOVERY_PATH:
            self.issuer._count("discovery")
            self._json(200, self.issuer.discovery())
        elif path == JWKS_PATH:
            self.issuer._count("jwks")
            self._json(200, self.issuer.jwks())
        elif path == TOKEN_PATH:
            self._json(405, {"error": "invalid_request", "error_description": "use POST"}, {"Allow": "POST"})
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != TOKEN_PATH:
            self._json(404, {"error": "not_found"})
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._json(411, {"error": "invalid_request", "error_description": "Content-Length is required"})
            return
        if int(length) > MAX_FORM_BYTES:
            self.close_connection = True
            self._json(413, {"error": "invalid_request", "error_description": "the form is too large"})
            return
        body = self.rfile.read(int(length))
        self.issuer._count("token")
        status, answer, headers = self.issuer.token_response(
            self.headers.get("Authorization"), self.headers.get("Content-Type"), body)
        self._json(status, answer, {"Cache-Control": "no-store", "Pragma": "no-cache", **headers})

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


# --------------------------------------------------------------------------- CLI

DEMO_SUBJECT = "demo"
DEMO_GROUPS = ("demo",)
DEMO_CLIENT = "demo-client"
DEMO_TOKEN_LIFETIME_S = 12 * 3600
_SECRET_KEYS = ("token", "client_secret")


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2)
    tmp.replace(path)  # readers never see half a file


def read_state(path: Path = STATE_FILE) -> dict[str, Any] | None:
    """The state of the issuer started by the CLI, or None."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _alive(state: dict[str, Any]) -> bool:
    # Check the command line too: the pid may have been reused since.
    try:
        cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    except (OSError, KeyError, TypeError):
        return False
    return any(arg.endswith(b"oidc.py") for arg in cmdline) and b"run" in cmdline


def _public(state: dict[str, Any]) -> str:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _SECRET_KEYS}
        return value

    return json.dumps(strip(state), indent=2)


def _cli_state(issuer: OidcIssuer, client_secret: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "issuer": issuer.url,
        "discovery_url": issuer.discovery_url,
        "jwks_url": issuer.jwks_url,
        "token_endpoint": issuer.token_url,
        "audience": issuer.audience,
        "gateway_config": {"identity": {"oidc": issuer.gateway_config()}},
        "demo": {
            "subject": DEMO_SUBJECT, "groups": list(DEMO_GROUPS),
            "expires_at": int(time.time()) + DEMO_TOKEN_LIFETIME_S,
            "token": issuer.issue(DEMO_SUBJECT, DEMO_GROUPS, expires_in=DEMO_TOKEN_LIFETIME_S),
        },
        "client": {"client_id": DEMO_CLIENT, "client_secret": client_secret,
                   "subject": DEMO_CLIENT, "groups": list(DEMO_GROUPS)},
    }


def _cli_run(args: argparse.Namespace) -> int:
    def interrupt(*_: object) -> None:
        # The first signal stops the issuer; further ones must not cut that short.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    state_file = Path(args.state_file)
    if (state := read_state(state_file)) and _alive(state):
        raise DevstackError(f"already running: {state['issuer']} (pid {state['pid']}); stop it first")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    try:
        with OidcIssuer(audience=args.audience, algorithm=args.algorithm, port=args.port) as issuer:
            secret = secrets.token_urlsafe(24)
            issuer.register_client(DEMO_CLIENT, secret, groups=DEMO_GROUPS)
            state = _cli_state(issuer, secret)
            _write_state(state_file, state)
            print(_public(state), flush=True)
            print(f"OIDC issuer at {issuer.url}; the demo token is in {state_file}. Ctrl-C stops it.",
                  file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    finally:
        if (state := read_state(state_file)) and state.get("pid") == os.getpid():
            state_file.unlink(missing_ok=True)


def _cli_start(args: argparse.Namespace) -> int:
    state_file = Path(args.state_file)
    if (state := read_state(state_file)) and _alive(state):
        print(f"already running: {state['issuer']} (pid {state['pid']})")
        return 0
    state_file.unlink(missing_ok=True)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    log_file = state_file.with_suffix(".log")
    cmd = [sys.executable, str(Path(__file__).resolve()), "run", "--state-file", str(state_file),
           "--port", str(args.port), "--audience", args.audience, "--algorithm", args.algorithm]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevstackError(f"the issuer exited with code {proc.returncode}; see {log_file}")
        if (state := read_state(state_file)) and state.get("pid") == proc.pid:
            print(state["issuer"])
            print(f"state: {state_file}", file=sys.stderr)
            return 0
        time.sleep(0.1)
    proc.terminate()
    raise DevstackError(f"the issuer did not start within {START_TIMEOUT:.0f}s; see {log_file}")


def _cli_stop(args: argparse.Namespace) -> int:
    state_file = Path(args.state_file)
    state = read_state(state_file)
    if not state or not _alive(state):
        print("not running")
        state_file.unlink(missing_ok=True)
        return 0
    pid = state["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(state):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    state_file.unlink(missing_ok=True)
    print(f"stopped (pid {pid})")
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    state = read_state(Path(args.state_file))
    if not state or not _alive(state):
        print("not running")
        return 1
    try:
        with urllib.request.urlopen(state["discovery_url"], timeout=2) as response:
            answering = "answering" if json.load(response).get("issuer") == state["issuer"] else "confused"
    except (OSError, ValueError, urllib.error.URLError) as err:
        answering = f"not answering ({err})"
    print(f"running, {answering}")
    print(_public(state))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack/oidc.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (("run", _cli_run, "serve in the foreground until Ctrl-C or SIGTERM"),
                           ("start", _cli_start, "serve in the background"),
                           ("stop", _cli_stop, "stop the background issuer"),
                           ("status", _cli_status, "show the background issuer")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--state-file", default=str(STATE_FILE), help=f"default: {STATE_FILE}")
        if name in ("run", "start"):
            command.add_argument("--port", type=int, default=0, help="default: any free port")
            command.add_argument("--audience", default="brokerguard")
            command.add_argument("--algorithm", default="RS256", choices=sorted(KEY_MAKERS))
        command.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except DevstackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
