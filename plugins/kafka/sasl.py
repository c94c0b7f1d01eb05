"""SASL client mechanisms the gateway uses to log in to the broker with its own credentials:
PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, RFC 7677)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from brokerguard.secret import Secret

# Kafka refuses SCRAM credentials stored with fewer iterations; a server offering fewer is not Kafka.
MIN_ITERATIONS = 4096


class SaslError(Exception):
    pass


class Plain:
    def __init__(self, username: str, password: Secret) -> None:
        self._token = b"\0" + username.encode() + b"\0" + password.reveal().encode()

    def first(self) -> bytes:
        return self._token

    def respond(self, challenge: bytes) -> bytes | None:
        return None  # PLAIN is one message; anything after it is the server's empty ack


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _attributes(message: bytes) -> dict[str, str]:
    try:
        text = message.decode()
        return dict(part.split("=", 1) for part in text.split(","))
    except (UnicodeDecodeError, ValueError):
        raise SaslError("malformed SCRAM message from the broker") from None


class Scram:
    def __init__(self, mechanism: str, username: str, password: Secret) -> None:
        self._hash = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        self._password = password
        self._nonce = secrets.token_urlsafe(24)
        self._first_bare = f"n={_escape(username)},r={self._nonce}"
        self._server_signature: bytes | None = None
        self._done = False

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self._hash).digest()

    def first(self) -> bytes:
        return ("n,," + self._first_bare).encode()

    def respond(self, challenge: bytes) -> bytes | None:
        if self._server_signature is None:
            return self._client_final(challenge)
        if not self._done:
            self._verify(challenge)
            self._done = True
            return None
        raise SaslError("unexpected SCRAM message after the exchange ended")

    def _client_final(self, server_first: bytes) -> bytes:
        attrs = _attributes(server_first)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SaslError("the broker's SCRAM nonce does not extend ours")
        if salt is None or not iterations.isdigit() or int(iterations) < MIN_ITERATIONS:
            raise SaslError("the broker's SCRAM salt or iteration count is invalid")
        salted = hashlib.pbkdf2_hmac(
            self._hash, self._password.reveal().encode(), base64.b64decode(salt), int(iterations)
        )
        client_key = self._hmac(salted, b"Client Key")
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{server_first.decode()},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self._server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def _verify(self, server_final: bytes) -> None:
        attrs = _attributes(server_final)
        if "e" in attrs:
            raise SaslError(f"the broker refused the SCRAM login: {attrs['e']}")
        try:
            given = base64.b64decode(attrs.get("v", ""), validate=True)
        except ValueError:
            given = b""
        if not hmac.compare_digest(given, self._server_signature or b""):
            raise SaslError("the broker's SCRAM signature is wrong: it does not know our password")


def mechanism(name: str, username: str, password: Secret) -> Plain | Scram:
    if name == "PLAIN":
        return Plain(username, password)
    return Scram(name, username, password)
