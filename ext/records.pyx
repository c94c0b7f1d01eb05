# Kafka wire format read and written here (integers big-endian, two's complement):
#
#   record batch      baseOffset:int64 batchLength:int32 partitionLeaderEpoch:int32 magic:int8
#     (magic 2)       crc:uint32 attributes:int16 lastOffsetDelta:int32 baseTimestamp:int64
#                     maxTimestamp:int64 producerId:int64 producerEpoch:int16 baseSequence:int32
#                     count:int32 records
#                     batchLength counts from partitionLeaderEpoch to the end, so it is at least
#                     49; crc is the CRC-32C of attributes..end
#   attributes        bits 0-2 codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), bit 3 timestamp
#                     type (1: log-append time), bit 4 transactional, bit 5 control
#   records           count records back to back, compressed as a whole unless the codec is none
#   record            length:varint attributes:int8 timestampDelta:varlong offsetDelta:varint
#                     keyLength:varint key valueLength:varint value headerCount:varint header*
#                     length counts the bytes after itself; a negative key or value length is null
#   header            keyLength:varint key (utf-8) valueLength:varint value (negative: null)
#   varint, varlong   zigzag-signed; 7 bits per byte, low group first, high bit set on all but the
#                     last; at most 5 bytes and 32 bits (varlong: 10 bytes, 64 bits)
#   gzip              a gzip stream (members may follow one another)
#   snappy            xerial framing, as the Java client writes it: magic 82 53 4e 41 50 50 59 00,
#                     version:int32 compatibleVersion:int32, then blocks {length:int32 raw-snappy};
#                     or one raw snappy block, as librdkafka may write it. Both are read; a batch
#                     is written back in the framing it was read in, a new batch in xerial.
#   lz4               the LZ4 frame format; written as the Java client writes it (independent
#                     64 KiB blocks, no checksums, no content size): Java reads no linked blocks
#   zstd              a zstd frame
#
# A Fetch response's records may end with a partial batch; it is left for the next fetch.
# cython: language_level=3
"""Compiled twin of records_py.py: reads and writes Kafka record batches (magic 2) in place.

Decoding keeps one C span per record (where its key, value and headers lie); bytes and str
objects are made only for the column asked for. Re-encoding copies the untouched spans.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.pycapsule cimport PyCapsule_GetContext, PyCapsule_GetPointer, PyCapsule_IsValid
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from big_endian cimport _i16, _i32, _i64, _put_u16, _put_u32, _put_u64, _u32
from value_check cimport CHECK_CAPSULE, CheckValue
from value_mask cimport CAPSULE, PLAIN_CAPSULE, VALUE_KEPT, VALUE_MASKED, MaskOutput, MaskPlain, MaskValue

import struct
import sys
import zlib

import cramjam
from google_crc32c import value as _crc32c_value

from brokerguard._native import errors
from brokerguard._native.errors import RecordError

__all__ = [
    "GZIP",
    "LZ4",
    "NONE",
    "SNAPPY",
    "ZSTD",
    "Batch",
    "RecordError",
    "Records",
    "encode_batch",
    "read_batches",
]

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4

cdef enum:
    CODEC_NONE = 0
    CODEC_GZIP = 1
    CODEC_SNAPPY = 2
    CODEC_LZ4 = 3
    CODEC_ZSTD = 4
    HEADER_SIZE = 61
    PREFIX = 12  # baseOffset and batchLength: outside batchLength's count
    MIN_LENGTH = HEADER_SIZE - PREFIX
    LENGTH_AT = 8
    MAGIC_AT = 16
    CRC_AT = 17
    ATTRIBUTES_AT = 21  # the CRC covers from here to the end
    MIN_RECORD = 7  # length, attributes, timestamp delta, offset delta, key, value, header count
    INT32_MAX = 0x7FFFFFFF

# Same values as errors.RECORD_*; positions are never negative, so a negative return is a fault.
cdef enum:
    RECORD_TRUNCATED = 1
    RECORD_PAST_END = 2
    RECORD_VARINT_TOO_LONG = 3
    RECORD_VARINT_TOO_LARGE = 4
    RECORD_NEGATIVE = 5
    RECORD_UNUSED_BYTES = 6

# Record fields, by their index in errors.RECORD_FIELDS.
cdef enum:
    F_LENGTH = 0
    F_ATTRIBUTES = 1
    F_TIMESTAMP_DELTA = 2
    F_OFFSET_DELTA = 3
    F_KEY_LENGTH = 4
    F_KEY = 5
    F_VALUE_LENGTH = 6
    F_VALUE = 7
    F_HEADER_COUNT = 8
    F_HEADER_KEY_LENGTH = 9
    F_HEADER_KEY = 10
    F_HEADER_VALUE_LENGTH = 11
    F_HEADER_VALUE = 12

# Codecs: the same constants as records_py.py. Decompression never produces more than
# max_uncompressed_bytes + 1 bytes.
_OUTPUT_FULL = "failed to write whole buffer"  # cramjam's error when the output buffer is too small
cdef Py_ssize_t FIRST_CAPACITY = 1 << 18
cdef Py_ssize_t CAPACITY_RATIO = 16  # first guess of the decompressed size, times the compressed size
cdef Py_ssize_t CAPACITY_GROWTH = 4
cdef Py_ssize_t SIZE_CEILING = sys.maxsize - 1
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x01"  # version 1, compatible with 1
cdef Py_ssize_t XERIAL_BLOCK = 32 * 1024
# Magic, FLG (version 1, independent blocks), BD (64 KiB blocks), descriptor checksum.
_LZ4_FRAME_HEADER = b"\x04\x22\x4d\x18\x60\x40\x82"
cdef Py_ssize_t LZ4_BLOCK = 64 * 1024
cdef uint32_t LZ4_UNCOMPRESSED = 0x80000000
_ZSTD_LEVEL = 3  # the Java client's default
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")
_INT64_MAX = 0x7FFFFFFFFFFFFFFF
_INT64_MIN = -_INT64_MAX - 1


ctypedef struct Span:
    Py_ssize_t start  # the record's first byte after its length varint
    Py_ssize_t end
    Py_ssize_t key
    Py_ssize_t value_at  # the value's length varint
    Py_ssize_t value
    Py_ssize_t headers_at  # the header count varint
    int64_t timestamp_delta
    int32_t offset_delta
    int32_t key_length  # -1: null
    int32_t value_length  # -1: null


ctypedef struct Fault:
    int code
    int field
    int64_t a
    int64_t b


ctypedef struct Piece:
    const char* data
    Py_ssize_t length  # -1: null
    Py_ssize_t size  # the whole record's size, after its length varint


# Varints


cdef inline Py_ssize_t _varint32(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                                 int32_t* value) noexcept nogil:
    """The position after the zigzag varint at p[pos], or a negative RECORD_* fault."""
    cdef uint32_t raw
    cdef int shift = 0
    cdef unsigned char byte
    if pos < end and p[pos] < 0x80:  # most varints here are one byte
        raw = p[pos]
        value[0] = <int32_t>((raw >> 1) ^ (<uint32_t>0 - (raw & 1)))
        return pos + 1
    raw = 0
    while True:
        if pos >= end:
            return -RECORD_TRUNCATED
        byte = p[pos]
        pos += 1
        if shift == 28:
            if byte & 0x80:
                return -RECORD_VARINT_TOO_LONG
            if byte > 0x0F:
                return -RECORD_VARINT_TOO_LARGE
        raw |= <uint32_t>(byte & 0x7F) << shift
        if byte < 0x80:
            value[0] = <int32_t>((raw >> 1) ^ (<uint32_t>0 - (raw & 1)))
            return pos
        shift += 7


cdef inline Py_ssize_t _varint64(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end,
                                 int64_t* value) noexcept nogil:
    cdef uint64_t raw = 0
    cdef int shift = 0
    cdef unsigned char byte
    while True:
        if pos >= end:
            return -RECORD_TRUNCATED
        byte = p[pos]
        pos += 1
        if shift == 63:
            if byte & 0x80:
                return -RECORD_VARINT_TOO_LONG
            if byte > 0x01:
                return -RECORD_VARINT_TOO_LARGE
        raw |= <uint64_t>(byte & 0x7F) << shift
        if byte < 0x80:
            value[0] = <int64_t>((raw >> 1) ^ (<uint64_t>0 - (raw & 1)))
            return pos
        shift += 7


cdef inline uint64_t _zigzag(int64_t value) noexcept nogil:
    # For an int32 the same bytes as the 32-bit form.
    return (<uint64_t>value << 1) ^ <uint64_t>(value >> 63)


cdef inline Py_ssize_t _varint_size(int64_t value) noexcept nogil:
    cdef uint64_t raw = _zigzag(value)
    cdef Py_ssize_t size = 1
    while raw > 0x7F:
        raw >>= 7
        size += 1
    return size


cdef inline unsigned char* _put_varint(unsigned char* w, int64_t value) noexcept nogil:
    cdef uint64_t raw = _zigzag(value)
    while raw > 0x7F:
        w[0] = (raw & 0x7F) | 0x80
        raw >>= 7
        w += 1
    w[0] = <unsigned char>raw
    return w + 1


cdef inline Py_ssize_t _blob_size(object blob):
    """Bytes taken by a length-prefixed bytes or None."""
    if blob is None:
        return 1
    return _varint_size(PyBytes_GET_SIZE(blob)) + PyBytes_GET_SIZE(blob)


cdef inline unsigned char* _put_blob(unsigned char* w, object blob):
    cdef Py_ssize_t size
    if blob is None:
        return _put_varint(w, -1)
    size = PyBytes_GET_SIZE(blob)
    w = _put_varint(w, size)
    memcpy(w, PyBytes_AS_STRING(blob), size)
    return w + size


# CRC-32C


@cython.final
cdef class _View:
    """Read-only bytes inside another object. google_crc32c takes only buffers without a
    release hook (bytes, not memoryview); this one has none, so no slice is copied."""

    cdef object owner
    cdef const char* data
    cdef Py_ssize_t size

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, <void*>self.data, self.size, 1, flags)


ctypedef uint32_t (*Crc32c)(const char* data, size_t size) noexcept nogil


def _native_crc32c():
    """The address of google-crc32c's own C function (crc32c_value), which its Python function
    calls with the GIL held; 0 where the package has no C library."""
    try:
        import ctypes

        from google_crc32c import _crc32c
        return ctypes.cast(ctypes.CDLL(_crc32c.__file__).crc32c_value, ctypes.c_void_p).value or 0
    except (ImportError, OSError, AttributeError):
        return 0


# Every CRC is this function where it is found, and Batch.masked calls it with the GIL released;
# NULL: CRCs go through the package's Python function, and masked() masks with the GIL as
# with_masked_values does.
cdef Crc32c _crc32c_nogil = <Crc32c><size_t>_native_crc32c()


cdef uint32_t _crc32c(object owner, const char* data, Py_ssize_t size) except? 0:
    if _crc32c_nogil != NULL:
        return _crc32c_nogil(data, size)
    cdef _View view = _View.__new__(_View)
    view.owner = owner
    view.data = data
    view.size = size
    return _crc32c_value(view)


cdef int _seal(bytes out) except -1:
    """Set the batch length and CRC of a batch built in `out`, which nothing else holds yet."""
    cdef unsigned char* w = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(out)
    _put_seal(w, size, _crc32c(out, <char*>w + ATTRIBUTES_AT, size - ATTRIBUTES_AT))
    return 0


cdef inline void _put_seal(unsigned char* w, Py_ssize_t size, uint32_t crc) noexcept nogil:
    """The batch length and CRC of the `size`-byte batch at w."""
    _put_u32(w + LENGTH_AT, <uint32_t>(size - PREFIX))
    _put_u32(w + CRC_AT, crc)


cdef bytes _sealed(const char* header, object body):
    """header (61 bytes) + body (a buffer), with its batch length and CRC set."""
    cdef Py_buffer view
    cdef bytes out
    cdef char* w
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + view.len)
        w = PyBytes_AS_STRING(out)
        memcpy(w, header, HEADER_SIZE)
        memcpy(w + HEADER_SIZE, view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    _seal(out)
    return out


cdef object _bytes_or_none(str column, Py_ssize_t index, object value):
    cdef Py_buffer view
    if value is None or PyBytes_CheckExact(value):
        return value
    try:
        PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
    except (TypeError, BufferError):
        raise errors.not_bytes(column, index, value) from None
    try:
        return PyBytes_FromStringAndSize(<char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# The masked values of one batch are written here, a buffer kept from batch to batch: a fresh
# one of a few hundred KiB per batch costs its pages' faults every time.
cdef MaskOutput _scratch
cdef bint _scratch_busy = False
cdef Py_ssize_t SCRATCH_KEPT = 8 << 20  # a larger one (a huge batch) is let go after use
memset(&_scratch, 0, sizeof(MaskOutput))


cdef int _check_crc_of(Batch batch, uint32_t computed) except -1:
    """Marks the batch checked if computed is its CRC; else raises as read_batches does."""
    if computed != batch.crc:
        raise errors.batch_crc_mismatch(batch.unchecked_at, batch.crc, computed)
    batch.unchecked_at = -1
    return 0


cdef MaskOutput* _take_scratch(MaskOutput* own) noexcept:
    """The kept buffer, or `own` (emptied) while another batch is being masked into it (a hash
    function or another thread may be masking one meanwhile)."""
    global _scratch_busy
    if _scratch_busy:
        memset(own, 0, sizeof(MaskOutput))
        return own
    _scratch_busy = True
    _scratch.size = 0
    return &_scratch


cdef void _give_back(MaskOutput* out) noexcept:
    global _scratch_busy
    if out != &_scratch:
        free(out.data)
        return
    if _scratch.capacity > SCRATCH_KEPT:
        free(_scratch.data)
        memset(&_scratch, 0, sizeof(MaskOutput))
    _scratch_busy = False


@cython.final
cdef class Batch:
    """One record batch as read: its header fields and its own bytes (raw)."""

    cdef readonly int64_t base_offset
    cdef readonly int32_t partition_leader_epoch
    cdef readonly int magic
    cdef readonly uint32_t crc
    cdef readonly int attributes
    cdef readonly int32_t last_offset_delta
    cdef readonly int64_t base_timestamp
    cdef readonly int64_t max_timestamp
    cdef readonly int64_t producer_id
    cdef readonly int producer_epoch
    cdef readonly int32_t base_sequence
    cdef readonly int32_t count
    cdef readonly bytes raw
    cdef Py_ssize_t unchecked_at  # where it was read, while its CRC is not checked yet; else -1

    def __init__(self, *args, **kwargs):
        raise errors.not_constructible("Batch", "read_batches")

    @property
    def compression(self):
        return self.attributes & 7

    @property
    def timestamp_type(self):
        return (self.attributes >> 3) & 1

    @property
    def is_transactional(self):
        return bool(self.attributes & 0x10)

    @property
    def is_control(self):
        return bool(self.attributes & 0x20)

    def __repr__(self):
        return (
            f"Batch(base_offset={self.base_offset}, count={self.count}, compression={self.compression}, "
            f"bytes={len(self.raw)})"
        )

    cdef int _check_crc(self) except -1:
        cdef const char* p = PyBytes_AS_STRING(self.raw)
        cdef uint32_t computed
        if self.unchecked_at >= 0:
            computed = _crc32c(self.raw, p + ATTRIBUTES_AT, PyBytes_GET_SIZE(self.raw) - ATTRIBUTES_AT)
            _check_crc_of(self, computed)
        return 0

    def decode(self, max_uncompressed_bytes):
        cdef object limit = errors.check_limit(max_uncompressed_bytes)
        cdef int codec = self.attributes & 7
        cdef object data
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self.raw)
        self._check_crc()
        if codec == CODEC_NONE:
            if size - HEADER_SIZE > limit:
                raise errors.records_oversized(self.base_offset, CODEC_NONE, limit)
            return _parse(self, self.raw, PyBytes_AS_STRING(self.raw), HEADER_SIZE, size)
        with memoryview(self.raw) as view:
            data = _decompress(codec, view[HEADER_SIZE:], limit, self.base_offset)
        if PyBytes_CheckExact(data):
            return _parse(self, data, PyBytes_AS_STRING(data), 0, PyBytes_GET_SIZE(data))
        return _parse(self, data, PyByteArray_AS_STRING(data), 0, len(data))

    def with_values(self, records, values):
        cdef Records recs = self._own(records)
        cdef Py_ssize_t count = recs.count, index
        cdef Piece* pieces
        cdef object value
        cdef list keep = []  # bytes copied from other buffers, alive until written
        if len(values) != count:
            raise errors.values_count_mismatch(len(values), count)
        if type(values) is not list and type(values) is not tuple:
            values = list(values)
        pieces = <Piece*>malloc((count if count > 0 else 1) * sizeof(Piece))
        if pieces == NULL:
            raise MemoryError()
        try:
            for index in range(count):
                value = values[index]
                if value is None:
                    pieces[index].data = NULL
                    pieces[index].length = -1
                else:
                    if not PyBytes_CheckExact(value):
                        value = _bytes_or_none("values", index, value)
                        keep.append(value)
                    pieces[index].data = PyBytes_AS_STRING(value)
                    pieces[index].length = PyBytes_GET_SIZE(value)
            return self._rebuilt(recs, pieces)
        finally:
            free(pieces)

    def with_masked_values(self, records, masker):
        cdef Records recs = self._own(records)
        cdef object plain = getattr(masker, "native_mask_plain", None)
        cdef object capsule = getattr(masker, "native_mask_value", None)
        cdef MaskPlain mask_plain = NULL
        cdef const void* context = NULL
        cdef MaskValue mask_value = NULL
        if plain is not None and PyCapsule_IsValid(plain, PLAIN_CAPSULE):
            mask_plain = <MaskPlain>PyCapsule_GetPointer(plain, PLAIN_CAPSULE)
            context = PyCapsule_GetContext(plain)
        elif capsule is not None and PyCapsule_IsValid(capsule, CAPSULE):
            mask_value = <MaskValue>PyCapsule_GetPointer(capsule, CAPSULE)
        else:
            return self._masked_value_by_value(recs, masker)
        cdef Py_ssize_t count = recs.count, index, before
        cdef Piece* pieces = <Piece*>malloc((count if count > 0 else 1) * sizeof(Piece))
        cdef Span* span
        cdef MaskOutput* out  # every masked value, back to back
        cdef MaskOutput own
        cdef bint changed = False
        cdef int status
        if pieces == NULL:
            raise MemoryError()
        out = _take_scratch(&own)
        try:
            if mask_plain != NULL:
                # Masks nothing but these bytes, so other threads run meanwhile: a large Fetch
                # is masked on more than one core.
                with nogil:
                    status = _mask_plain_values(mask_plain, context, recs.data, recs.spans, count, pieces, out,
                                                &changed)
                if status < 0:
                    raise MemoryError()
                if status != VALUE_KEPT:
                    return None
            for index in range(count if mask_plain == NULL else 0):
                span = recs.spans + index
                if not _value_piece(pieces + index, recs.data, span):
                    continue
                before = out.size
                status = mask_value(masker, recs.data + span.value, span.value_length, out)
                if status == VALUE_MASKED:
                    _masked_piece(pieces + index, before, out)
                    changed = True
                elif status != VALUE_KEPT:
                    return None
            if not changed:
                return self.raw
            _point_into(pieces, count, out)
            return self._rebuilt(recs, pieces)
        finally:
            free(pieces)
            _give_back(out)

    def masked(self, masker, max_uncompressed_bytes):
        cdef object limit = errors.check_limit(max_uncompressed_bytes)
        cdef object plain = getattr(masker, "native_mask_plain", None)
        if (self.attributes & 7 != CODEC_NONE or _crc32c_nogil == NULL or plain is None
                or not PyCapsule_IsValid(plain, PLAIN_CAPSULE)):
            return self.with_masked_values(self.decode(max_uncompressed_bytes), masker)
        return self._masked_plain(<MaskPlain>PyCapsule_GetPointer(plain, PLAIN_CAPSULE),
                                  PyCapsule_GetContext(plain), limit)

    cdef object _masked_plain(self, MaskPlain mask, const void* context, object limit):
        """masked() of an uncompressed batch by a MaskPlain: read, masked, written and sealed with
        the GIL released but to allocate the new batch."""
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(self.raw)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(self.raw), count, parsed = 0, total = 0
        cdef Span* spans = NULL
        cdef Piece* pieces = NULL
        cdef MaskOutput own
        cdef MaskOutput* out
        cdef Fault fault
        cdef bint changed = False
        cdef int status = VALUE_KEPT
        cdef bytes rebuilt
        cdef unsigned char* w
        cdef uint32_t computed
        if self.unchecked_at >= 0:
            with nogil:
                computed = _crc32c_nogil(<const char*>p + ATTRIBUTES_AT, size - ATTRIBUTES_AT)
            _check_crc_of(self, computed)
        if size - HEADER_SIZE > limit:
            raise errors.records_oversized(self.base_offset, CODEC_NONE, limit)
        out = _take_scratch(&own)
        try:
            with nogil:
                count = _parse_spans(p, HEADER_SIZE, size, self.count, &spans, &parsed, &fault)
                if count >= 0:
                    pieces = <Piece*>malloc((count if count > 0 else 1) * sizeof(Piece))
                    if pieces == NULL:
                        status = -1
                    else:
                        status = _mask_plain_values(mask, context, p, spans, count, pieces, out, &changed)
                if status == VALUE_KEPT and changed:
                    _point_into(pieces, count, out)
                    total = _rebuilt_size(spans, count, pieces)
            if count < 0:
                _raise_parse_error(self, count, parsed, &fault)
            if status < 0:
                raise MemoryError()
            if status != VALUE_KEPT:
                return None
            if not changed:
                return self.raw
            if total < 0:
                raise errors.record_too_large(-total - 1, pieces[-total - 1].size)
            rebuilt = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + total)
            w = <unsigned char*>PyBytes_AS_STRING(rebuilt)
            with nogil:
                memcpy(w, p, HEADER_SIZE)
                _write_with_values(w + HEADER_SIZE, p, spans, count, pieces)
                _put_seal(w, HEADER_SIZE + total,
                          _crc32c_nogil(<char*>w + ATTRIBUTES_AT, HEADER_SIZE + total - ATTRIBUTES_AT))
            return rebuilt
        finally:
            free(spans)
            free(pieces)
            _give_back(out)

    cdef object _masked_value_by_value(self, Records recs, object masker):
        cdef list values = recs.values(), masked = []
        cdef bint changed = False
        for value in values:
            if value is not None:
                result = masker.mask(value)
                if not PyBytes_CheckExact(result):
                    return None
                changed = changed or result is not value
                value = result
            masked.append(value)
        return self.with_values(recs, masked) if changed else self.raw

    cdef Records _own(self, object records):
        if not isinstance(records, Records) or (<Records>records).batch is not self:
            raise errors.records_of_another_batch()
        return <Records>records

    cdef bytes _rebuilt(self, Records recs, Piece* pieces):
        """This batch with each record's value taken from its piece (data and length)."""
        cdef Py_ssize_t total = _rebuilt_size(recs.spans, recs.count, pieces)
        cdef bytes out, body
        cdef bint xerial
        cdef int codec = self.attributes & 7
        if total < 0:
            raise errors.record_too_large(-total - 1, pieces[-total - 1].size)
        if codec == CODEC_NONE:
            out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + total)
            memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(self.raw), HEADER_SIZE)
            _write_with_values(<unsigned char*>PyBytes_AS_STRING(out) + HEADER_SIZE, recs.data, recs.spans,
                               recs.count, pieces)
            _seal(out)
            return out
        body = PyBytes_FromStringAndSize(NULL, total)
        _write_with_values(<unsigned char*>PyBytes_AS_STRING(body), recs.data, recs.spans, recs.count, pieces)
        xerial = (
            codec == CODEC_SNAPPY
            and PyBytes_GET_SIZE(self.raw) >= HEADER_SIZE + 8
            and memcmp(PyBytes_AS_STRING(self.raw) + HEADER_SIZE, b"\x82SNAPPY\x00", 8) == 0
        )
        return _sealed(PyBytes_AS_STRING(self.raw), _compress(codec, body, xerial))


cdef int _mask_plain_values(MaskPlain mask, const void* context, const unsigned char* data, Span* spans,
                            Py_ssize_t count, Piece* pieces, MaskOutput* out, bint* changed) noexcept nogil:
    """with_masked_values' loop for a MaskPlain: each value's piece, masked ones in out (their
    offset in size until out stops growing). VALUE_KEPT once every value is kept or masked,
    the VALUE_* of the first that is neither, or -1: out of memory."""
    cdef Py_ssize_t index, before
    cdef Span* span
    cdef int status
    for index in range(count):
        span = spans + index
        if not _value_piece(pieces + index, data, span):
            continue
        before = out.size
        status = mask(context, data + span.value, span.value_length, out)
        if status == VALUE_MASKED:
            _masked_piece(pieces + index, before, out)
            changed[0] = True
        elif status != VALUE_KEPT:
            return status
    return VALUE_KEPT


cdef inline bint _value_piece(Piece* piece, const unsigned char* data, Span* span) noexcept nogil:
    """piece is the record's value as it is; False for a null value (nothing to mask)."""
    piece.length = span.value_length
    piece.size = -1
    piece.data = NULL if span.value_length < 0 else <const char*>data + span.value
    return span.value_length >= 0


cdef inline void _masked_piece(Piece* piece, Py_ssize_t before, MaskOutput* out) noexcept nogil:
    """piece is the masked value appended to out from `before`: its offset is kept in size, as
    out may still move while it grows."""
    piece.size = before
    piece.length = out.size - before


cdef inline void _point_into(Piece* pieces, Py_ssize_t count, MaskOutput* out) noexcept nogil:
    """Each masked piece's data, now that out no longer moves."""
    cdef Py_ssize_t index
    for index in range(count):
        if pieces[index].size >= 0:
            pieces[index].data = <const char*>out.data + pieces[index].size


cdef Py_ssize_t _rebuilt_size(const Span* spans, Py_ssize_t count, Piece* pieces) noexcept nogil:
    """The size of the records rebuilt with each value from its piece, every piece's size set to
    its record's; or -(index + 1) for the first record that would exceed INT32_MAX bytes."""
    cdef Py_ssize_t index, total = 0, size
    cdef const Span* span
    for index in range(count):
        span = spans + index
        size = (
            (span.value_at - span.start)
            + _varint_size(pieces[index].length)
            + (pieces[index].length if pieces[index].length > 0 else 0)
            + (span.end - span.headers_at)
        )
        pieces[index].size = size
        if size > INT32_MAX:
            return -(index + 1)
        total += _varint_size(size) + size
    return total


cdef void _write_with_values(unsigned char* w, const unsigned char* p, const Span* spans, Py_ssize_t count,
                             const Piece* pieces) noexcept nogil:
    cdef Py_ssize_t index, head, tail
    cdef const Span* span
    cdef const Piece* piece
    for index in range(count):
        span = spans + index
        piece = pieces + index
        head = span.value_at - span.start
        tail = span.end - span.headers_at
        w = _put_varint(w, piece.size)
        memcpy(w, p + span.start, head)
        w += head
        w = _put_varint(w, piece.length)
        if piece.length > 0:
            memcpy(w, piece.data, piece.length)
            w += piece.length
        memcpy(w, p + span.headers_at, tail)
        w += tail


@cython.final
cdef class Records:
    """The records of one batch, column by column; nothing per record is built until asked."""

    cdef Batch batch
    cdef object owner  # the bytes or bytearray holding the records; nothing else holds a bytearray
    cdef const unsigned char* data
    cdef Span* spans
    cdef Py_ssize_t count

    def __init__(self, *args, **kwargs):
        raise errors.not_constructible("Records", "Batch.decode")

    def __dealloc__(self):
        free(self.spans)

    def __len__(self):
        return self.count

    def __repr__(self):
        return f"Records({self.count} of the batch at offset {self.batch.base_offset})"

    def keys(self):
        cdef list out = []
        cdef Span* span
        cdef Py_ssize_t index
        for index in range(self.count):
            span = self.spans + index
            if span.key_length < 0:
                out.append(None)
            else:
                out.append(PyBytes_FromStringAndSize(<char*>self.data + span.key, span.key_length))
        return out

    def values(self):
        cdef list out = []
        cdef Span* span
        cdef Py_ssize_t index
        for index in range(self.count):
            span = self.spans + index
            if span.value_length < 0:
                out.append(None)
            else:
                out.append(PyBytes_FromStringAndSize(<char*>self.data + span.value, span.value_length))
        return out

    def values_pass(self, check, bint allow_none):
        cdef object capsule = getattr(check, "native_check_value", None)
        cdef CheckValue check_value
        cdef const void* context
        cdef Span* span
        cdef Py_ssize_t index
        if capsule is None or not PyCapsule_IsValid(capsule, CHECK_CAPSULE):
            return check.passes_all(self.values(), allow_none)
        check_value = <CheckValue>PyCapsule_GetPointer(capsule, CHECK_CAPSULE)
        context = PyCapsule_GetContext(capsule)
        for index in range(self.count):
            span = self.spans + index
            if span.value_length < 0:
                if not allow_none:
                    return False
            elif not check_value(context, self.data + span.value, span.value_length):
                return False
        return True

    def headers(self):
        # Checked by decode: nothing here can run past its record.
        cdef list out = []
        cdef list pairs
        cdef Span* span
        cdef Py_ssize_t index, at
        cdef int32_t count, length
        cdef const unsigned char* p = self.data
        cdef object key
        for index in range(self.count):
            span = self.spans + index
            at = _varint32(p, span.headers_at, span.end, &count)
            pairs = []
            while count > 0:
                at = _varint32(p, at, span.end, &length)
                key = PyUnicode_DecodeUTF8(<char*>p + at, length, b"surrogateescape")
                at += length
                at = _varint32(p, at, span.end, &length)
                if length < 0:
                    pairs.append((key, None))
                else:
                    pairs.append((key, PyBytes_FromStringAndSize(<char*>p + at, length)))
                    at += length
                count -= 1
            out.append(pairs)
        return out

    def offset_deltas(self):
        cdef list out = []
        cdef Py_ssize_t index
        for index in range(self.count):
            out.append(self.spans[index].offset_delta)
        return out

    def timestamp_deltas(self):
        cdef list out = []
        cdef Py_ssize_t index
        for index in range(self.count):
            out.append(self.spans[index].timestamp_delta)
        return out

    def sizes(self):
        cdef list out = []
        cdef Py_ssize_t index
        for index in range(self.count):
            out.append(self.spans[index].end - self.spans[index].start)
        return out


cdef inline Py_ssize_t _fault(Fault* fault, int code, int field, int64_t a, int64_t b) noexcept nogil:
    fault.code = code
    fault.field = field
    fault.a = a
    fault.b = b
    return -1


cdef Py_ssize_t _parse_record(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, Span* span,
                              Fault* fault) noexcept nogil:
    """The end of the record at p[pos], its fields in span; or -1, with fault set."""
    cdef int32_t size, length, count
    cdef Py_ssize_t at, stop
    at = _varint32(p, pos, end, &size)
    if at < 0:
        return _fault(fault, -at, F_LENGTH, 0, 0)
    if size < 0:
        return _fault(fault, RECORD_NEGATIVE, F_LENGTH, size, 0)
    if size > end - at:
        return _fault(fault, RECORD_PAST_END, F_LENGTH, size, end - at)
    stop = at + size
    span.start = at
    span.end = stop
    if at >= stop:
        return _fault(fault, RECORD_TRUNCATED, F_ATTRIBUTES, size, 0)
    at += 1
    at = _varint64(p, at, stop, &span.timestamp_delta)
    if at < 0:
        return _fault(fault, -at, F_TIMESTAMP_DELTA, size, 0)
    at = _varint32(p, at, stop, &span.offset_delta)
    if at < 0:
        return _fault(fault, -at, F_OFFSET_DELTA, size, 0)
    at = _varint32(p, at, stop, &length)
    if at < 0:
        return _fault(fault, -at, F_KEY_LENGTH, size, 0)
    span.key = at
    if length >= 0:
        if length > stop - at:
            return _fault(fault, RECORD_TRUNCATED, F_KEY, size, 0)
        at += length
        span.key_length = length
    else:
        span.key_length = -1
    span.value_at = at
    at = _varint32(p, at, stop, &length)
    if at < 0:
        return _fault(fault, -at, F_VALUE_LENGTH, size, 0)
    span.value = at
    if length >= 0:
        if length > stop - at:
            return _fault(fault, RECORD_TRUNCATED, F_VALUE, size, 0)
        at += length
        span.value_length = length
    else:
        span.value_length = -1
    span.headers_at = at
    at = _varint32(p, at, stop, &count)
    if at < 0:
        return _fault(fault, -at, F_HEADER_COUNT, size, 0)
    if count < 0:
        return _fault(fault, RECORD_NEGATIVE, F_HEADER_COUNT, count, 0)
    # Each header takes at least 2 bytes, so a huge count ends at the record's end quickly.
    while count > 0:
        at = _varint32(p, at, stop, &length)
        if at < 0:
            return _fault(fault, -at, F_HEADER_KEY_LENGTH, size, 0)
        if length < 0:
            return _fault(fault, RECORD_NEGATIVE, F_HEADER_KEY_LENGTH, length, 0)
        if length > stop - at:
            return _fault(fault, RECORD_TRUNCATED, F_HEADER_KEY, size, 0)
        at += length
        at = _varint32(p, at, stop, &length)
        if at < 0:
            return _fault(fault, -at, F_HEADER_VALUE_LENGTH, size, 0)
        if length >= 0:
            if length > stop - at:
                return _fault(fault, RECORD_TRUNCATED, F_HEADER_VALUE, size, 0)
            at += length
        count -= 1
    if at != stop:
        return _fault(fault, RECORD_UNUSED_BYTES, F_LENGTH, size, at - span.start)
    return stop


cdef Py_ssize_t _parse_spans(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, int32_t count,
                             Span** spans, Py_ssize_t* parsed, Fault* fault) noexcept nogil:
    """Every record of p[pos:end] into *spans (malloc'ed here; the caller frees it, whatever the
    outcome), checked against count. How many; or -1 for a bad record (the one at *parsed, with
    fault set), -2 for records that do not number count (*parsed found, fault.a bytes left),
    -3 out of memory."""
    cdef Py_ssize_t index = 0
    cdef Py_ssize_t capacity = (end - pos) // MIN_RECORD + 1  # the count is not trusted for size
    cdef Span* grown
    if count < capacity:
        capacity = count if count > 0 else 1
    spans[0] = <Span*>malloc(capacity * sizeof(Span))
    if spans[0] == NULL:
        return -3
    while index < count and pos < end:
        if index == capacity:
            capacity *= 2
            grown = <Span*>realloc(spans[0], capacity * sizeof(Span))
            if grown == NULL:
                return -3
            spans[0] = grown
        pos = _parse_record(p, pos, end, spans[0] + index, fault)
        if pos < 0:
            parsed[0] = index
            return -1
        index += 1
    parsed[0] = index
    if index != count or pos < end:
        fault.a = end - pos
        return -2
    return index


cdef int _raise_parse_error(Batch batch, Py_ssize_t status, Py_ssize_t parsed, const Fault* fault) except -1:
    if status == -3:
        raise MemoryError()
    if status == -1:
        raise errors.record_fault(batch.base_offset, parsed, fault.code, fault.field, fault.a, fault.b)
    raise errors.record_count_mismatch(batch.base_offset, batch.count, parsed, fault.a)


cdef Records _parse(Batch batch, object owner, const char* data, Py_ssize_t pos, Py_ssize_t end):
    """Every record of data[pos:end], checked against the batch's count."""
    cdef Records records = Records.__new__(Records)
    cdef Py_ssize_t count, parsed = 0
    cdef Fault fault
    records.batch = batch
    records.owner = owner
    records.data = <const unsigned char*>data
    count = _parse_spans(records.data, pos, end, batch.count, &records.spans, &parsed, &fault)
    if count < 0:
        _raise_parse_error(batch, count, parsed, &fault)
    records.count = count
    return records


# Decompression, bounded by the limit


cdef object _decompress(int codec, object src, object limit, int64_t base_offset):
    try:
        if codec == CODEC_GZIP:
            return _gunzip(src, limit, base_offset)
        if codec == CODEC_SNAPPY:
            return _unsnappy(src, limit, base_offset)
        if codec == CODEC_LZ4:
            return _decompress_capped(cramjam.lz4.decompress_into, src, limit, base_offset, codec)
        return _decompress_capped(cramjam.zstd.decompress_into, src, limit, base_offset, codec)
    except (cramjam.DecompressionError, zlib.error) as err:
        raise errors.records_undecompressable(base_offset, codec, str(err)) from err


cdef inline Py_ssize_t _ceiling(object limit):
    return (limit if limit < SIZE_CEILING else SIZE_CEILING) + 1


cdef object _decompress_capped(object decompress_into, object src, object limit, int64_t base_offset, int codec):
    # The codecs cannot say the decompressed size up front, so guess, and grow the guess
    # (each try starts over) up to one byte past the limit: filling that proves a bomb.
    # The buffer is not zeroed: pages the codec does not reach are never touched.
    cdef Py_ssize_t ceiling = _ceiling(limit)
    cdef Py_ssize_t capacity = max(FIRST_CAPACITY, len(src) * CAPACITY_RATIO)
    cdef Py_ssize_t size
    cdef bytearray out
    if capacity > ceiling:
        capacity = ceiling
    while True:
        out = PyByteArray_FromStringAndSize(NULL, capacity)
        try:
            size = decompress_into(src, out)
        except cramjam.DecompressionError as err:
            if str(err) != _OUTPUT_FULL:
                raise
            if capacity == ceiling:
                raise errors.records_oversized(base_offset, codec, limit) from None
            capacity = capacity * CAPACITY_GROWTH if capacity <= ceiling // CAPACITY_GROWTH else ceiling
            continue
        if size > limit:
            raise errors.records_oversized(base_offset, codec, limit)
        # A copy of the exact size, rather than shrinking the guess in place: freeing the guess
        # whole lets the allocator keep such blocks for the next batch instead of unmapping them.
        return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(out), size)


cdef bytes _gunzip(object src, object limit, int64_t base_offset):
    cdef Py_ssize_t ceiling = _ceiling(limit)
    cdef Py_ssize_t total = 0
    cdef list parts = []
    cdef bytes part
    while True:
        member = zlib.decompressobj(_GZIP_WBITS)
        part = member.decompress(src, ceiling - total)
        total += len(part)
        if total > limit:
            raise errors.records_oversized(base_offset, CODEC_GZIP, limit)
        parts.append(part)
        if not member.eof:
            raise errors.records_undecompressable(base_offset, CODEC_GZIP, errors.gzip_truncated())
        src = member.unused_data
        if not src:
            return b"".join(parts)


cdef bytearray _unsnappy(object src, object limit, int64_t base_offset):
    cdef Py_ssize_t end = len(src), pos, at, size, total = 0
    cdef uint32_t length
    cdef bytearray out
    cdef list blocks = []
    cdef const unsigned char* p
    cdef Py_buffer view
    if src[:8] != _XERIAL_MAGIC:
        size = cramjam.snappy.decompress_raw_len(src)
        if size > limit:
            raise errors.records_oversized(base_offset, CODEC_SNAPPY, limit)
        out = PyByteArray_FromStringAndSize(NULL, size)
        cramjam.snappy.decompress_raw_into(src, out)
        return out
    if end < len(_XERIAL_HEADER):
        raise errors.records_undecompressable(base_offset, CODEC_SNAPPY, errors.xerial_truncated(end))
    # Every block states its decompressed size: add them up before decompressing any.
    pos = len(_XERIAL_HEADER)
    PyObject_GetBuffer(src, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*>view.buf
        while pos < end:
            if end - pos < 4:
                raise errors.records_undecompressable(base_offset, CODEC_SNAPPY, errors.xerial_truncated(end - pos))
            length = _u32(p + pos)
            pos += 4
            if length > end - pos:
                raise errors.records_undecompressable(
                    base_offset, CODEC_SNAPPY, errors.xerial_block_past_end(length, end - pos)
                )
            block = src[pos : pos + length]
            size = cramjam.snappy.decompress_raw_len(block)
            total += size
            if total > limit:
                raise errors.records_oversized(base_offset, CODEC_SNAPPY, limit)
            blocks.append((block, size))
            pos += length
    finally:
        PyBuffer_Release(&view)
    out = PyByteArray_FromStringAndSize(NULL, total)
    with memoryview(out) as target:
        at = 0
        for block, size in blocks:
            cramjam.snappy.decompress_raw_into(block, target[at : at + size])
            at += size
    return out


# Writing


cdef object _compress(int codec, bytes data, bint xerial):
    cdef Py_ssize_t pos, size = PyBytes_GET_SIZE(data)
    cdef bytearray out
    if codec == CODEC_GZIP:
        gzip = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, _GZIP_WBITS)
        return gzip.compress(data) + gzip.flush()
    if codec == CODEC_SNAPPY:
        if not xerial:
            return cramjam.snappy.compress_raw(data)
        out = bytearray(_XERIAL_HEADER)
        with memoryview(data) as view:
            for pos in range(0, size, XERIAL_BLOCK):
                block = cramjam.snappy.compress_raw(view[pos : pos + XERIAL_BLOCK])
                out += _U32.pack(len(block))
                out += block
        return out
    if codec == CODEC_LZ4:
        out = bytearray(_LZ4_FRAME_HEADER)
        with memoryview(data) as view:
            for pos in range(0, size, LZ4_BLOCK):
                chunk = view[pos : pos + LZ4_BLOCK]
                block = cramjam.lz4.compress_block(chunk, store_size=False)
                if len(block) < len(chunk):
                    out += _U32LE.pack(len(block))
                    out += block
                else:  # incompressible: stored as is, flagged in the block size
                    out += _U32LE.pack(len(chunk) | LZ4_UNCOMPRESSED)
                    out += chunk
        out += b"\x00\x00\x00\x00"  # end mark
        return out
    return cramjam.zstd.compress(data, level=_ZSTD_LEVEL)


def read_batches(data, max_uncompressed_bytes, check_crc=True):
    """(the complete batches in data, the end of the last one). A partial batch at the end
    is not an error: it is left out, and starts where the returned end is."""
    cdef object limit = errors.check_limit(max_uncompressed_bytes)
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef const unsigned char* q
    cdef Py_ssize_t pos = 0, end, size
    cdef int32_t length
    cdef int magic
    cdef bytes raw
    cdef Batch batch
    cdef list batches = []
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*>view.buf
        end = view.len
        while end - pos >= PREFIX:
            length = _i32(p + pos + LENGTH_AT)
            if length < MIN_LENGTH:
                raise errors.batch_length_too_small(pos, length, MIN_LENGTH)
            size = PREFIX + <Py_ssize_t>length
            if end - pos < size:
                break
            magic = <signed char>p[pos + MAGIC_AT]
            if magic != 2:
                raise errors.batch_magic(pos, magic)
            if size > limit:
                raise errors.batch_oversized(pos, size, limit)
            raw = PyBytes_FromStringAndSize(<char*>p + pos, size)
            q = <const unsigned char*>PyBytes_AS_STRING(raw)
            batch = Batch.__new__(Batch)
            batch.raw = raw
            batch.base_offset = _i64(q)
            batch.partition_leader_epoch = _i32(q + 12)
            batch.magic = magic
            batch.crc = _u32(q + CRC_AT)
            batch.attributes = _i16(q + ATTRIBUTES_AT)
            batch.last_offset_delta = _i32(q + 23)
            batch.base_timestamp = _i64(q + 27)
            batch.max_timestamp = _i64(q + 35)
            batch.producer_id = _i64(q + 43)
            batch.producer_epoch = _i16(q + 51)
            batch.base_sequence = _i32(q + 53)
            batch.count = _i32(q + 57)
            batch.unchecked_at = pos
            if check_crc or batch.attributes & 7 > CODEC_ZSTD:  # a bad CRC is the likelier story
                batch._check_crc()
            if batch.attributes & 7 > CODEC_ZSTD:
                raise errors.batch_unknown_codec(pos, batch.attributes & 7)
            batches.append(batch)
            pos += size
        return batches, pos
    finally:
        PyBuffer_Release(&view)


def encode_batch(
    keys,
    values,
    headers,
    timestamps,
    *,
    compression=NONE,
    producer_id=-1,
    producer_epoch=-1,
    base_sequence=-1,
    base_offset=0,
    partition_leader_epoch=-1,
    attributes_extra=0,
):
    """A new batch of these records: offset deltas 0..n-1, create-time timestamps as deltas
    from the first one."""
    cdef int codec = errors.check_codec(compression)
    cdef int64_t producer = errors.check_int("producer_id", producer_id, 64)
    cdef int epoch = errors.check_int("producer_epoch", producer_epoch, 16)
    cdef int32_t sequence = errors.check_int("base_sequence", base_sequence, 32)
    cdef int64_t offset = errors.check_int("base_offset", base_offset, 64)
    cdef int32_t leader_epoch = errors.check_int("partition_leader_epoch", partition_leader_epoch, 32)
    cdef int extra = errors.check_attributes_extra(attributes_extra)
    cdef Py_ssize_t count = len(keys), index, total = 0, size
    cdef list stamps, blobs = [], all_pairs = []
    cdef int64_t* deltas = NULL
    cdef Py_ssize_t* sizes = NULL
    cdef unsigned char header[HEADER_SIZE]
    cdef unsigned char* w
    cdef bytes out, body, name
    cdef object first, delta, key, value, pairs, blob
    if not len(values) == len(headers) == len(timestamps) == count:
        raise errors.columns_mismatch(count, len(values), len(headers), len(timestamps))
    stamps = [errors.check_int(f"timestamps[{position}]", stamp, 64) for position, stamp in enumerate(timestamps)]
    first = stamps[0] if count else -1
    deltas = <int64_t*>malloc((count if count > 0 else 1) * sizeof(int64_t))
    sizes = <Py_ssize_t*>malloc((count if count > 0 else 1) * sizeof(Py_ssize_t))
    try:
        if deltas == NULL or sizes == NULL:
            raise MemoryError()
        for index in range(count):
            key = _bytes_or_none("keys", index, keys[index])
            value = _bytes_or_none("values", index, values[index])
            pairs = _header_pairs(index, headers[index])
            delta = stamps[index] - first
            if not _INT64_MIN <= delta <= _INT64_MAX:
                raise errors.timestamp_delta_out_of_range(index, delta)
            deltas[index] = delta
            size = 1 + _varint_size(deltas[index]) + _varint_size(index) + _blob_size(key) + _blob_size(value)
            size += _varint_size(len(pairs))
            for name, blob in pairs:
                size += _blob_size(name) + _blob_size(blob)
            if size > INT32_MAX:
                raise errors.record_too_large(index, size)
            sizes[index] = size
            total += _varint_size(size) + size
            blobs.append(key)
            blobs.append(value)
            all_pairs.append(pairs)
        _put_u64(header, offset)
        _put_u32(header + LENGTH_AT, 0)
        _put_u32(header + 12, leader_epoch)
        header[MAGIC_AT] = 2
        _put_u32(header + CRC_AT, 0)
        _put_u16(header + ATTRIBUTES_AT, codec | extra)
        _put_u32(header + 23, count - 1)
        _put_u64(header + 27, <int64_t>first)
        _put_u64(header + 35, <int64_t>(max(stamps) if count else -1))
        _put_u64(header + 43, producer)
        _put_u16(header + 51, epoch)
        _put_u32(header + 53, sequence)
        _put_u32(header + 57, count)
        if codec == CODEC_NONE:
            out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + total)
            w = <unsigned char*>PyBytes_AS_STRING(out)
            memcpy(w, header, HEADER_SIZE)
            _write_new_records(w + HEADER_SIZE, count, deltas, sizes, blobs, all_pairs)
            _seal(out)
            return out
        body = PyBytes_FromStringAndSize(NULL, total)
        _write_new_records(<unsigned char*>PyBytes_AS_STRING(body), count, deltas, sizes, blobs, all_pairs)
    finally:
        free(deltas)
        free(sizes)
    return _sealed(<char*>header, _compress(codec, body, True))


cdef void _write_new_records(unsigned char* w, Py_ssize_t count, int64_t* deltas, Py_ssize_t* sizes,
                             list blobs, list all_pairs):
    cdef Py_ssize_t index
    cdef list pairs
    for index in range(count):
        w = _put_varint(w, sizes[index])
        w[0] = 0  # attributes
        w = _put_varint(w + 1, deltas[index])
        w = _put_varint(w, index)
        w = _put_blob(w, blobs[2 * index])
        w = _put_blob(w, blobs[2 * index + 1])
        pairs = all_pairs[index]
        w = _put_varint(w, len(pairs))
        for name, blob in pairs:
            w = _put_blob(w, name)
            w = _put_blob(w, blob)


cdef list _header_pairs(Py_ssize_t index, object pairs):
    cdef list out = []
    if pairs is None:
        return out
    for position, pair in enumerate(pairs):
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise errors.header_invalid(index, position, pair) from None
        if type(name) is str:
            name = name.encode("utf-8", "surrogateescape")
        elif type(name) is not bytes:
            raise errors.header_invalid(index, position, pair)
        if value is not None and type(value) is not bytes:
            try:
                value = _bytes_or_none("", 0, value)
            except TypeError:
                raise errors.header_invalid(index, position, pair) from None
        out.append((name, value))
    return out
