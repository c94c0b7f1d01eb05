"""Serves the admin app with uvicorn, in a process that never touches the data path.

The listening socket is bound before the process starts (`bind`), so a port in use fails the
gateway's start with its address, and a restarted admin process serves the same socket.
A process started by the gateway (`parent` set) stops when the gateway does, even one killed
with SIGKILL: it watches for its parent to change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import uvicorn

from brokerguard.admin.app import create_app
from brokerguard.config import AdminConfig, Config
from brokerguard.errors import ConfigError

__all__ = ["bind", "serve"]

log = logging.getLogger("brokerguard.admin")

PARENT_CHECK_S = 0.5


class _QuietProbes(logging.Filter):
    """Drops access-log lines of health probes, which would bury the requests worth reading."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and len(args) > 2 and args[2] == "/api/health")


def bind(admin: AdminConfig) -> socket.socket:
    host, port = admin.address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ConfigError(f"admin.listen {admin.listen}: {err.strerror or err}") from err
    return sock


def serve(config: Config, config_file: str, sock: socket.socket, parent: int | None = None) -> int:
    """Serve the admin API on `sock` until SIGTERM/SIGINT, or until the process `parent` is gone."""
    assert config.admin is not None
    server = uvicorn.Server(uvicorn.Config(
        create_app(config, config_file), log_config=None, lifespan="off", server_header=False,
        timeout_graceful_shutdown=max(int(config.drain_timeout_s), 1)))

    logging.getLogger("uvicorn.access").addFilter(_QuietProbes())

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    # uvicorn installs its own handlers while it serves and raises a caught signal again after;
    # these make that a clean exit instead of death by the signal, and cover the time before.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the workers' rules reload, nothing to do here

    async def main() -> None:
        watch = asyncio.create_task(_stop_when_orphaned(server, parent)) if parent is not None else None
        host, port = sock.getsockname()[:2]
        log.info("admin API process %d serving http://%s:%d/api", os.getpid(), host, port)
        try:
            await server.serve(sockets=[sock])
        finally:
            if watch is not None:
                watch.cancel()

    asyncio.run(main())
    return 0


async def _stop_when_orphaned(server: uvicorn.Server, parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("the gateway process %d is gone; the admin API stops", parent)
    server.should_exit = True
