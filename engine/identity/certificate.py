"""mTLS: the identity in a verified client certificate.

Works on the dict `ssl.SSLSocket.getpeercert()` returns, which Python only fills in for a
certificate that passed verification against the listener's client CA. The subject comes from
the common name, the whole distinguished name (RFC 4514 string, as Kafka's principal mapping
rules see it), or the first subjectAltName of a kind; groups from the organizational units.
"""

from __future__ import annotations

import ssl
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from brokerguard.config import CertificateIdentity
from brokerguard.identity import AuthenticationFailed, Identity

# The names ssl reports for subject attributes, and their RFC 4514 short names.
_SHORT_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_SAN_KINDS = {"san_dns": "DNS", "san_uri": "URI", "san_email": "email"}


def _escape(value: str) -> str:
    """An attribute value escaped as RFC 4514 section 2.4 asks."""
    out = []
    for i, char in enumerate(value):
        if char in '"+,;<>\\' or (i == 0 and char in " #") or (i == len(value) - 1 and char == " "):
            out.append("\\" + char)
        elif char == "\0":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)


def _rdns(peercert: Mapping[str, Any]) -> list[list[tuple[str, str]]]:
    subject = peercert.get("subject", ())
    try:
        return [[(str(name), str(value)) for name, value in rdn] for rdn in subject]
    except (TypeError, ValueError):
        raise AuthenticationFailed("client certificate subject has an unexpected shape") from None


def distinguished_name(peercert: Mapping[str, Any]) -> str:
    """The subject as an RFC 4514 string: most specific RDN first (CN=alice,OU=x,O=y,C=z)."""
    return ",".join(
        "+".join(f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
        for rdn in reversed(_rdns(peercert))
    )


def _attribute(peercert: Mapping[str, Any], name: str) -> list[str]:
    """Values of a subject attribute, most specific first."""
    return [value for rdn in reversed(_rdns(peercert)) for key, value in rdn if key == name]


def _alt_names(peercert: Mapping[str, Any], kind: str) -> Iterable[str]:
    for entry in peercert.get("subjectAltName", ()):
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == kind:
            yield str(entry[1])


def _subject(peercert: Mapping[str, Any], source: str) -> str:
    if source == "dn":
        return distinguished_name(peercert)
    if source == "cn":
        found = _attribute(peercert, "commonName")
    else:
        found = list(_alt_names(peercert, _SAN_KINDS[source]))
    if not found:
        what = "common name" if source == "cn" else f"subjectAltName of type {_SAN_KINDS[source]}"
        raise AuthenticationFailed(f"client certificate has no {what} (identity.certificates.subject_from: {source})")
    return found[0]


def identity_from_certificate(peercert: Mapping[str, Any] | None, config: CertificateIdentity) -> Identity:
    if not peercert:
        raise AuthenticationFailed("no verified client certificate")
    subject = _subject(peercert, config.subject_from)
    if not subject or any(unicodedata.category(c) in ("Cc", "Cf") for c in subject):
        raise AuthenticationFailed("client certificate subject is empty or has control characters")
    groups = frozenset(_attribute(peercert, "organizationalUnitName")) if config.groups_from == "ou" else frozenset()
    expires_at = None
    if isinstance(peercert.get("notAfter"), str):
        try:
            expires_at = float(ssl.cert_time_to_seconds(peercert["notAfter"]))
        except ValueError:
            raise AuthenticationFailed("client certificate notAfter cannot be read") from None
    return Identity(subject=subject, mechanism="mTLS", groups=groups, expires_at=expires_at)
