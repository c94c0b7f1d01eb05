# Types of brokerguard._native.frames; frames_py.py is its pure-Python twin with the same API.
from collections.abc import Sequence
from typing import Final, TypeAlias

from typing_extensions import Buffer

from brokerguard._native.errors import FrameError as FrameError

# (frame_start, frame_end, api_key, api_version, correlation_id, expects_response)
RequestFrame: TypeAlias = tuple[int, int, int, int, int, bool]
# (frame_start, frame_end, correlation_id)
ResponseFrame: TypeAlias = tuple[int, int, int]

__all__: Final[list[str]]

class RequestScanner:
    @property
    def flexible_from(self) -> tuple[int, ...]: ...
    @property
    def max_frame_bytes(self) -> int: ...
    def __init__(self, flexible_from: Sequence[int], max_frame_bytes: int) -> None: ...
    def scan(self, buf: Buffer, start: int, end: int) -> tuple[list[RequestFrame], int, int]:
        """(complete frames in buf[start:end], end of the last one, total size of the partial frame or 0)."""

class ResponseScanner:
    @property
    def max_frame_bytes(self) -> int: ...
    def __init__(self, max_frame_bytes: int) -> None: ...
    def scan(self, buf: Buffer, start: int, end: int) -> tuple[list[ResponseFrame], int, int]: ...

def parse_request_header(
    buf: Buffer, offset: int, end: int, flexible_from: Sequence[int]
) -> tuple[int, int, int, str | None, int]:
    """(api_key, api_version, correlation_id, client_id, body_offset) of the payload buf[offset:end]."""

def read_uvarint(buf: Buffer, offset: int) -> tuple[int, int]: ...
def unfilled_bytearray(size: int) -> bytearray:
    """A bytearray of `size` bytes, not zeroed: only where every byte is written before it is read."""
def write_uvarint(value: int) -> bytes: ...
