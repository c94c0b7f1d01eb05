"""Runs the gateway: N worker processes sharing the listen ports (SO_REUSEPORT), each an uvloop
event loop with every configured adapter.

SIGTERM or SIGINT: every worker stops accepting, lets the requests it already read be answered
(up to drain_timeout_s) and exits; the parent waits for them. A worker that dies on its own is
started again. SIGHUP reloads the rules in every worker (a broken rule set is refused and the
rules in force are kept); `brokerguard rules reload` does the same through the state store.

With an `admin` section the admin server runs as one more child process, supervised like the
workers (so then even one worker is a child process): it stops with the gateway.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from brokerguard import registry
from brokerguard.config import Config
from brokerguard.errors import ConfigError
from brokerguard.pipeline import Pipeline
from brokerguard.policy import load_rules
from brokerguard.state import SqliteStateStore

log = logging.getLogger("brokerguard")

ADAPTERS = ("kafka",)
# glibc: allocations above the mmap threshold are returned to the OS on free, so a 1 MiB frame
# costs an mmap/munmap pair each time; raising both thresholds keeps such buffers in the heap.
MALLOC_THRESHOLD = 64 * 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def tune_malloc() -> None:
    name = ctypes.util.find_library("c")
    if not name:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, MALLOC_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * MALLOC_THRESHOLD)


def build_adapters(config: Config, pipeline: Pipeline) -> list:
    adapters = []
    for name in ADAPTERS:
        if getattr(config, name) is not None:
            factory = registry.load("adapters", name)
            adapters.append(factory.create(config, pipeline))
    return adapters


async def serve(config: Config, started: asyncio.Event | None = None) -> None:
    """Run the adapters until SIGTERM/SIGINT, then drain."""
    pipeline = Pipeline(config)
    await pipeline.start()
    adapters = build_adapters(config, pipeline)
    for adapter in adapters:
        await adapter.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, pipeline.reload_rules)
    log.info("worker %d ready", os.getpid())
    if started is not None:
        started.set()
    await stop.wait()
    log.info("worker %d draining (up to %.0f s)", os.getpid(), config.drain_timeout_s)
    await asyncio.gather(*(a.drain(config.drain_timeout_s) for a in adapters))
    await pipeline.stop()
    log.info("worker %d stopped", os.getpid())


def run_worker(config: Config) -> None:
    import uvloop

    tune_malloc()
    uvloop.run(serve(config))


def run(config: Config, config_file: str | None = None) -> int:
    """Run the gateway in the foreground; returns the exit status. `config_file` is where the
    admin server, if configured, reads the audit sinks from."""
    load_rules(config.rules.dir)  # a broken rule set stops the start here, with its file and line
    with SqliteStateStore(config.state.sqlite_path):  # created once, before workers open it together
        pass
    if config.admin is None and config.workers == 1:
        run_worker(config)
        return 0
    return _supervise(config, config_file)


def _spawn(kind: str, target: Callable[[], object]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            target()
        except BaseException:
            log.exception("%s %d failed", kind, os.getpid())
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    return pid


def _supervise(config: Config, config_file: str | None) -> int:
    """Fork the workers and the admin server (if configured), start again any that dies, and
    stop them all on SIGTERM/SIGINT."""
    admin_socket = None
    if config.admin is not None:
        if config_file is None:
            raise ConfigError("the admin server needs the config file to read the audit sinks from")
        from brokerguard.admin import bind

        admin_socket = bind(config.admin)
    supervisor = os.getpid()

    def run_admin() -> None:
        from brokerguard.admin import serve

        assert admin_socket is not None and config_file is not None
        serve(config, config_file, admin_socket, parent=supervisor)

    def run_data_path() -> None:
        if admin_socket is not None:
            admin_socket.close()  # the workers have no business with the admin port
        run_worker(config)

    starters = {"worker": run_data_path, "admin server": run_admin}
    children: dict[int, str] = {}
    stopping = False

    def signal_children(sig: int, kinds: tuple[str, ...]) -> None:
        for pid, kind in children.items():
            if kind in kinds:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        signal_children(signal.SIGTERM, ("worker", "admin server"))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: signal_children(signal.SIGHUP, ("worker",)))
    for _ in range(config.workers):
        children[_spawn("worker", run_data_path)] = "worker"
    log.info("started %d workers: %s", config.workers, " ".join(map(str, sorted(children))))
    if admin_socket is not None:
        pid = _spawn("admin server", run_admin)
        children[pid] = "admin server"
        log.info("started the admin server: %d", pid)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        kind = children.pop(pid, None)
        if kind is None:
            continue
        if os.waitstatus_to_exitcode(code) != 0:
            status = 1
        if not stopping:
            log.error("%s %d exited unexpectedly (status %d); starting another",
                      kind, pid, os.waitstatus_to_exitcode(code))
            time.sleep(1)
            status = 0
            if not stopping:  # a SIGTERM during the pause
                children[_spawn(kind, starters[kind])] = kind
    if admin_socket is not None:
        admin_socket.close()
    return status


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
