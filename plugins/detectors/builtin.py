"""The built-in detectors, registered by entry point exactly as a third-party package would.

Patterns are RE2 and deliberately conservative: each needs word boundaries or a distinctive
shape, and wherever a checksum exists (Luhn, IBAN mod-97) or a structure can be checked (SSN
ranges, an IPv6 address, a JWT header) a validator confirms the match. All default to `redact`.
Digits are spelled `[0-9]`: RE2's `\\d` matches digits of every script in UTF-8 mode.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re

from brokerguard.content.detectors import Detector

__all__ = ["AwsAccessKey", "Email", "Iban", "Ipv4", "Ipv6", "Jwt", "PaymentCard", "PemPrivateKey", "Phone",
           "UsSsn", "iban_checks", "luhn_checks"]


_NON_DIGITS = re.compile(r"[^0-9]+")
# Luhn doubles every second digit from the right; a doubled digit counts its digit sum.
_DOUBLED = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))


def _digits(text: str) -> str:
    digits = text.replace(" ", "").replace("-", "")
    if digits.isascii() and digits.isdigit():
        return digits
    return _NON_DIGITS.sub("", text)


def luhn_checks(text: str) -> bool:
    """Whether the digits of `text` (separators ignored) are 13 to 19 long and pass the Luhn check."""
    digits = _digits(text).encode("ascii")
    if not 13 <= len(digits) <= 19:
        return False
    kept, doubled = digits[-1::-2], digits[-2::-2]
    return (sum(kept) - 48 * len(kept) + sum(doubled.translate(_DOUBLED))) % 10 == 0


PaymentCard = Detector(
    name="payment_card",
    pattern=r"\b(?:[0-9][ -]?){12,18}[0-9]\b",
    validate=luhn_checks,
    description="payment card numbers: 13 to 19 digits, spaces or dashes allowed, Luhn-checked",
)


def _ssn_checks(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


UsSsn = Detector(
    name="us_ssn",
    pattern=r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
    validate=_ssn_checks,
    description="US social security numbers AAA-GG-SSSS (never issued: area 000, 666, 9xx; group 00; serial 0000)",
)

Email = Detector(
    name="email",
    pattern=r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}\b",
    description="e-mail addresses with a dotted domain",
)


def _phone_checks(text: str) -> bool:
    if text.startswith("+"):
        # A trunk prefix written as (0), as in +44 (0)20 ..., is not dialled internationally.
        return 8 <= len(_digits(text.replace("(0)", ""))) <= 15
    return 10 <= len(_digits(text)) <= 11


Phone = Detector(
    name="phone",
    pattern=(
        # international: + country code, then digits with single spaces, dots or dashes, (area)
        r"\+[1-9](?:[ .-]?(?:\([0-9]{1,4}\)|[0-9])){6,16}"
        # North American, always with separators: 555-234-5678, 555.234.5678, (555) 234-5678
        r"|(?:\b1[ .-])?(?:\b[2-9][0-9]{2}-[2-9][0-9]{2}-[0-9]{4}|\b[2-9][0-9]{2}\.[2-9][0-9]{2}\.[0-9]{4}"
        r"|\([2-9][0-9]{2}\) ?[2-9][0-9]{2}-[0-9]{4})\b"
        # French 01 23 45 67 89, British 07700 900123 and 020 7946 0958
        r"|\b0[1-9](?:[ .][0-9]{2}){4}\b"
        r"|\b0(?:7[0-9]{3} ?[0-9]{6}|[1-9][0-9]{1,3} [0-9]{3,4} [0-9]{3,4})\b"
    ),
    validate=_phone_checks,
    description="phone numbers: international +..., North American and common European national forms, "
                "always with the separators people write (a bare run of digits is not taken for one)",
)

# Total IBAN length by country (SWIFT IBAN registry); other countries need 15 to 34 characters.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_checks(text: str) -> bool:
    """Whether `text` (spaces ignored) is an IBAN: length for its country and mod-97 == 1."""
    iban = text.replace(" ", "").upper()
    expected = _IBAN_LENGTHS.get(iban[:2])
    if not (len(iban) == expected if expected else 15 <= len(iban) <= 34):
        return False
    rearranged = iban[4:] + iban[:4]
    try:
        return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1
    except ValueError:
        return False




def _iban_pattern() -> str:
    # One alternative per registered length, so a spaced IBAN ends where its country says and
    # never swallows a following word; countries not in the table only in the unspaced form.
    by_length: dict[int, list[str]] = {}
    for country, length in sorted(_IBAN_LENGTHS.items()):
        by_length.setdefault(length, []).append(country)
    shapes = []
    for length, countries in sorted(by_length.items(), reverse=True):
        groups, rest = divmod(length - 4, 4)
        tail = f" ?[A-Za-z0-9]{{{rest}}}" if rest else ""
        shapes.append(f"(?:{'|'.join(countries)})[0-9]{{2}}(?: ?[A-Za-z0-9]{{4}}){{{groups}}}{tail}")
    shapes.append("[A-Z]{2}[0-9]{2}[A-Za-z0-9]{11,30}")
    return rf"\b(?:{'|'.join(shapes)})\b"


Iban = Detector(
    name="iban",
    pattern=_iban_pattern(),
    validate=iban_checks,
    description="IBANs, written together or in groups of four; country length and mod-97 checked",
)

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"

Ipv4 = Detector(
    name="ipv4",
    pattern=rf"\b(?:{_OCTET}\.){{3}}{_OCTET}\b",
    description="IPv4 addresses in dotted-quad form",
)


def _ipv6_checks(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    # `a::b` in prose or code is a valid address too; a real one carries more than that.
    return "." in text or sum(char not in ":" for char in text) >= 4


Ipv6 = Detector(
    name="ipv6",
    pattern=r"(?:\b[0-9A-Fa-f]{1,4}|\B)(?::(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?){2,7}",
    validate=_ipv6_checks,
    description="IPv6 addresses, full or compressed (::), with an embedded IPv4 tail allowed",
)

AwsAccessKey = Detector(
    name="aws_access_key",
    pattern=r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    description="AWS access key ids (long-term AKIA..., temporary ASIA...)",
)


def _jwt_checks(text: str) -> bool:
    header = text.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


Jwt = Detector(
    name="jwt",
    pattern=r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?",
    validate=_jwt_checks,
    description="JSON Web Tokens (signed: three base64url segments; encrypted: five) whose header names an alg",
)

PemPrivateKey = Detector(
    name="pem_private_key",
    pattern=(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
             r"(?:(?s:.)*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
             # cut off before its END line: everything that still looks like the key's body
             r"|[A-Za-z0-9+/=\s:,.-]*)"),
    description="PEM private keys (PKCS#1, PKCS#8, EC, OpenSSH, encrypted), BEGIN line through END line",
)
