# cython: language_level=3
"""Kafka's big-endian integers read and written in place, shared by the compiled readers.

Each function is inlined where it is used. Header only: nothing here is imported at run time.
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t


cdef inline int16_t _i16(const unsigned char* p) noexcept nogil:
    return <int16_t>(<uint16_t>((<uint16_t>p[0] << 8) | p[1]))


cdef inline uint32_t _u32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


cdef inline int32_t _i32(const unsigned char* p) noexcept nogil:
    return <int32_t>_u32(p)


cdef inline int64_t _i64(const unsigned char* p) noexcept nogil:
    return <int64_t>((<uint64_t>_u32(p) << 32) | _u32(p + 4))


cdef inline void _put_u16(unsigned char* p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v


cdef inline void _put_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = v >> 16
    p[2] = v >> 8
    p[3] = v


cdef inline void _put_u64(unsigned char* p, uint64_t v) noexcept nogil:
    _put_u32(p, <uint32_t>(v >> 32))
    _put_u32(p + 4, <uint32_t>v)
