# cython: language_level=3
"""Compiled twin of produce_py.py: a Produce request read without its records, and a Produce
response checked for error codes, both in place (the layouts are written out there)."""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint64_t

from big_endian cimport _i16, _i32

from brokerguard._native.wire import Truncated

__all__ = ["FLEXIBLE_FROM", "LAST_VERSION", "read_request", "response_clean"]

FLEXIBLE_FROM = 9
LAST_VERSION = 9

cdef enum:
    CUT = -1  # a read ran past the end (positions are never negative)
    FLEXIBLE = 9
    LAST = 9


cdef inline Py_ssize_t _uvarint(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                                uint64_t* value) noexcept nogil:
    """Past the varint at pos (at most 5 bytes), or CUT."""
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef unsigned char byte
    while True:
        if pos >= end or shift > 28:
            return CUT
        byte = p[pos]
        pos += 1
        result |= <uint64_t>(byte & 0x7F) << shift
        if byte < 0x80:
            value[0] = result
            return pos
        shift += 7


cdef inline Py_ssize_t _length(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, bint compact,
                               bint wide, int64_t* length) noexcept nogil:
    """A length (-1: null): length + 1 as a varint when compact, else int32 (wide) or int16."""
    cdef uint64_t encoded = 0
    if compact:
        pos = _uvarint(p, pos, end, &encoded)
        length[0] = <int64_t>encoded - 1
        return pos
    if pos + (4 if wide else 2) > end:
        return CUT
    length[0] = _i32(p + pos) if wide else _i16(p + pos)
    return pos + (4 if wide else 2)


cdef inline Py_ssize_t _skip_tags(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    """Past a tagged-field section (tags in ascending order, as in wire.skip_tags), or CUT."""
    cdef uint64_t count = 0, tag = 0, size = 0
    cdef int64_t last = -1
    pos = _uvarint(p, pos, end, &count)
    while pos >= 0 and count:
        pos = _uvarint(p, pos, end, &tag)
        if pos >= 0 and <int64_t>tag <= last:
            return CUT
        last = tag
        if pos >= 0:
            pos = _uvarint(p, pos, end, &size)
        if pos >= 0:
            pos += <Py_ssize_t>size
        count -= 1
    return pos if pos <= end else CUT


cdef object _string(const unsigned char* p, Py_ssize_t* at, Py_ssize_t end, bint compact):
    cdef int64_t n
    cdef Py_ssize_t pos = _length(p, at[0], end, compact, False, &n)
    if pos < 0:
        raise Truncated(f"string length cut off at offset {at[0]}")
    at[0] = pos
    if n < 0:
        if n < -1:  # only -1 is null; the broker's codec refuses the rest too
            raise Truncated(f"string length {n} before offset {pos} is neither -1 (null) nor 0 or more")
        return None
    if n > end - pos:
        raise Truncated(f"string runs past the frame at offset {pos}")
    at[0] = pos + n
    try:
        return PyUnicode_DecodeUTF8(<const char*>p + pos, n, NULL)
    except UnicodeDecodeError:
        raise Truncated(f"string at offset {pos} is not UTF-8") from None


cdef Py_ssize_t _tags(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end) except -1:
    pos = _skip_tags(p, pos, end)
    if pos < 0:
        raise Truncated("tagged fields run past the frame")
    return pos


cdef object _read(const unsigned char* p, Py_ssize_t start, Py_ssize_t end, list spans):
    cdef Py_ssize_t pos = start + 4, size_at
    cdef int version
    cdef bint flexible
    cdef int64_t count, n, size
    cdef int32_t index
    cdef list topics = [], partitions
    if pos + 8 > end:
        raise Truncated("request header cut off")
    version = _i16(p + pos + 2)
    if _i16(p + pos) != 0 or not 3 <= version <= LAST:
        raise ValueError(f"not a Produce request v3-v{LAST}")
    flexible = version >= FLEXIBLE
    pos += 8
    client_id = _string(p, &pos, end, False)
    if flexible:
        pos = _tags(p, pos, end)
    transactional_id = _string(p, &pos, end, flexible)
    if pos + 6 > end:
        raise Truncated("acks and timeout cut off")
    acks, timeout_ms = _i16(p + pos), _i32(p + pos + 2)
    pos = _length(p, pos + 6, end, flexible, True, &count)
    if pos < 0:
        raise Truncated("topic count cut off")
    while count > 0:
        count -= 1
        name = _string(p, &pos, end, flexible)
        partitions = []
        pos = _length(p, pos, end, flexible, True, &n)
        if pos < 0:
            raise Truncated("partition count cut off")
        while n > 0:
            n -= 1
            if pos + 4 > end:
                raise Truncated("partition index cut off")
            index = _i32(p + pos)
            size_at = pos + 4
            pos = _length(p, size_at, end, flexible, True, &size)
            if pos < 0:
                raise Truncated(f"records length cut off at offset {size_at}")
            if size > end - pos:
                raise Truncated("records run past the frame")
            if spans is not None and size >= 0:
                spans.append((name, index, pos, pos + size))
            if size > 0:
                pos += size
            if flexible:
                pos = _tags(p, pos, end)
            partitions.append({"index": index})
        if flexible:
            pos = _tags(p, pos, end)
        topics.append({"name": name, "partition_data": partitions})
    if flexible:
        pos = _tags(p, pos, end)
    return client_id, {"transactional_id": transactional_id, "acks": acks, "timeout_ms": timeout_ms,
                       "topic_data": topics}


def read_request(buf, Py_ssize_t start, Py_ssize_t end, list spans=None):
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if not 0 <= start <= end <= view.len:
            raise ValueError(f"frame {start}:{end} is outside a buffer of {view.len} bytes")
        return _read(<const unsigned char*>view.buf, start, end, spans)
    finally:
        PyBuffer_Release(&view)


cdef bint _clean(const unsigned char* p, Py_ssize_t end, int version) noexcept nogil:
    cdef bint flexible = version >= FLEXIBLE
    cdef Py_ssize_t pos = 8  # size and correlation id
    cdef int64_t topics, partitions, length
    if flexible:
        pos = _skip_tags(p, pos, end)
    pos = _length(p, pos, end, flexible, True, &topics) if pos >= 0 else CUT
    if pos < 0 or topics < 0:
        return False
    while topics > 0:
        topics -= 1
        pos = _length(p, pos, end, flexible, False, &length)  # the topic name
        if pos < 0 or length > end - pos:
            return False
        if length > 0:
            pos += length
        pos = _length(p, pos, end, flexible, True, &partitions)
        if pos < 0 or partitions < 0:
            return False
        while partitions > 0:
            partitions -= 1
            # index int32, error_code int16, base_offset and log_append_time_ms int64, from v5
            # log_start_offset int64
            if pos + 6 > end or _i16(p + pos + 4) != 0:
                return False
            pos += 22 if version < 5 else 30
            if version >= 8:
                pos = _length(p, pos, end, flexible, True, &length)  # record_errors
                if pos < 0 or length != 0:  # an error of a batch, or a broken array
                    return False
                pos = _length(p, pos, end, flexible, False, &length)  # error_message
                if pos < 0 or length > end - pos:
                    return False
                if length > 0:
                    pos += length
            if flexible:
                pos = _skip_tags(p, pos, end)
                if pos < 0:
                    return False
        if flexible:
            pos = _skip_tags(p, pos, end)
            if pos < 0:
                return False
    pos += 4  # throttle_time_ms
    if flexible:
        pos = _skip_tags(p, pos, end)
    return pos == end


def response_clean(frame, int version):
    cdef Py_buffer view
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    try:
        return _clean(<const unsigned char*>view.buf, view.len, version)
    finally:
        PyBuffer_Release(&view)
