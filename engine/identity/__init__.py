"""Who is asking: the identity a client proved, whatever the protocol or the mechanism.

Mechanisms (SASL OAUTHBEARER with OIDC tokens, SCRAM and PLAIN against the credentials file,
mTLS certificates) each end in one `Identity`; rules match on it and sessions carry it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from brokerguard.errors import BrokerGuardError

_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})
# Claims that differ from one token to the next of the same identity: not part of the cache key,
# so a re-authentication keeps the cached decisions.
_PER_TOKEN_CLAIMS = frozenset({"exp", "iat", "nbf", "jti", "auth_time"})


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    mechanism: str  # "OAUTHBEARER", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "mTLS"
    groups: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS, compare=False)
    expires_at: float | None = None  # epoch seconds; the session ends then unless re-authenticated

    @property
    def key(self) -> str:
        """Equal for identities that every rule must treat alike: the decision cache's key."""
        lasting = {k: v for k, v in self.claims.items() if k not in _PER_TOKEN_CLAIMS}
        claims = json.dumps(lasting, sort_keys=True, default=str, separators=(",", ":"))
        digest = hashlib.blake2b(claims.encode(), digest_size=8).hexdigest()
        return f"{self.mechanism}\x00{self.subject}\x00{','.join(sorted(self.groups))}\x00{digest}"

    def __str__(self) -> str:
        return f"{self.subject} ({self.mechanism})"


class AuthenticationFailed(BrokerGuardError):
    """A client could not prove who it is.

    `public` is all the client is told; `detail` (which check failed) goes to the gateway's log
    only, so a prober learns nothing about which users exist or which check caught it.
    """

    def __init__(self, detail: str, public: str = "Authentication failed") -> None:
        super().__init__(detail)
        self.detail = detail
        self.public = public
