"""A read buffer for one direction of a connection, shaped for asyncio.BufferedProtocol.

Small frames are read many at a time into one reusable buffer. A frame larger than that buffer
gets a buffer of its own, exactly the frame's size, handed on whole once complete. From an
untrusted peer that buffer grows by doubling as the bytes arrive, so a client that only
announces a large size costs nothing; the broker's announced size is allocated at once.
Unconsumed bytes always start at offset 0. A frame's own buffer is not zeroed first: it is
never larger than the frame, and is handed on only once every byte of it has been read in.
"""

from __future__ import annotations

from brokerguard._native import unfilled_bytearray


class FrameBuffer:
    __slots__ = ("buf", "end", "_reusable", "_trusted")

    def __init__(self, size: int, trusted: bool = False) -> None:
        self._trusted = trusted
        self._reusable = bytearray(size)
        self.buf = self._reusable
        self.end = 0

    def writable(self) -> memoryview:
        """Where the next read lands; never empty (see settle)."""
        return memoryview(self.buf)[self.end :]

    def take(self, start: int, end: int) -> bytes | bytearray:
        """The bytes buf[start:end] as an object the caller may keep after the next read."""
        if self.buf is not self._reusable:
            return self.buf  # a whole frame in its own buffer: settle() lets go of it
        return bytes(memoryview(self.buf)[start:end])

    def settle(self, consumed_to: int, pending_size: int) -> None:
        """Drop bytes up to consumed_to and make room for the whole pending frame."""
        remaining = self.end - consumed_to
        if remaining == 0:
            self.buf = self._reusable
            self.end = 0
        elif pending_size > len(self._reusable):
            if self.buf is self._reusable or self.end == len(self.buf):
                size = pending_size if self._trusted else min(pending_size, 2 * max(len(self.buf), remaining))
                own = unfilled_bytearray(size)
                own[:remaining] = memoryview(self.buf)[consumed_to : self.end]
                self.buf = own
                self.end = remaining
        elif consumed_to > 0:
            self.buf[:remaining] = memoryview(self.buf)[consumed_to : self.end]
            self.end = remaining
