"""The service-account credentials file behind SCRAM and PLAIN.

It holds, per user, the groups and the SCRAM verifiers of RFC 5802 (salt, iteration count,
StoredKey, ServerKey) for SHA-256 and SHA-512: enough to check a password, never the password
itself, so a copy of the file does not let anyone log in. `brokerguard users` edits it; a running
gateway notices the change (`reload_if_changed`) and uses the new verifiers without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from brokerguard.errors import ConfigError

log = logging.getLogger("brokerguard.identity")

# RFC 7677 asks for at least 4096 (Kafka refuses fewer); the default doubles it.
MIN_ITERATIONS = 4096
DEFAULT_ITERATIONS = 8192
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 32
MAX_NAME_CHARS = 255

HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class CredentialsError(ConfigError):
    """The credentials file cannot be read or the requested change cannot be made."""


class ScramVerifier(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    salt: bytes  # bytes are base64 in the JSON file
    iterations: int
    stored_key: bytes
    server_key: bytes


class Account(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    groups: list[str] = msgspec.field(default_factory=list)
    sha256: ScramVerifier = msgspec.field(name="SCRAM-SHA-256")
    sha512: ScramVerifier = msgspec.field(name="SCRAM-SHA-512")

    def verifier(self, mechanism: str) -> ScramVerifier:
        return self.sha256 if mechanism == "SCRAM-SHA-256" else self.sha512


class _Document(msgspec.Struct, forbid_unknown_fields=True):
    version: int = 1
    # Key for the decoy salts answered to unknown users: stored here so that every worker and
    # every restart answers the same unknown name with the same salt, as it would for a real user.
    decoy_key: bytes | None = None
    users: dict[str, Account] = msgspec.field(default_factory=dict)


def _hmac(key: bytes, message: bytes, hash_name: str) -> bytes:
    return hmac.new(key, message, hash_name).digest()


def salted_password(hash_name: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)


def client_key(hash_name: str, salted: bytes) -> bytes:
    return _hmac(salted, b"Client Key", hash_name)


def stored_key(hash_name: str, salted: bytes) -> bytes:
    return hashlib.new(hash_name, client_key(hash_name, salted)).digest()


def derive_verifier(mechanism: str, password: str, salt: bytes | None = None,
                    iterations: int = DEFAULT_ITERATIONS) -> ScramVerifier:
    """The RFC 5802 verifier of `password` for `mechanism` (a fresh random salt unless given)."""
    hash_name = HASHES[mechanism]
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    salted = salted_password(hash_name, password, salt, iterations)
    return ScramVerifier(
        salt=salt,
        iterations=iterations,
        stored_key=stored_key(hash_name, salted),
        server_key=_hmac(salted, b"Server Key", hash_name),
    )


def check_user_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS:
        raise CredentialsError(f"user name must be 1 to {MAX_NAME_CHARS} characters")
    if not name.isprintable() or name != name.strip():
        raise CredentialsError(f"user name {name!r} has control characters or surrounding spaces")


def check_password(password: str) -> None:
    if not password:
        raise CredentialsError("the password is empty")
    if "\0" in password:
        raise CredentialsError("the password contains a NUL character, which SASL PLAIN cannot carry")


def _check_iterations(iterations: int) -> None:
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise CredentialsError(f"iterations must be from {MIN_ITERATIONS} to {MAX_ITERATIONS}, got {iterations}")


def _check_groups(groups: Iterable[str]) -> list[str]:
    clean = sorted({g.strip() for g in groups if g.strip()})
    for group in clean:
        if not group.isprintable() or len(group) > MAX_NAME_CHARS:
            raise CredentialsError(f"group name {group!r} is not printable or too long")
    return clean


class CredentialsFile:
    """One credentials file: read at construction, edited with a lock, saved atomically (0600)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        if create and not self.path.exists():
            self._document = _Document(decoy_key=secrets.token_bytes(32))
        else:
            self._document, self._stamp = self._read()

    # -- reading ----------------------------------------------------------------------------

    def _read(self) -> tuple[_Document, tuple[int, int, int]]:
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                text = handle.read()
        except FileNotFoundError:
            raise CredentialsError(
                f"credentials file {self.path} does not exist: create it with `brokerguard users add`"
            ) from None
        except OSError as err:
            raise CredentialsError(f"cannot read credentials file {self.path}: {err.strerror}") from err
        try:
            document = msgspec.json.decode(text, type=_Document)
        except msgspec.ValidationError as err:
            raise CredentialsError(f"credentials file {self.path}: {err}") from None
        except msgspec.DecodeError as err:
            raise CredentialsError(f"credentials file {self.path}: not valid JSON: {err}") from None
        if document.version != 1:
            raise CredentialsError(f"credentials file {self.path}: unknown version {document.version}")
        for name, account in document.users.items():
            for verifier in (account.sha256, account.sha512):
                if verifier.iterations < MIN_ITERATIONS or not verifier.salt:
                    raise CredentialsError(
                        f"credentials file {self.path}: user {name!r} has a SCRAM verifier with "
                        f"an empty salt or fewer than {MIN_ITERATIONS} iterations"
                    )
        return document, (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def reload_if_changed(self) -> bool:
        """Read the file again if it changed on disk; a broken new version keeps the old one."""
        try:
            stat = self.path.stat()
        except OSError as err:
            log.warning("credentials file %s: cannot stat (%s); keeping the loaded users", self.path, err.strerror)
            return False
        if (stat.st_mtime_ns, stat.st_size, stat.st_ino) == self._stamp:
            return False
        try:
            self._document, self._stamp = self._read()
        except CredentialsError as err:
            log.warning("%s; keeping the users loaded before", err)
            return False
        log.info("credentials file %s reloaded: %d users", self.path, len(self._document.users))
        return True

    def users(self) -> list[str]:
        return sorted(self._document.users)

    def account(self, user: str) -> Account | None:
        return self._document.users.get(user)

    def groups(self, user: str) -> frozenset[str]:
        account = self.account(user)
        return frozenset(account.groups) if account else frozenset()

    @property
    def decoy_key(self) -> bytes:
        """Secret key for decoy salts. A hand-written file without one gets a key derived from
        its verifiers: the same in every worker, unknown to anyone without the file."""
        if self._document.decoy_key:
            return self._document.decoy_key
        digest = hashlib.blake2b(key=b"brokerguard decoy salt", digest_size=32)
        for name in sorted(self._document.users):
            account = self._document.users[name]
            digest.update(name.encode() + b"\0" + account.sha512.server_key + account.sha256.server_key)
        return digest.digest()

    # -- editing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _editing(self) -> Iterator[_Document]:
        """Lock against other editors, start from the newest saved version, save when done."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.path.exists():
                    self._document, self._stamp = self._read()
                if self._document.decoy_key is None:
                    self._document.decoy_key = secrets.token_bytes(32)
                yield self._document
                self._save()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self) -> None:
        data = msgspec.json.format(msgspec.json.encode(self._document), indent=2) + b"\n"
        descriptor, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        stat = self.path.stat()
        self._stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    @staticmethod
    def _account(password: str, groups: list[str], iterations: int) -> Account:
        return Account(
            sha256=derive_verifier("SCRAM-SHA-256", password, iterations=iterations),
            sha512=derive_verifier("SCRAM-SHA-512", password, iterations=iterations),
            groups=groups,
        )

    def _existing(self, document: _Document, user: str) -> Account:
        try:
            return document.users[user]
        except KeyError:
            raise CredentialsError(f"no user {user!r} in {self.path}") from None

    def add(self, user: str, password: str, groups: Iterable[str] = (),
            iterations: int = DEFAULT_ITERATIONS) -> None:
        check_user_name(user)
        check_password(password)
        _check_iterations(iterations)
        clean_groups = _check_groups(groups)
        with self._editing() as document:
            if user in document.users:
                raise CredentialsError(
                    f"user {user!r} already exists in {self.path}: use `brokerguard users rotate`"
                )
            document.users[user] = self._account(password, clean_groups, iterations)

    def rotate(self, user: str, password: str, iterations: int | None = None) -> None:
        """Replace the user's password (new salts); the old one stops working at the next reload."""
        check_password(password)
        if iterations is not None:
            _check_iterations(iterations)
        with self._editing() as document:
            account = self._existing(document, user)
            count = iterations or max(account.sha512.iterations, MIN_ITERATIONS)
            document.users[user] = self._account(password, account.groups, count)

    def remove(self, user: str) -> None:
        with self._editing() as document:
            self._existing(document, user)
            del document.users[user]

    def set_groups(self, user: str, groups: Iterable[str]) -> None:
        clean_groups = _check_groups(groups)
        with self._editing() as document:
            account = self._existing(document, user)
            document.users[user] = msgspec.structs.replace(account, groups=clean_groups)
