"""The one face adapters see for client authentication, whatever the protocol.

It says which mechanisms a listener offers, starts a mechanism for a connection, runs each step
with the gateway's failure policy around it (a per-address limit on failures; every failure
answered a fixed time after it arrived, so timing says nothing about what failed; revoked
subjects refused), and says when a session must end (KIP-368 re-authentication).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from brokerguard.config import IdentityConfig
from brokerguard.identity import AuthenticationFailed, Identity
from brokerguard.identity import certificate
from brokerguard.identity.credentials import CredentialsFile
from brokerguard.identity.oidc import TokenValidator
from brokerguard.identity.sasl import Mechanism, OAuthBearerServer, PlainServer, ScramServer, Step

log = logging.getLogger("brokerguard.identity")

WINDOW_S = 60.0
MAX_TRACKED_ADDRESSES = 100_000
# Preference order when a listener lists none of its own.
ALL_MECHANISMS = ("OAUTHBEARER", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class FailureLimiter:
    """Failed authentications per client address in a sliding one-minute window."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_minute
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is not None:
            while failures and failures[0] <= now - WINDOW_S:
                failures.popleft()
        return failures

    def check(self, address: str) -> None:
        failures = self._recent(address, self._clock())
        if failures is not None and len(failures) >= self._limit:
            raise AuthenticationFailed(
                f"too many failed authentications from {address}",
                public="Too many failed authentications; try again later",
            )

    def record(self, address: str) -> None:
        now = self._clock()
        failures = self._recent(address, now)
        if failures is None:
            if len(self._failures) >= MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)  # forget the address tracked longest
            failures = self._failures[address] = deque(maxlen=self._limit)
        failures.append(now)

    def prune(self) -> None:
        now = self._clock()
        for address in [a for a in self._failures if not self._recent(a, now)]:
            del self._failures[address]


class IdentityService:
    """Client authentication for every listener of one gateway process."""

    def __init__(self, config: IdentityConfig, is_revoked: Callable[[str], bool], *,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._is_revoked = is_revoked
        self._clock = clock
        self._wall_clock = wall_clock
        self._limiter = FailureLimiter(config.failed_auth_per_minute, clock)
        # Built now so a missing or broken credentials file fails at start, naming the file.
        self.credentials = CredentialsFile(config.credentials_file) if config.credentials_file else None
        self.validator = TokenValidator(config.oidc, clock=wall_clock) if config.oidc else None

    async def start(self) -> None:
        if self.validator is not None:
            await self.validator.start()

    async def close(self) -> None:
        if self.validator is not None:
            await self.validator.close()

    def maintain(self) -> None:
        """Call every few seconds: picks up an edited credentials file, forgets old failures."""
        if self.credentials is not None:
            self.credentials.reload_if_changed()
        self._limiter.prune()

    # -- mechanisms -------------------------------------------------------------------------

    def mechanisms(self, tls: bool, wanted: list[str] | None = None) -> list[str]:
        """The SASL mechanisms a listener offers: those the identity config can check, PLAIN only
        over TLS (unless allowed without), narrowed to the listener's own list if it has one."""
        available = set()
        if self.validator is not None:
            available.add("OAUTHBEARER")
        if self.credentials is not None:
            available |= {"SCRAM-SHA-512", "SCRAM-SHA-256"}
            if tls or self._config.allow_plain_without_tls:
                available.add("PLAIN")
        return [name for name in ALL_MECHANISMS if name in available and (wanted is None or name in wanted)]

    def start_mechanism(self, name: str, tls: bool, wanted: list[str] | None = None) -> Mechanism:
        """A fresh server-side mechanism for one login; AuthenticationFailed if not offered here."""
        offered = self.mechanisms(tls, wanted)
        if name not in offered:
            raise AuthenticationFailed(
                f"mechanism {name[:40]!r} is not offered (offered: {', '.join(offered) or 'none'})",
                public=f"Unsupported SASL mechanism {name[:40]}",
            )
        if name == "OAUTHBEARER":
            assert self.validator is not None
            return OAuthBearerServer(self.validator)
        assert self.credentials is not None
        if name == "PLAIN":
            return PlainServer(self.credentials, self.credentials.decoy_key)
        return ScramServer(name, self.credentials, self.credentials.decoy_key)

    async def step(self, mechanism: Mechanism, data: bytes, address: str, started: float | None = None) -> Step:
        """One message of a login with the failure policy around it. On failure it records the
        address, waits until `failed_auth_delay_ms` after `started` (default: now), and raises
        AuthenticationFailed: the caller just answers with its `public` message."""
        started = self._clock() if started is None else started
        try:
            self.check_address(address)
        except AuthenticationFailed as err:
            log.debug("authentication from %s refused: %s", address, err.detail)
            await asyncio.sleep(self.failure_delay(started))
            raise
        try:
            result = await mechanism.step(data)
            if result.identity is not None:
                result = Step(result.challenge, self.accept(result.identity))
            return result
        except AuthenticationFailed as err:
            self.record_failure(address)
            log.debug("authentication from %s failed (%s): %s", address, mechanism.name, err.detail)
            await asyncio.sleep(self.failure_delay(started))
            raise

    # -- failure policy ---------------------------------------------------------------------

    def check_address(self, address: str) -> None:
        self._limiter.check(address)

    def record_failure(self, address: str) -> None:
        self._limiter.record(address)

    def failure_delay(self, started: float) -> float:
        """Seconds still to wait so a failure is answered `failed_auth_delay_ms` after `started`
        (a value of this service's clock, time.monotonic() by default)."""
        return max(0.0, started + self._config.failed_auth_delay_ms / 1000 - self._clock())

    def accept(self, identity: Identity) -> Identity:
        """The last check after a successful proof: the subject must not be revoked."""
        if self._is_revoked(identity.subject):
            raise AuthenticationFailed(f"subject {identity.subject!r} is revoked")
        return identity

    def identity_from_certificate(self, peercert: Mapping[str, Any] | None) -> Identity:
        """The identity of a verified client certificate, revocation checked."""
        return self.accept(certificate.identity_from_certificate(peercert, self._config.certificates))

    def session_expiry(self, identity: Identity, now: float | None = None) -> float | None:
        """Epoch seconds when the session must re-authenticate or end: the token's (or the
        certificate's) expiry, capped by `max_session_lifetime_s`; None if unbounded."""
        now = self._wall_clock() if now is None else now
        limits = [identity.expires_at] if identity.expires_at is not None else []
        if self._config.max_session_lifetime_s > 0:
            limits.append(now + self._config.max_session_lifetime_s)
        return min(limits) if limits else None
