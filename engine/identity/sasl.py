"""Server side of the SASL mechanisms clients log in with: OAUTHBEARER (RFC 7628),
SCRAM-SHA-256/512 (RFC 5802, RFC 7677) and PLAIN (RFC 4616).

No I/O and no protocol: each mechanism takes the client's bytes one message at a time and
answers a `Step` (the challenge to send back, and the identity once the client has proved it).
The adapter carries the bytes in its own protocol's frames. Every malformed or hostile message
raises `AuthenticationFailed`, nothing else; which check failed is in `detail`, for the log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from brokerguard.identity import AuthenticationFailed, Identity
from brokerguard.identity.credentials import (
    DEFAULT_ITERATIONS,
    HASHES,
    SALT_BYTES,
    CredentialsFile,
    ScramVerifier,
    salted_password,
    stored_key,
)

if TYPE_CHECKING:
    from brokerguard.identity.oidc import TokenValidator

MAX_MESSAGE_BYTES = 64 * 1024  # a bearer token is a few KiB; SCRAM and PLAIN messages far less
MAX_NAME_CHARS = 255
MAX_NONCE_CHARS = 256


@dataclass(frozen=True, slots=True)
class Step:
    challenge: bytes
    identity: Identity | None = None  # set when the exchange is complete and the client proved itself

    @property
    def done(self) -> bool:
        return self.identity is not None


class Mechanism(Protocol):
    name: str

    async def step(self, data: bytes) -> Step: ...


def _fail(detail: str) -> AuthenticationFailed:
    return AuthenticationFailed(detail)


def _text(data: bytes, what: str) -> str:
    if len(data) > MAX_MESSAGE_BYTES:
        raise _fail(f"{what} is {len(data)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(f"{what} is not UTF-8") from None


def _check_name(name: str, what: str) -> str:
    """SASLprep kept to what matters here: no control characters, a bounded length."""
    if not name or len(name) > MAX_NAME_CHARS:
        raise _fail(f"{what} must be 1 to {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name):
        raise _fail(f"{what} contains control characters")
    return name


def _decode_saslname(value: str, what: str) -> str:
    """RFC 5802 saslname: ',' and '=' arrive escaped as '=2C' and '=3D'; a bare '=' is illegal."""
    if "," in value or re.search(r"=(?!2C|3D)", value):
        raise _fail(f"{what} has an unescaped ',' or '='")
    return _check_name(value.replace("=2C", ",").replace("=3D", "="), what)


# -- OAUTHBEARER ------------------------------------------------------------------------------

_KEY = re.compile(r"[A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7e \t\r\n]*")
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")


def _gs2_authzid(flag: str, authzid: str, allowed_flags: tuple[str, ...]) -> str | None:
    """The GS2 header "flag,[a=authzid]," split at its first comma: return the authzid, if any."""
    if flag not in allowed_flags:
        raise _fail(f"GS2 channel binding flag {flag[:10]!r} is not supported")
    if not authzid:
        return None
    if not authzid.startswith("a="):
        raise _fail("GS2 header has an attribute other than the authorization id")
    return _decode_saslname(authzid[2:], "authorization id")


def parse_oauthbearer(data: bytes) -> tuple[str, str | None, dict[str, str]]:
    """RFC 7628 client initial response -> (token, authzid, other key/value pairs)."""
    text = _text(data, "OAUTHBEARER message")
    header, sep, rest = text.partition(",\x01")  # the header's last comma, then the first kvsep
    flag, comma, authzid_part = header.partition(",")
    if not (sep and comma):
        raise _fail("OAUTHBEARER message has no GS2 header")
    authzid = _gs2_authzid(flag, authzid_part, ("n", "y"))
    # What follows the GS2 header is "key=value\x01" pairs, then a final "\x01".
    body = rest[:-1]
    if not rest.endswith("\x01") or (body and not body.endswith("\x01")):
        raise _fail("OAUTHBEARER message does not end with two separators")
    pairs: dict[str, str] = {}
    for pair in body[:-1].split("\x01") if body else []:
        key, eq, value = pair.partition("=")
        if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            raise _fail("OAUTHBEARER key/value pair is malformed")
        if key in pairs:
            raise _fail(f"OAUTHBEARER key {key!r} appears twice")
        pairs[key] = value
    auth = pairs.pop("auth", None)
    if auth is None:
        raise _fail("OAUTHBEARER message has no auth= value")
    match = _BEARER.fullmatch(auth)
    if match is None:
        raise _fail("OAUTHBEARER auth= value is not 'Bearer <token>'")
    return match.group(1), authzid, pairs


class OAuthBearerServer:
    """One message: the client's token. Checked by the OIDC validator; an authorization id, if
    given, must be the token's own subject (acting for someone else is not supported)."""

    name = "OAUTHBEARER"

    def __init__(self, validator: TokenValidator) -> None:
        self._validator = validator
        self._done = False

    async def step(self, data: bytes) -> Step:
        if self._done:
            raise _fail("OAUTHBEARER message after the exchange ended")
        self._done = True
        token, authzid, _extensions = parse_oauthbearer(data)
        identity = await self._validator.validate(token)
        if authzid is not None and authzid != identity.subject:
            raise _fail(f"authorization id {authzid!r} is not the token's subject {identity.subject!r}")
        return Step(b"", identity)


# -- SCRAM ------------------------------------------------------------------------------------

_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII except ','
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _attributes(text: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not ("a" <= part[0] <= "z" or "A" <= part[0] <= "Z"):
            raise _fail(f"{what} has a malformed attribute")
        pairs.append((part[0], part[2:]))
    return pairs


def _b64decode(value: str, what: str) -> bytes:
    if not _BASE64.fullmatch(value):
        raise _fail(f"{what} is not base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"{what} is not base64") from None


@dataclass(frozen=True, slots=True)
class ClientFirst:
    gs2_header: str  # "n,," or "n,a=NAME," exactly as sent; the client echoes it in c=
    user: str
    nonce: str
    bare: str


def parse_client_first(data: bytes) -> ClientFirst:
    text = _text(data, "SCRAM client-first message")
    flag, sep1, rest = text.partition(",")
    authzid_part, sep2, bare = rest.partition(",")
    if not (sep1 and sep2):
        raise _fail("SCRAM client-first message has no GS2 header")
    if flag == "y" or flag.startswith("p="):
        raise _fail("SCRAM channel binding is not supported: the GS2 header must start with 'n,'")
    authzid = _gs2_authzid(flag, authzid_part, ("n",))
    parts = bare.split(",")
    if parts[0].startswith("m="):
        raise _fail("SCRAM client-first message carries reserved-mext")
    if len(parts) < 2 or not parts[0].startswith("n=") or not parts[1].startswith("r="):
        raise _fail("SCRAM client-first message needs n= then r=")
    # Kafka clients log in with a delegation token by adding the extension tokenauth=true.
    if any(part.startswith("tokenauth=") for part in parts[2:]):
        raise _fail("SCRAM tokenauth: delegation tokens are not supported by the gateway")
    if len(parts) > 2:
        raise _fail("SCRAM extensions are not supported")
    user = _decode_saslname(parts[0][2:], "SCRAM user name")
    nonce = parts[1][2:]
    if not _NONCE.fullmatch(nonce) or len(nonce) > MAX_NONCE_CHARS:
        raise _fail("SCRAM client nonce is empty, too long or not printable")
    if authzid is not None and authzid != user:
        raise _fail(f"SCRAM authorization id {authzid!r} differs from the user {user!r}")
    return ClientFirst(gs2_header=f"{flag},{authzid_part},", user=user, nonce=nonce, bare=bare)


@dataclass(frozen=True, slots=True)
class ClientFinal:
    channel_binding: str
    nonce: str
    proof: bytes
    without_proof: str


def parse_client_final(data: bytes) -> ClientFinal:
    text = _text(data, "SCRAM client-final message")
    without_proof, sep, proof = text.rpartition(",p=")
    if not sep:
        raise _fail("SCRAM client-final message has no proof")
    attributes = _attributes(without_proof, "SCRAM client-final message")
    if len(attributes) != 2 or attributes[0][0] != "c" or attributes[1][0] != "r":
        raise _fail("SCRAM client-final message must be c=, r=, p= without extensions")
    return ClientFinal(
        channel_binding=attributes[0][1],
        nonce=attributes[1][1],
        proof=_b64decode(proof, "SCRAM proof"),
        without_proof=without_proof,
    )


def decoy_salt(decoy_key: bytes, mechanism: str, user: str) -> bytes:
    """The salt an unknown user is answered with: stable per name, unguessable without the key."""
    return hmac.new(decoy_key, f"{mechanism}\0{user}".encode(), hashlib.sha256).digest()[:SALT_BYTES]


def _decoy_verifier(decoy_key: bytes, mechanism: str, user: str) -> ScramVerifier:
    size = hashlib.new(HASHES[mechanism]).digest_size
    return ScramVerifier(
        salt=decoy_salt(decoy_key, mechanism, user),
        iterations=DEFAULT_ITERATIONS,
        stored_key=secrets.token_bytes(size),  # matches no proof
        server_key=secrets.token_bytes(size),
    )


class ScramServer:
    """Two messages: client-first (answered with salt, iterations and our nonce), then
    client-final (its proof checked; answered with our signature). An unknown user gets a decoy
    salt and the default iteration count, and fails only at the proof, like a wrong password."""

    def __init__(self, mechanism: str, credentials: CredentialsFile, decoy_key: bytes) -> None:
        if mechanism not in HASHES:
            raise ValueError(f"unknown SCRAM mechanism {mechanism}")
        self.name = mechanism
        self._hash = HASHES[mechanism]
        self._credentials = credentials
        self._decoy_key = decoy_key
        self._first: ClientFirst | None = None
        self._server_first = ""
        self._nonce = ""
        self._verifier: ScramVerifier | None = None
        self._known = False
        self._groups: frozenset[str] = frozenset()
        self._done = False

    async def step(self, data: bytes) -> Step:
        if self._done:
            raise _fail("SCRAM message after the exchange ended")
        if self._first is None:
            return self._server_first_message(data)
        self._done = True
        return self._server_final_message(data)

    def _server_first_message(self, data: bytes) -> Step:
        first = parse_client_first(data)
        account = self._credentials.account(first.user)
        self._known = account is not None
        verifier = account.verifier(self.name) if account else None
        self._verifier = verifier or _decoy_verifier(self._decoy_key, self.name, first.user)
        self._groups = frozenset(account.groups) if account else frozenset()
        self._nonce = first.nonce + secrets.token_urlsafe(24)
        salt = base64.b64encode(self._verifier.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self._verifier.iterations}"
        self._first = first
        return Step(self._server_first.encode())

    def _server_final_message(self, data: bytes) -> Step:
        assert self._first is not None and self._verifier is not None
        final = parse_client_final(data)
        expected_binding = base64.b64encode(self._first.gs2_header.encode()).decode()
        if final.channel_binding != expected_binding:
            raise _fail("SCRAM channel binding does not repeat the GS2 header")
        # librdkafka 2.0 sends its own nonce again in front of the agreed one; Kafka's broker
        # accepts that (it checks the suffix), so clients in the field depend on it. The agreed
        # nonce, with our random part, must still end the message, and the proof covers it all.
        if not final.nonce.endswith(self._nonce):
            raise _fail("SCRAM nonce in client-final does not end with the one agreed")
        auth_message = f"{self._first.bare},{self._server_first},{final.without_proof}".encode()
        signature = hmac.new(self._verifier.stored_key, auth_message, self._hash).digest()
        proven = False
        if len(final.proof) == len(signature):
            client_key = bytes(a ^ b for a, b in zip(final.proof, signature))
            candidate = hashlib.new(self._hash, client_key).digest()
            proven = hmac.compare_digest(candidate, self._verifier.stored_key)
        if not (proven and self._known):
            raise _fail(f"SCRAM proof for {self._first.user!r} is wrong "
                        f"({'wrong password' if self._known else 'unknown user'})")
        server_signature = hmac.new(self._verifier.server_key, auth_message, self._hash).digest()
        identity = Identity(subject=self._first.user, mechanism=self.name, groups=self._groups)
        return Step(b"v=" + base64.b64encode(server_signature), identity)


# -- PLAIN ------------------------------------------------------------------------------------

def parse_plain(data: bytes) -> tuple[str, str, str]:
    """RFC 4616 message -> (authzid, user, password)."""
    text = _text(data, "PLAIN message")
    parts = text.split("\0")
    if len(parts) != 3:
        raise _fail("PLAIN message must be authzid NUL user NUL password")
    authzid, user, password = parts
    if not password:
        raise _fail("PLAIN password is empty")
    if len(password.encode()) > 1024:
        raise _fail("PLAIN password is longer than 1024 bytes")
    _check_name(user, "PLAIN user name")
    if authzid and authzid != user:
        raise _fail(f"PLAIN authorization id {authzid[:MAX_NAME_CHARS]!r} differs from the user {user!r}")
    return authzid, user, password


class PlainServer:
    """One message. The password is checked by deriving the SCRAM-SHA-512 verifier from it with
    the stored salt; an unknown user costs the same key derivation against a decoy."""

    name = "PLAIN"

    def __init__(self, credentials: CredentialsFile, decoy_key: bytes) -> None:
        self._credentials = credentials
        self._decoy_key = decoy_key
        self._done = False

    async def step(self, data: bytes) -> Step:
        if self._done:
            raise _fail("PLAIN message after the exchange ended")
        self._done = True
        _, user, password = parse_plain(data)
        account = self._credentials.account(user)
        verifier = account.sha512 if account else _decoy_verifier(self._decoy_key, "SCRAM-SHA-512", user)
        # Key derivation takes milliseconds: keep it off the event loop.
        matches = await asyncio.to_thread(_password_matches, verifier, password)
        if not (matches and account is not None):
            raise _fail(f"PLAIN password for {user!r} is wrong "
                        f"({'wrong password' if account else 'unknown user'})")
        return Step(b"", Identity(subject=user, mechanism="PLAIN", groups=frozenset(account.groups)))


def _password_matches(verifier: ScramVerifier, password: str) -> bool:
    salted = salted_password("sha512", password, verifier.salt, verifier.iterations)
    return hmac.compare_digest(stored_key("sha512", salted), verifier.stored_key)
