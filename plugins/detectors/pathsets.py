"""The built-in path sets, registered by entry point exactly as a third-party package would.

`credentials`: members that by their name hold a secret, at any depth of a record, redacted.
Names are matched exactly, as a profile's paths are: `password`, not `Password` or `user_password`;
a set of an organisation's own spellings is a package like this one.
"""

from __future__ import annotations

from brokerguard.content.detectors import PathSet

__all__ = ["CREDENTIAL_NAMES", "Credentials"]

CREDENTIAL_NAMES = ("password", "passwd", "passphrase", "secret", "client_secret", "api_key", "apikey",
                    "access_token", "refresh_token", "id_token", "private_key")

Credentials = PathSet(
    name="credentials",
    fields=[{"path": f"$..{name}", "strategy": "redact", "with": "[REDACTED:credentials]"} for name in CREDENTIAL_NAMES],
    description="members named as credentials (password, secret, api_key, access_token...) at any depth",
)
