# Types of brokerguard._native.produce; produce_py.py is its pure-Python twin with the same API.
from typing import Any, Final

from typing_extensions import Buffer

__all__: Final[list[str]]

FLEXIBLE_FROM: Final[int]
LAST_VERSION: Final[int]
"""The last Produce version these read (from v3)."""

def read_request(buf: Buffer, start: int, end: int,
                 spans: list[tuple[str | None, int, int, int]] | None = None) -> tuple[str | None, dict[str, Any]]:
    """(client_id, body) of the Produce request frame at buf[start:end] (size prefix included);
    body has the codec's shape with `records` left out. With `spans`, appends (topic, partition,
    records_start, records_end) for each partition that carries records. Raises ValueError
    (wire.Truncated for bytes cut short) for anything but a Produce request v3-LAST_VERSION."""

def response_clean(frame: Buffer, version: int) -> bool:
    """Whether the Produce response frame (size prefix included) reads to its end with every
    error code zero and no record errors; False for anything else, never an exception."""
