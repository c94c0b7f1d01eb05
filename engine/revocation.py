"""`brokerguard identities`: revoke, restore and list identities in the state store.

A revocation written here reaches every running worker through the store's change feed within
one poll interval (state.poll_interval_ms); their sessions of that subject are then cut.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from brokerguard import config
from brokerguard.state import Revocation, SqliteStateStore


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `identities` with its `revoke`, `restore` and `list` commands."""
    where = argparse.ArgumentParser(add_help=False)
    source = where.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="GATEWAY.yaml",
                        help="the gateway's config; its state.sqlite_path is used")
    source.add_argument("--state", metavar="FILE", help="the state database itself")

    identities = subparsers.add_parser("identities", help="revoke, restore and list identities",
                                       description=__doc__)
    commands = identities.add_subparsers(dest="identities_command", required=True)

    revoke = commands.add_parser("revoke", parents=[where],
                                 help="stop a subject from authenticating and cut its sessions")
    revoke.add_argument("subject", metavar="SUBJECT")
    revoke.add_argument("--reason", default="", metavar="TEXT", help="why, for whoever reads the list later")
    revoke.set_defaults(handler=_revoke)

    restore = commands.add_parser("restore", parents=[where], help="lift a revocation")
    restore.add_argument("subject", metavar="SUBJECT")
    restore.set_defaults(handler=_restore)

    listing = commands.add_parser("list", parents=[where], help="show the revoked subjects")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(handler=_list)
    return identities


def state_path(args: argparse.Namespace) -> Path:
    if args.state:
        return Path(args.state)
    return Path(config.load(args.config).state.sqlite_path)


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return f"uid:{os.getuid()}"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(text: str) -> str:
    # Subjects come from outside (token claims, certificates): keep control characters off the terminal.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _revoke(args: argparse.Namespace) -> int:
    with SqliteStateStore(state_path(args)) as store:
        revocation = store.revoke(args.subject, reason=args.reason, actor=_actor())
    print(f"revoked {_shown(revocation.subject)} at {_when(revocation.at)} by {revocation.actor}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    path = state_path(args)
    restored = False
    if path.exists():  # a typo in the path must not create an empty store
        with SqliteStateStore(path) as store:
            restored = store.restore(args.subject)
    if not restored:
        print(f"{_shown(args.subject)} is not revoked", file=sys.stderr)
        return 1
    print(f"restored {_shown(args.subject)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    path = state_path(args)
    revocations: dict[str, Revocation] = {}
    if path.exists():
        with SqliteStateStore(path) as store:
            revocations = store.revocations()
    if args.format == "json":
        print(json.dumps([{"subject": r.subject, "reason": r.reason, "actor": r.actor,
                           "at": _when(r.at)} for r in revocations.values()], indent=2))
        return 0
    if not revocations:
        print("no identity is revoked")
        return 0
    rows = [("SUBJECT", "REVOKED AT", "BY", "REASON")]
    rows += [(_shown(r.subject), _when(r.at), _shown(r.actor), _shown(r.reason))
             for r in revocations.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return 0
