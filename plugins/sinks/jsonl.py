"""The JSON lines sink: each event one line of a local file, rotated by size, read back by scanning.

Layout of `dir` (one directory per sink config; every worker of the gateway writes into it):

    audit-<writer>.jsonl                      the file a worker appends to now
    audit-<writer>-<UTC time>-<n>.jsonl       its rotated files, n counting up per writer

`<writer>` is the worker's gateway name (host:pid) reduced to letters, digits, `_` and `.`, so
each process appends only to its own file: POSIX does not promise that concurrent appends stay
whole, and a write cut short (a full disk) would have another process's line glued to it. A
worker holds an advisory lock (flock) on its file while it runs; a worker that starts retires
the unlocked files of workers that are gone (renames them to rotated names), so those join the
rotation and `keep` bounds the directory: one current file per live worker plus `keep` rotated
files, the oldest deleted first, whichever worker wrote them.

A crash can leave a torn last line. Readers skip it; a writer reopening such a file (the same
host:pid after a restart) first ends the fragment with a newline, so it cannot swallow the
next event. A batch the bus retries may be in a file twice: readers return it once.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from brokerguard.audit import sessions
from brokerguard.audit.sinks import Sealed, SessionFilter, SinkContext, check_options, option
from brokerguard.errors import ConfigError

__all__ = ["JsonLinesSink"]

log = logging.getLogger("brokerguard.audit")

MIB = 1024 * 1024
OPTIONS = ("dir", "max_bytes", "keep", "fsync")
# No `-` in a writer's name: it separates the name from the rotation time and number.
_FILE = re.compile(r"audit-(?P<writer>[A-Za-z0-9_.]+)(?:-(?P<time>\d{8}T\d{6}Z)-(?P<n>\d+))?\.jsonl")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.]+")
LOCK_WAIT_S = 2.0  # another worker may hold our file for a moment while it retires it


def writer_name(gateway: str) -> str:
    """The part of the file names that says which worker wrote them."""
    return _NOT_IN_NAME.sub("_", gateway).strip("_.")[:120] or "gateway"


class _File(NamedTuple):
    path: Path
    writer: str
    rotated: str | None  # UTC time of the rotation, None for a current file
    n: int


def _listing(directory: Path) -> list[_File]:
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _FILE.fullmatch(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                found.append(_File(Path(entry.path), match["writer"], match["time"], int(match["n"] or 0)))
    return found


class JsonLinesSink:
    """Appends events to this worker's file in `dir`; reads every worker's files back."""

    def __init__(self, directory: Path, *, gateway: str, max_bytes: int = 100 * MIB, keep: int = 10,
                 fsync: bool = False) -> None:
        self.directory = directory
        self.writer = writer_name(gateway)
        self.path = directory / f"audit-{self.writer}.jsonl"
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        self.name = f"jsonl {directory}"
        self._fd: int | None = None
        self._size = 0
        self._clean = True  # whether the file ends with a whole line

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: SinkContext) -> JsonLinesSink:
        check_options(options, OPTIONS, sink="jsonl")
        directory = option(options, "dir", str, sink="jsonl")
        max_bytes = option(options, "max_bytes", int, 100 * MIB, sink="jsonl")
        keep = option(options, "keep", int, 10, sink="jsonl")
        fsync = option(options, "fsync", bool, False, sink="jsonl")
        if not directory:
            raise ConfigError("audit sink jsonl: `dir` must name a directory")
        if max_bytes < 4096:
            raise ConfigError(f"audit sink jsonl: `max_bytes` must be at least 4096, not {max_bytes}")
        if keep < 0:
            raise ConfigError(f"audit sink jsonl: `keep` must be 0 or more, not {keep}")
        return cls(Path(directory), gateway=context.gateway, max_bytes=max_bytes, keep=keep, fsync=fsync)

    # -- writing -------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"audit sink jsonl: cannot create `dir` {self.directory}: {err.strerror}") from err
        self._retire_orphans()
        self._open()

    def write(self, batch: Sequence[Sealed]) -> None:
        if self._fd is None:
            self._open()
        if not self._clean:
            self._end_torn_line()
        chunk: list[bytes] = []
        size = 0
        for sealed in batch:
            line = sealed.line + b"\n"
            if self._size + size + len(line) > self.max_bytes and self._size + size > 0:
                self._append(b"".join(chunk))
                chunk, size = [], 0
                self._rotate()
            chunk.append(line)
            size += len(line)
        self._append(b"".join(chunk))
        if self.fsync:
            os.fsync(self._fd)

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self._size += written
        except OSError:
            # Part of a line may be in the file (a full disk): the retry must start on a new line.
            self._clean = False
            raise

    def _end_torn_line(self) -> None:
        assert self._fd is not None
        self._size = os.fstat(self._fd).st_size
        if self._size and os.pread(self._fd, 1, self._size - 1) != b"\n":
            os.write(self._fd, b"\n")
            self._size += 1
        self._clean = True

    def _open(self) -> None:
        """Open and lock this worker's file; a retiring worker may hold it briefly."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() > deadline:
                    raise ConfigError(f"audit sink jsonl: {self.path} is in use by another writer: give each "
                                      f"gateway its own name, or each sink its own `dir`") from None
                time.sleep(0.02)
                continue
            if _same_file(fd, self.path):
                break
            os.close(fd)  # retired (renamed) while we waited: open the new one
        self._fd = fd
        self._end_torn_line()

    def _rotate(self) -> None:
        assert self._fd is not None
        if self.fsync:
            os.fsync(self._fd)
        os.rename(self.path, self._rotated_name(self.writer))
        old, self._fd = self._fd, None
        try:
            self._open()
        finally:
            os.close(old)
        if self.fsync:
            _fsync_dir(self.directory)
        self._prune()

    def _rotated_name(self, writer: str, when: float | None = None) -> Path:
        """Only the worker holding a writer's lock names its rotated files, so n cannot collide."""
        n = max((f.n for f in _listing(self.directory) if f.writer == writer and f.rotated), default=0) + 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
        return self.directory / f"audit-{writer}-{stamp}-{n}.jsonl"

    def _prune(self) -> None:
        rotated = sorted((f for f in _listing(self.directory) if f.rotated), key=lambda f: (f.rotated, f.n, f.writer))
        for old in rotated[: max(len(rotated) - self.keep, 0)]:
            try:
                old.path.unlink()
            except FileNotFoundError:
                pass  # another worker pruned it first

    def _retire_orphans(self) -> None:
        """Rotate away the current files of workers that are gone (nobody holds their lock)."""
        retired = False
        for found in _listing(self.directory):
            if found.rotated or found.writer == self.writer:
                continue
            try:
                fd = os.open(found.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live worker's file
                if not _same_file(fd, found.path):
                    continue
                held = os.fstat(fd)
                if held.st_size == 0:
                    found.path.unlink()
                else:  # dated by its last write, so it ages like the files rotated then
                    os.rename(found.path, self._rotated_name(found.writer, held.st_mtime))
                    retired = True
            finally:
                os.close(fd)
        if retired:
            self._prune()

    # -- reading (AuditReader) -----------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        return iter(sessions.in_stream_order(self._scan()))

    def sessions(self, where: SessionFilter) -> list[dict[str, Any]]:
        return sessions.summarize(self.events(), where)

    def session_events(self, session: str) -> list[dict[str, Any]]:
        return sessions.session_events(self.events(), session)

    def _scan(self) -> Iterator[dict[str, Any]]:
        """Every event in every file. Files are opened before reading: a file a worker rotates
        meanwhile is still read whole through its open descriptor, and a rotated file that
        appears in between is picked up by listing again."""
        if not self.directory.is_dir():
            raise ConfigError(f"audit sink jsonl: `dir` {self.directory} is not a directory")
        opened: dict[str, Any] = {}
        try:
            while True:
                listing = [f for f in _listing(self.directory) if f.path.name not in opened]
                if not listing:
                    break
                for found in sorted(listing, key=lambda f: (f.writer, f.rotated is None, f.n)):
                    try:
                        opened[found.path.name] = open(found.path, "rb")
                    except FileNotFoundError:
                        opened[found.path.name] = None  # pruned or rotated meanwhile
            for name, handle in opened.items():
                if handle is not None:
                    yield from _read(handle, name)
        finally:
            for handle in opened.values():
                if handle is not None:
                    handle.close()


def _read(handle: Any, name: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(handle, 1):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            yield event
        elif line.endswith(b"\n") and line.strip():
            # Torn by a crash and ended by the next writer; a missing event shows in `verify`.
            log.warning("audit file %s line %d is not an event; skipped", name, number)
        # else: the torn last line of a crash, or a line being written right now


def _same_file(fd: int, path: Path) -> bool:
    try:
        named, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno != errno.EINVAL:  # some file systems cannot sync a directory
            raise
    finally:
        os.close(fd)
