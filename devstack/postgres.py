"""A real PostgreSQL server for tests and the dev stack, on loopback with password logins.

Standard library only. The binaries (`initdb`, `postgres`) come from PATH or from Debian's
`postgresql` package (/usr/lib/postgresql/VERSION/bin, newest first); readiness is checked
with a hand-encoded startup message.

PostgreSQL refuses to run as root. Run as root, the server runs as the `postgres` account (or
`nobody` when there is none): the child process drops to it itself (Popen's `user`/`group`),
so no `su`/`runuser`, PAM session or wrapper process stands between us and the postmaster. Its
files then live where that account can reach them: in the work dir if every directory above it
lets the account in, otherwise in a private directory under the system temp dir.

Library use::

    from devstack.postgres import PostgresServer

    with PostgresServer() as server:
        server.dsn            # "host=127.0.0.1 port=PORT dbname=audit user=gateway" (no password)
        server.password       # the `gateway` role's password (SCRAM-SHA-256)
        server.superuser_dsn, server.superuser_password   # the `postgres` superuser

"""

from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from devstack.processes import DevstackError, PortClash, ServerProcess, free_ports, recv_exactly, stop_group, tail

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_DIR = ROOT / ".devstack" / "postgres"
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
SERVER_ACCOUNTS = ("postgres", "nobody")  # whom to run as when we are root, in order
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PROTOCOL_3 = 196608
SCRAM_ITERATIONS = 4096

# A throwaway server: durability is traded for speed (tests share 2 cores with a broker).
SERVER_CONFIG = """
# brokerguard devstack
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
max_connections = 60
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_error_statement = panic
"""

# Loopback TCP with SCRAM only: there is no Unix socket and no `trust` line.
HBA_CONFIG = """\
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   127.0.0.1/32  scram-sha-256
"""


# --------------------------------------------------------------------------- binaries and accounts

def find_bin_dir() -> Path:
    """The directory holding initdb and postgres: PATH first, then Debian's versioned dirs."""
    on_path = [shutil.which(name) for name in ("initdb", "postgres")]
    if all(on_path):
        return Path(os.path.realpath(on_path[0])).parent
    candidates = sorted(Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/")), key=_version_key, reverse=True)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    raise DevstackError("PostgreSQL is not installed: no initdb and postgres on PATH or in "
                        f"{DEBIAN_BIN_DIRS} (on Debian: apt-get install postgresql, or `make setup`)")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def server_account() -> pwd.struct_passwd | None:
    """None when this process may run PostgreSQL itself; else the account it runs as."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise DevstackError("running as root, which PostgreSQL refuses, and there is no account to run it as "
                        f"(looked for {', '.join(SERVER_ACCOUNTS)}): create one, e.g. `useradd --system postgres`")


def _enterable(directory: Path, account: pwd.struct_passwd) -> bool:
    """Whether `account` may pass through `directory` and every directory above it."""
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}
    for each in (directory, *directory.parents):
        info = each.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL stores for `password` (RFC 5802 / 7677).

    Roles are created with this rather than the password, so no statement, log line or error
    message of the server ever holds a password.
    """
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# --------------------------------------------------------------------------- wire

def probe(host: str, port: int, user: str, database: str, timeout: float = 2.0) -> str | None:
    """None when the server asks `user` for a SCRAM-SHA-256 login to `database` (it is up, and
    password logins are on); otherwise what it answered. The probe leaves before logging in."""
    params = b"".join(key + b"\0" + value.encode() + b"\0" for key, value in ((b"user", user),
                                                                              (b"database", database))) + b"\0"
    body = struct.pack("!i", PROTOCOL_3) + params
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!i", len(body) + 4) + body)
        kind = recv_exactly(sock, 1)
        (length,) = struct.unpack("!i", recv_exactly(sock, 4))
        payload = recv_exactly(sock, length - 4)
    if kind == b"R":
        (method,) = struct.unpack("!i", payload[:4])
        mechanisms = payload[4:].split(b"\0")
        if method == 10 and b"SCRAM-SHA-256" in mechanisms:
            return None
        return f"asks for authentication method {method}, not SCRAM-SHA-256"
    if kind == b"E":
        fields = {part[:1].decode(): part[1:].decode(errors="replace") for part in payload.split(b"\0") if part}
        return f"{fields.get('S', 'ERROR')} {fields.get('C', '?')}: {fields.get('M', '')}"
    return f"unexpected message {kind!r}"


# --------------------------------------------------------------------------- server

class PostgresServer(ServerProcess):
    """One PostgreSQL server on 127.0.0.1 and a free port, in its own process group.

    Roles: `postgres` (superuser) and `username` (owner of `database`, not a superuser), each
    with a fresh random password checked with SCRAM-SHA-256. An auto-created work dir is removed
    by stop() unless `keep_work_dir`.
    """

    def __init__(self, work_dir: str | os.PathLike | None = None, *, database: str = "audit",
                 username: str = "gateway", ready_timeout: float = READY_TIMEOUT,
                 keep_work_dir: bool | None = None) -> None:
        for what, name in (("database", database), ("username", username)):
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
                raise DevstackError(f"{what} {name!r}: use lower-case letters, digits and _")
        self._requested_dir = Path(work_dir) if work_dir else None
        self.keep_work_dir = keep_work_dir if keep_work_dir is not None else work_dir is not None
        self.database = database
        self.username = username
        self.superuser = "postgres"
        self.password: str | None = None
        self.superuser_password: str | None = None
        self.ready_timeout = ready_timeout
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.work_dir: Path | None = None
        self.server_dir: Path | None = None  # data dir and log: where the server's account can reach
        self.data_dir: Path | None = None
        self.log_file: Path | None = None
        self.bin_dir: Path | None = None
        self.account: pwd.struct_passwd | None = None
        self.version: str | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} pid={self.pid}>"

    # ---- addresses
    @property
    def dsn(self) -> str:
        """libpq connection string of the `username` role, without its password."""
        return f"host={self.host} port={self.port} dbname={self.database} user={self.username}"

    @property
    def superuser_dsn(self) -> str:
        return f"host={self.host} port={self.port} dbname={self.database} user={self.superuser}"

    # ---- lifecycle
    def start(self) -> PostgresServer:
        if self._proc is not None:
            raise DevstackError("server already started")
        self.bin_dir = find_bin_dir()
        self.account = server_account()
        self._prepare_dirs()
        self.password = secrets.token_urlsafe(24)
        self.superuser_password = secrets.token_urlsafe(24)
        try:
            self._initdb()
            self._create_roles()
        except BaseException:
            self.stop(_remove=False)  # keep the files for whoever reads the error
            raise
        self._start_on_free_ports(self._choose_port)
        return self

    def _choose_port(self) -> None:
        self.port = free_ports()[0]

    def _prepare_dirs(self) -> None:
        if self._requested_dir is not None:
            self.work_dir = self._requested_dir.resolve()
            if self.work_dir.exists():
                shutil.rmtree(self.work_dir)
            self.work_dir.mkdir(parents=True)
        else:
            POSTGRES_DIR.mkdir(parents=True, exist_ok=True)
            self.work_dir = Path(tempfile.mkdtemp(prefix="server-", dir=POSTGRES_DIR))
        os.chmod(self.work_dir, 0o711)  # nothing secret here: the data dir below is the account's, 0700
        account = self.account
        if account is None or _enterable(self.work_dir, account):
            self.server_dir = self.work_dir / "server"
            self.server_dir.mkdir()
        else:
            # e.g. pytest's /tmp/pytest-of-root is 0700: the account could not open its data dir.
            self.server_dir = Path(tempfile.mkdtemp(prefix="brokerguard-postgres-"))
            if not _enterable(self.server_dir.parent, account):
                raise DevstackError(f"the {account.pw_name} account cannot enter {self.work_dir} nor "
                                    f"{self.server_dir.parent}; give it a work dir it can reach")
            (self.work_dir / "server").symlink_to(self.server_dir)  # for whoever looks in the work dir
        os.chmod(self.server_dir, 0o700)
        if account is not None:
            os.chown(self.server_dir, account.pw_uid, account.pw_gid)
        self.data_dir = self.server_dir / "data"
        self.log_file = self.server_dir / "postgres.log"

    def _run_as_server(self, cmd: list, what: str, input: str | None = None,
                       timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=True,
                              timeout=timeout, cwd=self.server_dir, env=self._env(), **self._as_account())
        output = f"{proc.stdout}{proc.stderr}"
        if proc.returncode != 0 or re.search(r"\b(ERROR|FATAL|PANIC):", output):
            raise DevstackError(f"{what} failed (exit {proc.returncode}):\n{output.strip()}")
        return proc

    def _as_account(self) -> dict:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    @staticmethod
    def _env() -> dict[str, str]:
        # Nothing of ours (tokens, passwords in the environment) reaches the server.
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}

    def _initdb(self) -> None:
        # trust for the moment: initdb wants a password file for anything else; pg_hba.conf is
        # replaced before the server listens.
        self._run_as_server([self.bin_dir / "initdb", "-D", self.data_dir, "-U", self.superuser, "--auth=trust",
                             "--encoding=UTF8", "--locale=C", "--no-sync"], "initdb")
        version = subprocess.run([str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True)
        match = re.search(r"PostgreSQL\)? ([0-9.]+)", version.stdout)
        self.version = match.group(1) if match else None
        with open(self.data_dir / "postgresql.conf", "a") as conf:  # opened, not created: owner stays
            conf.write(SERVER_CONFIG)
        with open(self.data_dir / "pg_hba.conf", "w") as hba:
            hba.write(HBA_CONFIG)

    def _create_roles(self) -> None:
        """Roles and database in single-user mode: no connection, so no password on any wire."""
        sql = (f"ALTER ROLE {self.superuser} PASSWORD '{_scram_verifier(self.superuser_password)}'\n"
               f"CREATE ROLE {self.username} LOGIN PASSWORD '{_scram_verifier(self.password)}'\n"
               f"CREATE DATABASE {self.database} OWNER {self.username}\n")
        self._run_as_server([self.bin_dir / "postgres", "--single", "-D", self.data_dir, "postgres"],
                            "creating the roles (postgres --single)", input=sql)

    def _launch(self) -> subprocess.Popen:
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-c", f"port={self.port}"]
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.server_dir, env=self._env(), start_new_session=True,
                                    **self._as_account())

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = tail(self.log_file, 200)
                if "Address already in use" in log and f"{self.port}" in log:
                    raise PortClash()
                raise DevstackError(f"PostgreSQL exited with code {self._proc.returncode} during start-up; "
                                    f"last lines of {self.log_file}:\n{tail(self.log_file)}")
            try:
                answer = probe(self.host, self.port, self.username, self.database)
                if answer is None:
                    return
                last = answer
            except (OSError, struct.error) as err:
                last = repr(err)
            time.sleep(0.1)
        raise DevstackError(f"PostgreSQL did not accept logins on {self.host}:{self.port} within "
                            f"{self.ready_timeout:.0f}s (last answer: {last}); last lines of "
                            f"{self.log_file}:\n{tail(self.log_file)}")

    def stop(self, _remove: bool = True) -> None:
        """Fast shutdown (SIGINT: sessions are cut, nothing is waited for), then SIGQUIT, then
        SIGKILL for the whole group. Idempotent."""
        self._end(STOP_TIMEOUT)
        if _remove and not self.keep_work_dir:
            for directory in (self.server_dir, self.work_dir):
                if directory is not None and directory.exists():
                    shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def _shut_down(pid: int, wait, grace: float) -> None:
        """Signal the postmaster (it stops its own children), reap it with `wait(timeout)`, and
        make sure nothing of its process group outlives it."""
        stop_group(pid, wait, ((signal.SIGINT, grace, False), (signal.SIGQUIT, 10, False)) if grace else ())

    def state(self) -> dict:
        return {"version": self.version, "pid": self.pid, "host": self.host, "port": self.port,
                "database": self.database, "dsn": self.dsn, "username": self.username, "password": self.password,
                "superuser": self.superuser, "superuser_password": self.superuser_password,
                "run_as": self.account.pw_name if self.account else None, "work_dir": str(self.work_dir),
                "data_dir": str(self.data_dir), "log_file": str(self.log_file)}
