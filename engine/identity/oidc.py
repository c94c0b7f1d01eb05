"""OAUTHBEARER tokens: JWTs from the configured OIDC issuer, checked against its published keys.

The keys (JWKS) are fetched from `jwks_url` or the issuer's discovery document, in a thread so
the event loop never waits on the network, and kept in memory. They are fetched again every
`jwks_refresh_s`, and at once when a token names a key id not seen yet (the issuer rotated its
keys), at most every `jwks_min_refresh_s` and one fetch at a time, so a flood of tokens with
made-up key ids cannot turn the gateway against the issuer. A failed fetch keeps the keys that
were loaded before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from brokerguard.config import Oidc
from brokerguard.identity import AuthenticationFailed, Identity

log = logging.getLogger("brokerguard.identity")

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_TOKEN_CHARS = 64 * 1024
MAX_KEYS_TRIED = 8  # a token without a key id is tried against at most this many keys

_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


class KeyFetchError(Exception):
    """The issuer's discovery document or key set could not be fetched or used."""


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    alg: str | None  # the JWK's own `alg`, if it names one
    key: PublicKey

    def fits(self, alg: str) -> bool:
        """Whether a token signed with `alg` may be checked with this key: the key's type (and
        curve) must be the algorithm's, and a JWK naming its own `alg` is used with that one only."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg[:2] in ("RS", "PS"):
            return isinstance(self.key, rsa.RSAPublicKey)
        if alg in _EC_CURVES:
            return isinstance(self.key, ec.EllipticCurvePublicKey) and self.key.curve.name == _EC_CURVES[alg]
        if alg == "EdDSA":
            return isinstance(self.key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
        return False


@dataclass(frozen=True, slots=True)
class KeySet:
    """Verification keys by key id (None for keys published without one)."""

    keys: Mapping[str | None, tuple[VerificationKey, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(group) for group in self.keys.values())

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        if kid is not None:
            named = self.keys.get(kid, ())
        else:
            named = tuple(key for group in self.keys.values() for key in group)
        return [key for key in named if key.fits(alg)][:MAX_KEYS_TRIED]


def parse_key_set(document: Any, source: str) -> KeySet:
    """A JWKS document -> the public signing keys in it. Symmetric, private, encryption-only and
    unusable keys are skipped; a set with no usable key at all is an error."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFetchError(f"{source} is not a JWKS document (no `keys` list)")
    keys: dict[str | None, list[VerificationKey]] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid, alg = entry.get("kid"), entry.get("alg")
        if (entry.get("kty") not in ("RSA", "EC", "OKP") or "d" in entry
                or not isinstance(kid, (str, type(None))) or not isinstance(alg, (str, type(None)))):
            continue
        try:
            public = jwt.PyJWK(entry).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
            log.warning("%s: skipping a key that cannot be used (kid %r)", source, kid)
            continue
        if isinstance(public, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey,
                               ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            keys.setdefault(kid, []).append(VerificationKey(kid, alg, public))
    if not keys:
        raise KeyFetchError(f"{source} has no usable public signing key")
    return KeySet({kid: tuple(group) for kid, group in keys.items()})


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, "redirect to a non-HTTP address", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class TokenValidator:
    """Checks bearer tokens against the issuer's current keys; `start()` begins the key refresher."""

    def __init__(self, config: Oidc, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._keys = KeySet()
        self._last_attempt = -math.inf  # time.monotonic() of the last fetch, for the rate limit
        self._inflight: asyncio.Future[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None
        context = ssl.create_default_context(cafile=config.ca_file)
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _HttpOnlyRedirects()
        )

    @property
    def keys(self) -> KeySet:
        return self._keys

    # -- keys -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the keys once (a failure is logged, not raised) and start refreshing them."""
        await self.refresh()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_periodically(), name="oidc-jwks-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def _refresh_periodically(self) -> None:
        while True:
            # Without keys no token can be checked: try again soon rather than in minutes.
            wait = self._config.jwks_refresh_s if len(self._keys) else max(self._config.jwks_min_refresh_s, 1.0)
            await asyncio.sleep(wait)
            await self.refresh()

    async def refresh(self) -> bool:
        """Fetch the keys now, joining a fetch already under way. True if new keys were loaded."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._fetch_finished)
        return await asyncio.shield(self._inflight)

    def _fetch_finished(self, _: asyncio.Future[bool]) -> None:
        self._inflight = None

    async def _refresh_for_unknown_key(self) -> bool:
        if self._inflight is None and time.monotonic() - self._last_attempt < self._config.jwks_min_refresh_s:
            return False
        return await self.refresh()

    async def _fetch(self) -> bool:
        self._last_attempt = time.monotonic()
        try:
            keys = await asyncio.to_thread(self._download_keys)
        except Exception as err:  # the network boundary: whatever failed, keep serving old keys
            log.warning("OIDC keys for %s could not be fetched: %s; keeping the %d keys loaded before",
                        self._config.issuer, err, len(self._keys))
            return False
        self._keys = keys
        log.info("OIDC keys for %s loaded: %d keys", self._config.issuer, len(keys))
        return True

    def _get_json(self, url: str) -> Any:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise KeyFetchError(f"{url} is not an http(s) address")
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "brokerguard"})
        try:
            with self._opener.open(request, timeout=self._config.jwks_timeout_s) as response:
                body = response.read(MAX_DOCUMENT_BYTES + 1)
        except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts, TLS errors
            raise KeyFetchError(f"{url}: {err}") from err
        if len(body) > MAX_DOCUMENT_BYTES:
            raise KeyFetchError(f"{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError as err:
            raise KeyFetchError(f"{url}: not JSON: {err}") from None

    def _jwks_url(self) -> str:
        if self._config.jwks_url:
            return self._config.jwks_url
        url = self._config.discovery
        document = self._get_json(url)
        if not isinstance(document, dict):
            raise KeyFetchError(f"{url} is not an OpenID discovery document")
        if document.get("issuer") != self._config.issuer:
            raise KeyFetchError(
                f"{url} names the issuer {document.get('issuer')!r}, not the configured {self._config.issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise KeyFetchError(f"{url} has no `jwks_uri`")
        return jwks_uri

    def _download_keys(self) -> KeySet:
        url = self._jwks_url()
        return parse_key_set(self._get_json(url), url)

    # -- tokens -----------------------------------------------------------------------------

    async def validate(self, token: str) -> Identity:
        """The identity a token proves, or AuthenticationFailed saying (in `detail`) why not."""
        alg, kid = self._header(token)
        candidates = self._keys.candidates(kid, alg)
        if not candidates and (kid is None or kid not in self._keys.keys):
            await self._refresh_for_unknown_key()
            candidates = self._keys.candidates(kid, alg)
        if not candidates:
            if kid is not None and kid in self._keys.keys:
                raise AuthenticationFailed(f"token alg {alg} does not fit the key {kid!r}")
            raise AuthenticationFailed(f"no key of issuer {self._config.issuer} matches the token (kid {kid!r})")
        claims = self._verified_claims(token, alg, candidates)
        return check_claims(claims, self._config, self._clock())

    def _header(self, token: str) -> tuple[str, str | None]:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed("token is not a string or too long")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError) as err:
            raise AuthenticationFailed(f"token is not a JWT: {err}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise AuthenticationFailed("token is unsigned (alg none) or names no algorithm")
        if alg.upper().startswith("HS"):
            raise AuthenticationFailed(f"token alg {alg} is symmetric: refused")
        if alg not in self._config.algorithms:
            raise AuthenticationFailed(f"token alg {alg} is not one of {', '.join(self._config.algorithms)}")
        if "crit" in header or "b64" in header:
            raise AuthenticationFailed("token header has critical extensions the gateway does not implement")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationFailed("token kid is not a string")
        return alg, kid

    @staticmethod
    def _verified_claims(token: str, alg: str, candidates: list[VerificationKey]) -> dict[str, Any]:
        for key in candidates:
            try:
                payload = jwt.PyJWS().decode_complete(token, key=key.key, algorithms=[alg])["payload"]
            except jwt.InvalidSignatureError:
                continue
            except (jwt.PyJWTError, ValueError, TypeError) as err:
                raise AuthenticationFailed(f"token cannot be checked: {err}") from None
            try:
                claims = msgspec.json.decode(payload)
            except msgspec.DecodeError:
                raise AuthenticationFailed("token claims are not JSON") from None
            if not isinstance(claims, dict):
                raise AuthenticationFailed("token claims are not a JSON object")
            return claims
        raise AuthenticationFailed("token signature does not verify")


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name not present as such reaches into nested objects
    (`realm_access.roles`)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _time(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AuthenticationFailed(f"token claim {name} is not a number")
    return float(value)


def _groups(value: Any, name: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(g for g in value.replace(",", " ").split() if g)
    if isinstance(value, list) and all(isinstance(g, str) for g in value):
        return frozenset(g for g in value if g)
    # Refuse rather than ignore: a dropped group could slip past a rule that denies that group.
    raise AuthenticationFailed(f"token claim {name} is not a list of strings")


def check_claims(claims: dict[str, Any], config: Oidc, now: float) -> Identity:
    """The registered claims of a signature-checked token, then the identity it names."""
    skew = config.clock_skew_s
    if claims.get("iss") != config.issuer:
        raise AuthenticationFailed(f"token issuer {str(claims.get('iss'))[:200]!r} is not {config.issuer!r}")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or not any(isinstance(a, str) and a in config.audience for a in audiences):
        raise AuthenticationFailed(f"token audience {str(audience)[:200]!r} is not one of {config.audience}")
    expires = _time(claims, "exp")
    if expires is None:
        raise AuthenticationFailed("token has no exp claim")
    if now - skew >= expires:
        raise AuthenticationFailed(f"token expired {now - expires:.0f}s ago")
    not_before = _time(claims, "nbf")
    if not_before is not None and now + skew < not_before:
        raise AuthenticationFailed(f"token is not valid for another {not_before - now:.0f}s (nbf)")
    issued = _time(claims, "iat")
    if issued is not None and now + skew < issued:
        raise AuthenticationFailed(f"token was issued {issued - now:.0f}s in the future (iat)")
    subject = _claim(claims, config.subject_claim)
    if not isinstance(subject, str) or not subject or len(subject) > 1024:
        raise AuthenticationFailed(f"token claim {config.subject_claim} is missing or not a string")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in subject):
        raise AuthenticationFailed(f"token claim {config.subject_claim} contains control characters")
    groups = _groups(_claim(claims, config.groups_claim), config.groups_claim) if config.groups_claim else frozenset()
    return Identity(
        subject=subject,
        mechanism="OAUTHBEARER",
        groups=groups,
        claims=MappingProxyType(claims),
        expires_at=expires,
    )
