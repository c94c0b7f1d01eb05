"""The gateway's side of a client's login, in Kafka's terms: ApiVersions, SaslHandshake and
SaslAuthenticate (and their repetition for KIP-368 re-authentication).

The mechanisms themselves (OAUTHBEARER, SCRAM, PLAIN) and every check of who the client is live
in `brokerguard.identity`; this module only speaks the wire. A failed attempt is answered with
SASL_AUTHENTICATION_FAILED and a message that tells a prober nothing, a fixed time after it
arrived; the connection closes after that answer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from brokerguard.errors import ProtocolError
from brokerguard.identity import AuthenticationFailed, Identity
from brokerguard.session import Session

from . import apis
from .protocol import codec
from .rewrite import response_frame

if TYPE_CHECKING:
    from .adapter import KafkaAdapter

ILLEGAL_SASL_STATE = 34
UNSUPPORTED_SASL_MECHANISM = 33
SASL_AUTHENTICATION_FAILED = 58
UNSUPPORTED_VERSION = 35


class ClientLogin:
    """One connection's login state."""

    def __init__(self, adapter: KafkaAdapter, session: Session, tls: bool) -> None:
        self._adapter = adapter
        self._identities = adapter.pipeline.identities
        self._session = session
        self._tls = tls
        self._mechanism: str | None = None  # chosen by SaslHandshake
        self._exchange: Any = None  # the mechanism's server side, between SaslAuthenticate rounds
        self.failed: str | None = None  # why, once the connection must close after the answer
        self.session_expiry: float | None = None

    def offered(self) -> list[str]:
        return self._identities.mechanisms(self._tls, self._adapter.config.listen.sasl_mechanisms)

    # -- ApiVersions ---------------------------------------------------------------------------

    def api_versions(self, version: int, correlation_id: int, payload: bytes):
        """The answer frame, or a coroutine for it while the broker's versions are not known yet."""
        adapter = self._adapter
        if version > adapter.versions.supported[apis.API_VERSIONS][1]:
            return adapter.api_versions_answer(version, correlation_id)  # UNSUPPORTED_VERSION
        body = _decode(apis.API_VERSIONS, version, payload)
        name, software_version = body.get("client_software_name"), body.get("client_software_version")
        if name:
            self._session.software = f"{name} {software_version or ''}".strip()
        if adapter.broker_api_versions is not None:
            return adapter.api_versions_answer(version, correlation_id)
        return self._api_versions_later(version, correlation_id)

    async def _api_versions_later(self, version: int, correlation_id: int) -> bytes:
        await self._adapter.learn_broker_versions()
        return self._adapter.api_versions_answer(version, correlation_id)

    # -- SaslHandshake -------------------------------------------------------------------------

    def handshake(self, version: int, correlation_id: int, payload: bytes) -> bytes:
        body = _decode(apis.SASL_HANDSHAKE, version, payload)
        offered = self.offered()
        mechanism = body["mechanism"]
        if version < 1:
            # v0 is followed by raw SASL bytes outside Kafka framing; every supported client
            # speaks v1, which the gateway's ApiVersions offers.
            self.failed = "SaslHandshake v0 is not supported"
            error = UNSUPPORTED_VERSION
        elif mechanism in offered:
            self._mechanism, self._exchange = mechanism, None
            error = 0
        else:
            self.failed = f"asked for SASL mechanism {mechanism!r}; offered: {', '.join(offered)}"
            error = UNSUPPORTED_SASL_MECHANISM
        return response_frame(correlation_id, apis.SASL_HANDSHAKE, version,
                              {"error_code": error, "mechanisms": offered})

    # -- SaslAuthenticate ----------------------------------------------------------------------

    async def authenticate(self, version: int, correlation_id: int,
                           payload: bytes) -> tuple[bytes, Identity | None]:
        """(answer frame, identity once the exchange is complete)."""
        started = time.monotonic()
        identities = self._identities
        address = self._session.address
        try:
            body = _decode(apis.SASL_AUTHENTICATE, version, payload)
            if self._mechanism is None:
                self.failed = "SaslAuthenticate before a successful SaslHandshake"
                return self._answer(correlation_id, version, ILLEGAL_SASL_STATE,
                                    "SaslAuthenticate must follow SaslHandshake"), None
            if self._exchange is None:
                self._exchange = identities.start_mechanism(
                    self._mechanism, self._tls, self._adapter.config.listen.sasl_mechanisms)
            # The service checks the address's failure budget, the revocation list, and answers
            # every failure the same fixed time after `started`.
            step = await identities.step(self._exchange, bytes(body["auth_bytes"]), address, started)
            identity = step.identity
            current = self._session.identity
            if identity is not None and current is not None and identity.subject != current.subject:
                raise AuthenticationFailed(
                    f"re-authenticated as {identity.subject!r} on a session of {current.subject!r}",
                    public="Re-authentication must use the same identity")
            if identity is not None and current is None:
                self._adapter.pipeline.check_connections(identity)
        except AuthenticationFailed as err:
            self.failed = f"authentication failed ({self._mechanism}): {err.detail}"
            self._mechanism = self._exchange = None
            return self._answer(correlation_id, version, SASL_AUTHENTICATION_FAILED, err.public), None
        if identity is None:
            return self._answer(correlation_id, version, 0, None, step.challenge), None
        self._mechanism = self._exchange = None
        self.session_expiry = identities.session_expiry(identity, time.time())
        lifetime_ms = 0
        if self.session_expiry is not None:
            lifetime_ms = max(1, int((self.session_expiry - time.time()) * 1000))
        return self._answer(correlation_id, version, 0, None, step.challenge, lifetime_ms), identity

    def _answer(self, correlation_id: int, version: int, error: int, message: str | None,
                auth_bytes: bytes = b"", lifetime_ms: int = 0) -> bytes:
        return response_frame(correlation_id, apis.SASL_AUTHENTICATE, version, {
            "error_code": error, "error_message": message, "auth_bytes": auth_bytes,
            "session_lifetime_ms": lifetime_ms})

    # -- mTLS ----------------------------------------------------------------------------------

    def from_certificate(self, certificate: dict) -> Identity:
        identities = self._identities
        identity = identities.identity_from_certificate(certificate)
        self.session_expiry = identities.session_expiry(identity, time.time())
        return identity


def _decode(api_key: int, version: int, payload: bytes) -> dict:
    try:
        header = codec.decode_request_header(payload)
        return codec.decode_request(api_key, version, payload, header.body_offset, trailing=True)
    except codec.DecodeError as err:
        raise ProtocolError("client", f"bad {codec.API_KEYS[api_key].name} request: {err}") from err
