"""Kafka's primitive types read in place from a buffer, for the hand readers of the hot path
(produce_py.py here; the Kafka adapter's errorscan.py and fetchrecords.py). Every read checks it
stays before `end` and raises Truncated if not."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

I16 = struct.Struct(">h")
I32 = struct.Struct(">i")


class Truncated(ValueError):
    """The bytes do not hold the message they announce."""


def uvarint(buf, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 28:
            raise Truncated(f"bad varint at offset {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def request_header(buf, start: int, end: int, api_key: int, name: str, versions: range,
                   flexible_from: int) -> tuple[int, str | None, int]:
    """(version, client id, where the body starts) of the request frame at buf[start:end] (size
    prefix included): RequestHeader v1, or v2 (tagged fields after the client id) from
    `flexible_from`. ValueError for a frame outside buf, or of another API or version."""
    if not 0 <= start <= end <= len(buf):
        raise ValueError(f"frame {start}:{end} is outside a buffer of {len(buf)} bytes")
    pos = start + 4
    if pos + 8 > end:
        raise Truncated("request header cut off")
    if I16.unpack_from(buf, pos)[0] != api_key or (version := I16.unpack_from(buf, pos + 2)[0]) not in versions:
        raise ValueError(f"not a {name} request v{versions[0]}-v{versions[-1]}")
    client_id, pos = string(buf, pos + 8, end, False)
    if version >= flexible_from:
        pos = skip_tags(buf, pos, end)
    return version, client_id, pos


def skip_tags(buf, pos: int, end: int, fixed: dict[int, int] | None = None,
              check: Callable[[Any, int, int, int], None] | None = None) -> int:
    """Past a tagged-field section, its tags in ascending order as Kafka writes them. `fixed`
    gives the fixed part's size of the tags whose value is a struct (its own tagged fields
    follow): each must fill exactly the bytes it declares. `check(buf, tag, start, stop)` sees
    each tag's value, to read it or refuse it by raising."""
    count, pos = uvarint(buf, pos, end)
    last = -1
    for _ in range(count):
        tag, pos = uvarint(buf, pos, end)
        if tag <= last:
            raise Truncated(f"tag {tag} does not follow tag {last} in ascending order")
        last = tag
        size, pos = uvarint(buf, pos, end)
        stop = pos + size
        if fixed is not None and tag in fixed and (stop > end or skip_tags(buf, pos + fixed[tag], stop) != stop):
            raise Truncated(f"tagged field {tag} does not fill the {size} bytes it declares")
        if check is not None and stop <= end:
            check(buf, tag, pos, stop)
        pos = stop
    if pos > end:
        raise Truncated("tagged fields run past the frame")
    return pos


def length(buf, pos: int, end: int, compact: bool, wide: bool) -> tuple[int, int]:
    """A string, bytes or array length (-1 for null): a varint of length + 1 when compact, else
    int32 (`wide`) or int16."""
    if compact:
        n, pos = uvarint(buf, pos, end)
        return n - 1, pos
    fmt = I32 if wide else I16
    if pos + fmt.size > end:
        raise Truncated(f"length cut off at offset {pos}")
    return fmt.unpack_from(buf, pos)[0], pos + fmt.size


def array_length(buf, pos: int, end: int, compact: bool, nullable: bool = False) -> tuple[int, int]:
    """An array's length; null (-1) only where the field is nullable, counted as empty."""
    n, pos = length(buf, pos, end, compact, True)
    if n < (-1 if nullable else 0):
        raise Truncated(f"bad array length {n}")
    return n, pos


def string(buf, pos: int, end: int, compact: bool) -> tuple[str | None, int]:
    n, pos = length(buf, pos, end, compact, False)
    if n < 0:
        if n < -1:  # only -1 is null; the broker's codec refuses the rest too
            raise Truncated(f"string length {n} before offset {pos} is neither -1 (null) nor 0 or more")
        return None, pos
    if pos + n > end:
        raise Truncated(f"string runs past the frame at offset {pos}")
    try:
        return bytes(buf[pos : pos + n]).decode("utf-8"), pos + n
    except UnicodeDecodeError:
        raise Truncated(f"string at offset {pos} is not UTF-8") from None


def skip(buf, pos: int, end: int, compact: bool, wide: bool) -> int:
    """Past a string or bytes value without reading it."""
    n, pos = length(buf, pos, end, compact, wide)
    pos += max(n, 0)
    if pos > end:
        raise Truncated(f"value runs past the frame at offset {pos}")
    return pos
