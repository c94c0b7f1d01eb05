"""What the dev stack's servers share: free ports, log tails, exact socket reads, and the life
of a server process: started again on other ports when one was taken meanwhile, and stopped at
exit unless handed over."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
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


def stop_group(pid: int, wait, steps: tuple[tuple[int, float, bool], ...]) -> None:
    """Send each step's signal (to the process group led by pid, or to pid alone) until
    `wait(timeout)` reaps pid within the step's seconds, then SIGKILL the group; at the end
    nothing of the group outlives it."""
    for sig, timeout, group in (*steps, (signal.SIGKILL, 10, True)):
        try:
            (os.killpg if group else os.kill)(pid, sig)
        except ProcessLookupError:
            pass
        try:
            wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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


class ServerProcess:
    """A server this process runs in a process group of its own. Subclasses start it with
    `_start_on_free_ports` and give `_launch` (the Popen), `_wait_ready` (raises PortClash
    when the server exited for a taken port) and `_shut_down(pid, wait, grace)`."""

    _proc: subprocess.Popen | None = None
    pid: int | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self):
        raise NotImplementedError

    def _launch(self) -> subprocess.Popen:
        raise NotImplementedError

    def _wait_ready(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _shut_down(pid: int, wait, grace: float) -> None:
        raise NotImplementedError

    def stop(self, _remove: bool = True) -> None:
        raise NotImplementedError

    def _start_on_free_ports(self, choose_ports: Callable[[], None], attempts: int = 3) -> None:
        """choose_ports, launch, wait until ready; a port taken between choosing and binding
        makes the server exit, so it is tried again on others. On any other failure the server
        is stopped with its files kept for whoever reads the error."""
        for _ in range(attempts):
            choose_ports()
            self._proc = self._launch()
            self.pid = self._proc.pid
            running.add(self)
            try:
                self._wait_ready()
                return
            except PortClash:
                self._end(grace=0)
            except BaseException:
                self.stop(_remove=False)
                raise
        raise DevstackError(f"could not bind free ports after {attempts} attempts")

    def _end(self, grace: float) -> None:
        """Shut the process down (`grace` seconds before it is killed); idempotent."""
        if self._proc is not None:
            self._shut_down(self._proc.pid, self._proc.wait, grace)
            self._proc = None
        running.discard(self)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def detach(self) -> None:
        """Leave the server running after this Python process exits (a CLI `start`)."""
        running.discard(self)
