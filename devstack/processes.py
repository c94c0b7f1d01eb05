"""What the dev stack's servers share: free ports, log tails, exact socket reads, and stopping
at exit whatever this process started and did not stop or hand over."""

from __future__ import annotations

import atexit
import socket
import threading
from pathlib import Path

LOG_TAIL_LINES = 60


class DevstackError(RuntimeError):
    """The dev stack could not do what was asked; the message says why."""


class PortClash(Exception):
    """A server exited because a port taken between probing and binding was in use: start it
    again on others."""


def free_ports(count: int = 1) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held at once, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return f"(no log at {path})"


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return bytes(data)


class _Running:
    """Servers started by this process and not yet stopped or detached; stopped at its exit."""

    def __init__(self) -> None:
        self._servers: set = set()
        self._lock = threading.Lock()
        atexit.register(self._stop_all)

    def add(self, server) -> None:
        with self._lock:
            self._servers.add(server)

    def discard(self, server) -> None:
        with self._lock:
            self._servers.discard(server)

    def _stop_all(self) -> None:
        with self._lock:
            servers = list(self._servers)
        for server in servers:
            server.stop()


running = _Running()
