"""The `brokerguard` command."""

from __future__ import annotations

import argparse
import sys

from brokerguard import __version__, config, server
from brokerguard.errors import BrokerGuardError


def _run(args: argparse.Namespace) -> int:
    settings = config.load(args.config)
    if args.workers is not None:
        if args.workers < 1:
            raise BrokerGuardError("--workers must be at least 1")
        settings = config.replace(settings, workers=args.workers)
    server.configure_logging(args.log_level or settings.log_level)
    return server.run(settings, config_file=args.config)


def _admin(args: argparse.Namespace) -> int:
    """The admin server alone, in the foreground: what `brokerguard run` forks beside the workers."""
    from brokerguard import admin

    settings = config.load(args.config)
    if settings.admin is None:
        raise BrokerGuardError(f"{args.config} has no `admin` section (docs/admin-api.md)")
    server.configure_logging(args.log_level or settings.log_level)
    with admin.bind(settings.admin) as sock:
        return admin.serve(settings, args.config, sock)


def _check(args: argparse.Namespace) -> int:
    config.load(args.config)
    print(f"{args.config}: OK")
    return 0


def _reload_rules(args: argparse.Namespace) -> int:
    """Check the configured rules directory, then ask every worker to reload it (state store)."""
    from brokerguard.policy import load_rules
    from brokerguard.state import SqliteStateStore

    settings = config.load(args.config)
    load_rules(settings.rules.dir)  # a broken set is refused here, before any worker sees it
    SqliteStateStore(settings.state.sqlite_path).request_reload("rules")
    print(f"rules in {settings.rules.dir} are valid; every worker reloads them within "
          f"{settings.state.poll_interval_ms} ms")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="brokerguard", description=__doc__)
    top.add_argument("--version", action="version", version=f"brokerguard {__version__}")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the gateway in the foreground")
    run.add_argument("--config", required=True, help="YAML config file")
    run.add_argument("--workers", type=int, help="worker processes sharing the ports (default: config)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(handler=_run)

    serve_admin = commands.add_parser("admin", help="run the admin API alone, in the foreground "
                                                    "(`run` starts it too when the config has `admin`)")
    serve_admin.add_argument("--config", required=True, help="YAML config file")
    serve_admin.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve_admin.set_defaults(handler=_admin)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config")
    check.set_defaults(handler=_check)

    from brokerguard import revocation
    from brokerguard.audit import cli as audit_cli
    from brokerguard.identity import cli as users_cli
    from brokerguard.policy import cli as rules_cli

    rules = rules_cli.add_parser(commands)
    reload = rules._bg_commands.add_parser(  # type: ignore[attr-defined]
        "reload", help="check the rules directory, then make every running worker reload it")
    reload.add_argument("--config", required=True, help="the gateway's YAML config")
    reload.set_defaults(handler=_reload_rules)
    users_cli.add_parser(commands)
    revocation.add_parser(commands)
    audit_cli.add_parsers(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokerGuardError as err:
        print(f"brokerguard: {err}", file=sys.stderr)
        return 2
