"""`brokerguard users`: manage the service accounts in the credentials file.

Passwords are never written anywhere: the file keeps SCRAM verifiers only, a generated password
is printed once, and `list` shows names and groups only. A running gateway picks up changes
within seconds, without a restart.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from brokerguard import config
from brokerguard.errors import ConfigError
from brokerguard.identity.credentials import DEFAULT_ITERATIONS, CredentialsFile, CredentialsError


def _credentials_path(args: argparse.Namespace) -> str:
    if args.credentials:
        return args.credentials
    if args.config:
        path = config.load(args.config).identity.credentials_file
        if not path:
            raise ConfigError(f"{args.config}: `identity.credentials_file` is not set")
        return path
    raise ConfigError("say which credentials file: --credentials FILE or --config GATEWAY.yaml")


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The new password and whether it was generated (and so must be shown)."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CredentialsError("no password on standard input")
        return password, False
    return secrets.token_urlsafe(24), True


def _show_generated(user: str, password: str) -> None:
    print(f"password for {user} (shown once, store it now):", file=sys.stderr)
    print(password)


def _groups(text: str | None) -> list[str]:
    return [g.strip() for g in (text or "").split(",") if g.strip()]


def _add(args: argparse.Namespace) -> int:
    file = CredentialsFile(_credentials_path(args), create=True)
    password, generated = _password(args)
    file.add(args.name, password, _groups(args.groups), iterations=args.iterations)
    print(f"added {args.name} to {file.path}", file=sys.stderr)
    if generated:
        _show_generated(args.name, password)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    file = CredentialsFile(_credentials_path(args))
    password, generated = _password(args)
    file.rotate(args.name, password, iterations=args.iterations)
    print(f"new password set for {args.name}; the old one stops working once the gateway reloads "
          f"{file.path} (within seconds)", file=sys.stderr)
    if generated:
        _show_generated(args.name, password)
    return 0


def _remove(args: argparse.Namespace) -> int:
    file = CredentialsFile(_credentials_path(args))
    file.remove(args.name)
    print(f"removed {args.name} from {file.path}; its open sessions stay until they re-authenticate "
          f"(revoke the subject to end them now)", file=sys.stderr)
    return 0


def _set_groups(args: argparse.Namespace) -> int:
    file = CredentialsFile(_credentials_path(args))
    file.set_groups(args.name, _groups(args.groups))
    print(f"groups of {args.name}: {', '.join(sorted(file.groups(args.name))) or '(none)'}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    file = CredentialsFile(_credentials_path(args))
    for user in file.users():
        print(f"{user}\t{','.join(sorted(file.groups(user)))}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `users` and its commands; each command sets `handler(args) -> exit code`."""
    source = argparse.ArgumentParser(add_help=False)
    where = source.add_mutually_exclusive_group()
    where.add_argument("--credentials", metavar="FILE", help="the credentials file")
    where.add_argument("--config", metavar="GATEWAY.yaml", help="use identity.credentials_file of this config")

    users = subparsers.add_parser("users", help="manage service accounts (SCRAM and PLAIN)")
    commands = users.add_subparsers(dest="users_command", required=True)

    add = commands.add_parser("add", parents=[source], help="add a user; prints a generated password once")
    add.add_argument("name")
    add.add_argument("--groups", help="comma separated groups, e.g. payments,writers")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                     help=f"PBKDF2 iterations for the SCRAM verifiers (default {DEFAULT_ITERATIONS}, minimum 4096)")
    add.set_defaults(handler=_add)

    rotate = commands.add_parser("rotate", parents=[source], help="give a user a new password")
    rotate.add_argument("name")
    rotate.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    rotate.add_argument("--iterations", type=int, help="PBKDF2 iterations (default: keep the current count)")
    rotate.set_defaults(handler=_rotate)

    remove = commands.add_parser("remove", parents=[source], help="delete a user")
    remove.add_argument("name")
    remove.set_defaults(handler=_remove)

    groups = commands.add_parser("groups", parents=[source], help="replace a user's groups")
    groups.add_argument("name")
    groups.add_argument("groups", help="comma separated groups; \"\" for none")
    groups.set_defaults(handler=_set_groups)

    listing = commands.add_parser("list", parents=[source], help="list users and their groups (no secrets)")
    listing.set_defaults(handler=_list)
    return users
