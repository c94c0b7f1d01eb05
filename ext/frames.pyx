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
# cython: language_level=3
"""Compiled twin of frames_py.py: finds Kafka frames and reads request headers in place."""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t

from big_endian cimport _i16, _i32

import operator

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

# Same values as errors.VARINT_*; positions are never negative, so a negative return is a fault.
cdef enum:
    VARINT_TRUNCATED = -1
    VARINT_TOO_LONG = -2
    VARINT_TOO_LARGE = -3

cdef enum:
    PRODUCE = 0
    REQUEST_HEADER_MIN = 8  # api_key, api_version, correlation_id
    RESPONSE_HEADER_MIN = 4  # correlation_id
    INT32_MAX = 0x7FFFFFFF


cdef inline Py_ssize_t _uvarint(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                                uint32_t* value) noexcept nogil:
    """The position after the varint at p[pos], or a negative VARINT_* fault."""
    cdef uint32_t result = 0
    cdef int shift = 0
    cdef unsigned char byte
    while True:
        if pos >= end:
            return VARINT_TRUNCATED
        byte = p[pos]
        pos += 1
        if shift == 28:
            if byte & 0x80:
                return VARINT_TOO_LONG
            if byte > 0x0F:
                return VARINT_TOO_LARGE
        result |= <uint32_t>(byte & 0x7F) << shift
        if byte < 0x80:
            value[0] = result
            return pos
        shift += 7


cdef Py_ssize_t _client_id_end(const unsigned char* p, Py_ssize_t body, Py_ssize_t frame_end,
                               Py_ssize_t* length_out) except -1:
    """The end of client_id; its length (-1 for null) goes to length_out."""
    cdef Py_ssize_t pos = body + REQUEST_HEADER_MIN
    cdef Py_ssize_t length
    if frame_end - pos < 2:
        raise errors.request_header_truncated(frame_end - body)
    length = _i16(p + pos)
    pos += 2
    if length < -1:
        raise errors.client_id_invalid_length(length)
    if length > frame_end - pos:
        raise errors.client_id_truncated(length, frame_end - body)
    length_out[0] = length
    if length > 0:
        pos += length
    return pos


cdef Py_ssize_t _skip_tagged_fields(const unsigned char* p, Py_ssize_t pos, Py_ssize_t frame_end,
                                    Py_ssize_t body) except -1:
    cdef uint32_t count, tag, size
    pos = _uvarint(p, pos, frame_end, &count)
    if pos < 0:
        raise _tagged_fields_fault(pos, frame_end - body)
    # Each field takes at least 2 bytes, so a huge count ends at the frame end quickly.
    while count:
        pos = _uvarint(p, pos, frame_end, &tag)
        if pos < 0:
            raise _tagged_fields_fault(pos, frame_end - body)
        pos = _uvarint(p, pos, frame_end, &size)
        if pos < 0:
            raise _tagged_fields_fault(pos, frame_end - body)
        if <int64_t>size > frame_end - pos:
            raise errors.tagged_fields_truncated(frame_end - body)
        pos += size
        count -= 1
    return pos


cdef object _tagged_fields_fault(Py_ssize_t code, Py_ssize_t frame_size):
    if code == VARINT_TRUNCATED:
        return errors.tagged_fields_truncated(frame_size)
    return errors.varint_invalid(code, "request header", "tagged fields")


cdef int _produce_acks(const unsigned char* p, Py_ssize_t body, Py_ssize_t frame_end,
                       int version, bint flexible) except -100000:
    cdef Py_ssize_t client_id_length, length
    cdef uint32_t encoded
    cdef Py_ssize_t pos = _client_id_end(p, body, frame_end, &client_id_length)
    if flexible:
        pos = _skip_tagged_fields(p, pos, frame_end, body)
    if version >= 3:
        if flexible:
            pos = _uvarint(p, pos, frame_end, &encoded)
            if pos < 0:
                if pos == VARINT_TRUNCATED:
                    raise errors.produce_truncated(version)
                raise errors.varint_invalid(pos, f"Produce v{version} body", "transactional_id")
            length = <Py_ssize_t>encoded - 1
        else:
            if frame_end - pos < 2:
                raise errors.produce_truncated(version)
            length = _i16(p + pos)
            pos += 2
            if length < -1:
                raise errors.transactional_id_invalid_length(version, length)
        if length > 0:
            if length > frame_end - pos:
                raise errors.produce_truncated(version)
            pos += length
    if frame_end - pos < 2:
        raise errors.produce_truncated(version)
    return _i16(p + pos)


cdef inline int _check_range(Py_ssize_t start, Py_ssize_t end, Py_ssize_t length) except -1:
    # boundscheck is off for the whole build: this is the only guard on the caller's offsets.
    if not (0 <= start <= end <= length):
        errors.check_range(start, end, length)
    return 0


cdef class RequestScanner:
    """Finds complete request frames in a client's byte stream and reads their headers."""

    cdef readonly tuple flexible_from
    cdef readonly object max_frame_bytes
    cdef int64_t _limit
    cdef int _produce_flexible_from

    def __init__(self, flexible_from, max_frame_bytes):
        self.flexible_from = errors.check_flexible_from(flexible_from)
        self.max_frame_bytes = errors.check_max_frame_bytes(max_frame_bytes, REQUEST_HEADER_MIN)
        self._limit = min(self.max_frame_bytes, INT32_MAX)
        self._produce_flexible_from = self.flexible_from[PRODUCE]

    def scan(self, buf, Py_ssize_t start, Py_ssize_t end):
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t pos = start, body, frame_end, pending = 0
        cdef int32_t size
        cdef int16_t api_key, api_version
        cdef bint expects_response
        cdef list frames = []
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            _check_range(start, end, view.len)
            p = <const unsigned char*>view.buf
            while end - pos >= 4:
                size = _i32(p + pos)
                if size < 0:
                    raise errors.negative_size(size)
                if size > self._limit:
                    raise errors.oversized(size, self.max_frame_bytes)
                if size < REQUEST_HEADER_MIN:
                    raise errors.request_header_truncated(size)
                if end - pos - 4 < size:
                    pending = <Py_ssize_t>size + 4
                    break
                body = pos + 4
                frame_end = body + size
                api_key = _i16(p + body)
                api_version = _i16(p + body + 2)
                expects_response = True
                if api_key == PRODUCE:
                    expects_response = _produce_acks(
                        p, body, frame_end, api_version,
                        0 <= self._produce_flexible_from <= api_version,
                    ) != 0
                frames.append((pos, frame_end, api_key, api_version, _i32(p + body + 4), expects_response))
                pos = frame_end
            return frames, pos, pending
        finally:
            PyBuffer_Release(&view)


cdef class ResponseScanner:
    """Finds complete response frames in the broker's byte stream and reads their correlation ids."""

    cdef readonly object max_frame_bytes
    cdef int64_t _limit

    def __init__(self, max_frame_bytes):
        self.max_frame_bytes = errors.check_max_frame_bytes(max_frame_bytes, RESPONSE_HEADER_MIN)
        self._limit = min(self.max_frame_bytes, INT32_MAX)

    def scan(self, buf, Py_ssize_t start, Py_ssize_t end):
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t pos = start, frame_end, pending = 0
        cdef int32_t size
        cdef list frames = []
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            _check_range(start, end, view.len)
            p = <const unsigned char*>view.buf
            while end - pos >= 4:
                size = _i32(p + pos)
                if size < 0:
                    raise errors.negative_size(size)
                if size > self._limit:
                    raise errors.oversized(size, self.max_frame_bytes)
                if size < RESPONSE_HEADER_MIN:
                    raise errors.response_header_truncated(size)
                if end - pos - 4 < size:
                    pending = <Py_ssize_t>size + 4
                    break
                frame_end = pos + 4 + size
                frames.append((pos, frame_end, _i32(p + pos + 4)))
                pos = frame_end
            return frames, pos, pending
        finally:
            PyBuffer_Release(&view)


def parse_request_header(buf, Py_ssize_t offset, Py_ssize_t end, flexible_from):
    """Read the whole request header of the payload buf[offset:end].

    Returns (api_key, api_version, correlation_id, client_id, body_offset). An api_key
    beyond flexible_from is refused: its header length cannot be known.
    """
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t pos, length
    cdef int16_t api_key, api_version
    cdef int32_t correlation_id
    cdef object client_id = None
    cdef Py_ssize_t first_flexible
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        _check_range(offset, end, view.len)
        p = <const unsigned char*>view.buf
        if end - offset < REQUEST_HEADER_MIN:
            raise errors.request_header_truncated(end - offset)
        api_key = _i16(p + offset)
        api_version = _i16(p + offset + 2)
        correlation_id = _i32(p + offset + 4)
        if not 0 <= api_key < len(flexible_from):
            raise errors.unknown_api_key(api_key)
        first_flexible = operator.index(flexible_from[api_key])
        pos = _client_id_end(p, offset, end, &length)
        if length >= 0:
            try:
                client_id = PyUnicode_DecodeUTF8(<const char*>(p + pos - length), length, NULL)
            except UnicodeDecodeError as err:
                raise errors.client_id_not_utf8(err) from err
        if 0 <= first_flexible <= api_version:
            pos = _skip_tagged_fields(p, pos, end, offset)
        return api_key, api_version, correlation_id, client_id, pos
    finally:
        PyBuffer_Release(&view)


def read_uvarint(buf, Py_ssize_t offset):
    """(value, next_offset) of the unsigned varint at buf[offset]."""
    cdef Py_buffer view
    cdef uint32_t value
    cdef Py_ssize_t pos
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        _check_range(offset, offset, view.len)
        pos = _uvarint(<const unsigned char*>view.buf, offset, view.len, &value)
        if pos < 0:
            raise errors.varint_at(pos, offset)
        return value, pos
    finally:
        PyBuffer_Release(&view)


def write_uvarint(value):
    cdef unsigned char out[5]
    cdef int n = 0
    cdef uint32_t v
    value = operator.index(value)
    if not 0 <= value <= 0xFFFFFFFF:
        raise errors.uvarint_out_of_range(value)
    v = value
    while v > 0x7F:
        out[n] = (v & 0x7F) | 0x80
        v >>= 7
        n += 1
    out[n] = v
    return (<char*>out)[:n + 1]


def unfilled_bytearray(Py_ssize_t size):
    if size < 0:
        raise ValueError(f"a size is not negative: {size}")
    return PyByteArray_FromStringAndSize(NULL, size)  # NULL: the bytes are left as allocated
