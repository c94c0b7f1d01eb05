# Kafka wire format read here (integers big-endian, two's complement):
#
#   frame             size:int32 payload[size]          size counts the payload, not itself
#   request payload   header body
#   request header v1 api_key:int16 api_version:int16 correlation_id:int32 client_id:string
#   request header v2 v1 + tagged_fields; used when 0 <= flexible_from[api_key] <= api_version.
#                     client_id keeps its int16 length in v2.
#   response payload  correlation_id:int32 ...          the rest is not read
#   string            length:int16 bytes[length]        nullable: length -1 is null
#   compact string    (length+1):uvarint bytes[length]  nullable: 0 is null
#   tagged_fields     count:uvarint {tag:uvarint size:uvarint bytes[size]} * count
#   uvarint           7 bits per byte, low group first, high bit set on all but the last;
#                     at most 5 bytes and 32 bits
#   Produce body      v0-v2: acks:int16 ...
#     (api_key 0)     v3+:   transactional_id:string acks:int16 ...  (compact string when
#                            flexible, v9+)
#
# Every request gets exactly one response, in request order, except a Produce with acks 0,
# which gets none. A request frame below 8 bytes (response: 4) cannot hold its header; a
# frame above max_frame_bytes is refused as soon as its size is known.
"""Pure-Python twin of frames.pyx: the reference for differential tests, and the fallback
when BROKERGUARD_NO_EXTENSIONS=1."""
import operator
import struct

from brokerguard._native import errors
from brokerguard._native.errors import FrameError

__all__ = [
    "FrameError",
    "RequestScanner",
    "ResponseScanner",
    "parse_request_header",
    "read_uvarint",
    "unfilled_bytearray",
    "write_uvarint",
]

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")

_PRODUCE = 0
_REQUEST_HEADER_MIN = 8  # api_key, api_version, correlation_id
_RESPONSE_HEADER_MIN = 4  # correlation_id


def _bytes_of(buf) -> memoryview:
    # A flat byte view without copying, so offsets are byte offsets whatever the exporter.
    # Callers release it with `with`, or a bytearray would stay locked against resizing
    # while a raised FrameError's traceback keeps the view alive.
    return memoryview(buf).cast("B")


def _uvarint(view, pos: int, end: int) -> tuple[int, int]:
    """(value, next_pos), or (-1, fault code) with a code from errors.VARINT_*."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            return -1, errors.VARINT_TRUNCATED
        byte = view[pos]
        pos += 1
        if shift == 28:
            if byte & 0x80:
                return -1, errors.VARINT_TOO_LONG
            if byte > 0x0F:
                return -1, errors.VARINT_TOO_LARGE
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _client_id_end(view, body: int, frame_end: int) -> tuple[int, int]:
    """(end of client_id, its length or -1 for null); body is the payload start."""
    pos = body + _REQUEST_HEADER_MIN
    if frame_end - pos < 2:
        raise errors.request_header_truncated(frame_end - body)
    (length,) = _I16.unpack_from(view, pos)
    pos += 2
    if length < -1:
        raise errors.client_id_invalid_length(length)
    if length > frame_end - pos:
        raise errors.client_id_truncated(length, frame_end - body)
    if length > 0:
        pos += length
    return pos, length


def _skip_tagged_fields(view, pos: int, frame_end: int, body: int) -> int:
    count, pos = _uvarint(view, pos, frame_end)
    if count < 0:
        raise _tagged_fields_fault(pos, frame_end - body)
    # Each field takes at least 2 bytes, so a huge count ends at the frame end quickly.
    while count:
        tag, pos = _uvarint(view, pos, frame_end)
        if tag < 0:
            raise _tagged_fields_fault(pos, frame_end - body)
        size, pos = _uvarint(view, pos, frame_end)
        if size < 0:
            raise _tagged_fields_fault(pos, frame_end - body)
        if size > frame_end - pos:
            raise errors.tagged_fields_truncated(frame_end - body)
        pos += size
        count -= 1
    return pos


def _tagged_fields_fault(code: int, frame_size: int) -> FrameError:
    if code == errors.VARINT_TRUNCATED:
        return errors.tagged_fields_truncated(frame_size)
    return errors.varint_invalid(code, "request header", "tagged fields")


def _produce_acks(view, body: int, frame_end: int, version: int, flexible: bool) -> int:
    pos, _ = _client_id_end(view, body, frame_end)
    if flexible:
        pos = _skip_tagged_fields(view, pos, frame_end, body)
    if version >= 3:
        if flexible:
            encoded, pos = _uvarint(view, pos, frame_end)
            if encoded < 0:
                if pos == errors.VARINT_TRUNCATED:
                    raise errors.produce_truncated(version)
                raise errors.varint_invalid(pos, f"Produce v{version} body", "transactional_id")
            length = encoded - 1
        else:
            if frame_end - pos < 2:
                raise errors.produce_truncated(version)
            (length,) = _I16.unpack_from(view, pos)
            pos += 2
            if length < -1:
                raise errors.transactional_id_invalid_length(version, length)
        if length > 0:
            if length > frame_end - pos:
                raise errors.produce_truncated(version)
            pos += length
    if frame_end - pos < 2:
        raise errors.produce_truncated(version)
    return _I16.unpack_from(view, pos)[0]


class RequestScanner:
    """Finds complete request frames in a client's byte stream and reads their headers."""

    __slots__ = ("_flexible_from", "_max_frame_bytes", "_produce_flexible_from")

    def __init__(self, flexible_from, max_frame_bytes: int) -> None:
        self._flexible_from = errors.check_flexible_from(flexible_from)
        self._max_frame_bytes = errors.check_max_frame_bytes(max_frame_bytes, _REQUEST_HEADER_MIN)
        self._produce_flexible_from = self._flexible_from[_PRODUCE]

    @property
    def flexible_from(self) -> tuple[int, ...]:
        return self._flexible_from

    @property
    def max_frame_bytes(self) -> int:
        return self._max_frame_bytes

    def scan(self, buf, start: int, end: int):
        with _bytes_of(buf) as view:
            return self._scan(view, start, end)

    def _scan(self, view, start: int, end: int):
        errors.check_range(start, end, len(view))
        limit = self._max_frame_bytes
        produce_flexible_from = self._produce_flexible_from
        frames = []
        pos = start
        pending = 0
        while end - pos >= 4:
            (size,) = _I32.unpack_from(view, pos)
            if size < 0:
                raise errors.negative_size(size)
            if size > limit:
                raise errors.oversized(size, limit)
            if size < _REQUEST_HEADER_MIN:
                raise errors.request_header_truncated(size)
            if end - pos - 4 < size:
                pending = size + 4
                break
            body = pos + 4
            frame_end = body + size
            api_key, api_version, correlation_id = _HEADER.unpack_from(view, body)
            expects_response = True
            if api_key == _PRODUCE:
                flexible = 0 <= produce_flexible_from <= api_version
                expects_response = _produce_acks(view, body, frame_end, api_version, flexible) != 0
            frames.append((pos, frame_end, api_key, api_version, correlation_id, expects_response))
            pos = frame_end
        return frames, pos, pending


class ResponseScanner:
    """Finds complete response frames in the broker's byte stream and reads their correlation ids."""

    __slots__ = ("_max_frame_bytes",)

    def __init__(self, max_frame_bytes: int) -> None:
        self._max_frame_bytes = errors.check_max_frame_bytes(max_frame_bytes, _RESPONSE_HEADER_MIN)

    @property
    def max_frame_bytes(self) -> int:
        return self._max_frame_bytes

    def scan(self, buf, start: int, end: int):
        with _bytes_of(buf) as view:
            return self._scan(view, start, end)

    def _scan(self, view, start: int, end: int):
        errors.check_range(start, end, len(view))
        limit = self._max_frame_bytes
        frames = []
        pos = start
        pending = 0
        while end - pos >= 4:
            (size,) = _I32.unpack_from(view, pos)
            if size < 0:
                raise errors.negative_size(size)
            if size > limit:
                raise errors.oversized(size, limit)
            if size < _RESPONSE_HEADER_MIN:
                raise errors.response_header_truncated(size)
            if end - pos - 4 < size:
                pending = size + 4
                break
            frame_end = pos + 4 + size
            frames.append((pos, frame_end, _I32.unpack_from(view, pos + 4)[0]))
            pos = frame_end
        return frames, pos, pending


def parse_request_header(buf, offset: int, end: int, flexible_from):
    """Read the whole request header of the payload buf[offset:end].

    Returns (api_key, api_version, correlation_id, client_id, body_offset). An api_key
    beyond flexible_from is refused: its header length cannot be known.
    """
    with _bytes_of(buf) as view:
        return _parse_request_header(view, offset, end, flexible_from)


def _parse_request_header(view, offset: int, end: int, flexible_from):
    errors.check_range(offset, end, len(view))
    if end - offset < _REQUEST_HEADER_MIN:
        raise errors.request_header_truncated(end - offset)
    api_key, api_version, correlation_id = _HEADER.unpack_from(view, offset)
    if not 0 <= api_key < len(flexible_from):
        raise errors.unknown_api_key(api_key)
    first_flexible = operator.index(flexible_from[api_key])
    pos, length = _client_id_end(view, offset, end)
    client_id = None
    if length >= 0:
        try:
            client_id = str(view[pos - length : pos], "utf-8")
        except UnicodeDecodeError as err:
            raise errors.client_id_not_utf8(err) from err
    if 0 <= first_flexible <= api_version:
        pos = _skip_tagged_fields(view, pos, end, offset)
    return api_key, api_version, correlation_id, client_id, pos


def read_uvarint(buf, offset: int) -> tuple[int, int]:
    """(value, next_offset) of the unsigned varint at buf[offset]."""
    with _bytes_of(buf) as view:
        errors.check_range(offset, offset, len(view))
        value, pos = _uvarint(view, offset, len(view))
    if value < 0:
        raise errors.varint_at(pos, offset)
    return value, pos


def write_uvarint(value: int) -> bytes:
    value = operator.index(value)
    if not 0 <= value <= 0xFFFFFFFF:
        raise errors.uvarint_out_of_range(value)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def unfilled_bytearray(size: int) -> bytearray:
    """A bytearray of `size` bytes for a reader to fill. The compiled twin leaves them as the
    allocator gives them, which is only safe where every byte is written before it is read."""
    if size < 0:
        raise ValueError(f"a size is not negative: {size}")
    return bytearray(size)
