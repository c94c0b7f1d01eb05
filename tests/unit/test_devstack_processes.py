"""The dev stack's server life cycle, with a real child process standing in for a server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from devstack.processes import DevstackError, PortClash, ServerProcess, running, stop_group


class Sleeper(ServerProcess):
    """A "server" whose first `clashes` launches find their port taken."""

    def __init__(self, clashes: int) -> None:
        self.clashes = clashes
        self.ports_chosen = 0
        self.launched: list[subprocess.Popen] = []

    def start(self) -> Sleeper:
        self._start_on_free_ports(self._choose)
        return self

    def _choose(self) -> None:
        self.ports_chosen += 1

    def _launch(self) -> subprocess.Popen:
        self.launched.append(subprocess.Popen(["sleep", "60"], start_new_session=True))
        return self.launched[-1]

    def _wait_ready(self) -> None:
        if len(self.launched) <= self.clashes:
            raise PortClash()

    @staticmethod
    def _shut_down(pid: int, wait, grace: float) -> None:
        os.killpg(pid, signal.SIGTERM)
        wait(timeout=10)

    def stop(self, _remove: bool = True) -> None:
        self._end(grace=0)


def test_a_port_clash_starts_the_server_again_on_other_ports():
    with Sleeper(clashes=1) as server:
        assert server.ports_chosen == 2 and len(server.launched) == 2
        assert server.launched[0].poll() is not None  # the one that clashed is reaped
        assert server.is_running() and server.pid == server.launched[1].pid
        assert server in running._servers  # stopped at exit if the test did not
    assert not server.is_running() and server.launched[1].poll() is not None
    assert server not in running._servers


def test_it_gives_up_after_three_clashes_and_leaves_nothing_running():
    server = Sleeper(clashes=3)
    with pytest.raises(DevstackError, match="after 3 attempts"):
        server.start()
    assert all(proc.poll() is not None for proc in server.launched) and len(server.launched) == 3
    assert server not in running._servers


def test_a_detached_server_is_not_stopped_at_exit():
    server = Sleeper(clashes=0).start()
    server.detach()
    assert server not in running._servers and server.is_running()
    server.stop()


def test_stop_group_escalates_until_the_process_is_reaped():
    """A child that ignores the first signal is still gone once stop_group returns, and so is
    the rest of its process group."""
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    time.sleep(0.5)  # its own child is started
    stop_group(proc.pid, proc.wait, ((signal.SIGTERM, 0.5, True),))
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10  # the orphaned grandchild is reaped by init, not by us
    with pytest.raises(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.05)
