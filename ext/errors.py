"""The one error of the frame scanners, every message it carries, and the argument checks.

Both twins (frames.pyx and frames_py.py) build their errors here, so the same input gives
the same message whichever twin read it. Nothing here runs on the hot path unless input is bad.
"""
import operator


class FrameError(ValueError):
    """Malformed or oversized Kafka wire input; the message names what is wrong."""


def negative_size(size: int) -> FrameError:
    return FrameError(f"negative frame size {size}")


def oversized(size: int, limit: int) -> FrameError:
    return FrameError(f"frame size {size} exceeds the limit of {limit} bytes")


def request_header_truncated(frame_size: int) -> FrameError:
    return FrameError(f"request header truncated: frame of {frame_size} bytes")


def response_header_truncated(frame_size: int) -> FrameError:
    return FrameError(f"response header truncated: frame of {frame_size} bytes")


def client_id_invalid_length(length: int) -> FrameError:
    return FrameError(f"request header invalid: client_id length {length}")


def client_id_truncated(length: int, frame_size: int) -> FrameError:
    return FrameError(
        f"request header truncated: client_id of {length} bytes runs past the end of "
        f"a frame of {frame_size} bytes"
    )


def client_id_not_utf8(err: UnicodeDecodeError) -> FrameError:
    return FrameError(f"request header invalid: client_id is not valid UTF-8 ({err.reason} at byte {err.start})")


def tagged_fields_truncated(frame_size: int) -> FrameError:
    return FrameError(f"request header truncated: tagged fields run past the end of a frame of {frame_size} bytes")


def unknown_api_key(api_key: int) -> FrameError:
    return FrameError(f"request header of unknown api_key {api_key}: its header version is not known")


def produce_truncated(api_version: int) -> FrameError:
    return FrameError(f"Produce v{api_version} body truncated before acks")


def transactional_id_invalid_length(api_version: int, length: int) -> FrameError:
    return FrameError(f"Produce v{api_version} body invalid: transactional_id length {length}")


# Varint faults, as codes so the native twin can report them without raising mid-loop.
VARINT_TRUNCATED = -1
VARINT_TOO_LONG = -2
VARINT_TOO_LARGE = -3


def _varint_fault(code: int) -> str:
    return "is longer than 5 bytes" if code == VARINT_TOO_LONG else "exceeds 32 bits"


def varint_invalid(code: int, part: str, field: str) -> FrameError:
    """An over-long varint inside a field (`part` is e.g. "request header" or "Produce v9 body")."""
    return FrameError(f"{part} invalid: {field} varint {_varint_fault(code)}")


def varint_at(code: int, offset: int) -> FrameError:
    """A fault found by read_uvarint, which knows only the buffer offset."""
    if code == VARINT_TRUNCATED:
        return FrameError(f"varint at offset {offset} runs past the end of the buffer")
    return FrameError(f"varint at offset {offset} {_varint_fault(code)}")


def uvarint_out_of_range(value: int) -> FrameError:
    return FrameError(f"value {value} does not fit an unsigned 32-bit varint")


# Configuration mistakes are caught when a scanner is built (ValueError, not FrameError:
# they are the gateway's fault, not the peer's).


def check_flexible_from(flexible_from) -> tuple[int, ...]:
    table = tuple(operator.index(first) for first in flexible_from)
    if not table:
        raise ValueError("flexible_from is empty: it must at least cover api_key 0 (Produce)")
    for api_key, first in enumerate(table):
        if not -1 <= first <= 0x7FFF:
            raise ValueError(
                f"flexible_from[{api_key}] is {first}: give the first flexible version (0-32767), or -1 for never"
            )
    return table


def check_max_frame_bytes(max_frame_bytes, minimum: int) -> int:
    limit = operator.index(max_frame_bytes)
    if limit < minimum:
        raise ValueError(f"max_frame_bytes is {limit}: a frame needs at least {minimum} bytes")
    return limit


def check_range(start: int, end: int, length: int) -> None:
    if not 0 <= start <= end <= length:
        raise ValueError(f"range [{start}, {end}) lies outside a buffer of {length} bytes")


# Record batches (records.pyx and records_py.py).


class RecordError(ValueError):
    """A record batch that cannot be read or written: CRC mismatch, truncated, unsupported magic,
    unknown codec, oversized when decompressed, record count mismatch."""


CODEC_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")


def batch_length_too_small(position: int, length: int, minimum: int) -> RecordError:
    return RecordError(
        f"record batch at byte {position}: batch length {length} is too small for the {minimum}-byte header"
    )


def batch_magic(position: int, magic: int) -> RecordError:
    return RecordError(f"record batch at byte {position}: magic {magic} is not supported, only magic 2")


def batch_oversized(position: int, size: int, limit: int) -> RecordError:
    return RecordError(f"record batch at byte {position}: its {size} bytes exceed the limit of {limit} bytes")


def batch_crc_mismatch(position: int, stored: int, computed: int) -> RecordError:
    return RecordError(
        f"record batch at byte {position}: CRC-32C mismatch: the batch says {stored:#010x}, "
        f"its bytes give {computed:#010x}"
    )


def batch_unknown_codec(position: int, codec: int) -> RecordError:
    return RecordError(f"record batch at byte {position}: unknown compression codec {codec}")


def records_oversized(base_offset: int, codec: int, limit: int) -> RecordError:
    """Uncompressed records, or a codec's output, beyond max_uncompressed_bytes (a decompression bomb)."""
    if codec == 0:
        return RecordError(f"record batch at offset {base_offset}: its records exceed the limit of {limit} bytes")
    return RecordError(
        f"record batch at offset {base_offset}: its {CODEC_NAMES[codec]} records decompress to more than "
        f"the limit of {limit} bytes"
    )


def records_undecompressable(base_offset: int, codec: int, detail: str) -> RecordError:
    return RecordError(
        f"record batch at offset {base_offset}: its {CODEC_NAMES[codec]} records cannot be decompressed: {detail}"
    )


def xerial_truncated(remaining: int) -> str:
    """Detail for records_undecompressable: a snappy (xerial) header or block cut short."""
    return f"xerial snappy stream truncated ({remaining} bytes left where a header or block length was due)"


def xerial_block_past_end(length: int, remaining: int) -> str:
    return f"xerial snappy block of {length} bytes runs past the end ({remaining} bytes left)"


def record_count_mismatch(base_offset: int, count: int, found: int, extra: int) -> RecordError:
    """The records do not number `count`: they end after `found`, or `extra` bytes follow the last."""
    where = f"record batch at offset {base_offset}"
    if count < 0:
        return RecordError(f"{where}: the header declares a negative record count {count}")
    if found < count:
        return RecordError(f"{where}: the header declares {count} records but the records end after {found}")
    return RecordError(f"{where}: the header declares {count} records but {extra} bytes follow the last one")


# Record faults, as codes so the native twin can report them from its C loop.
RECORD_FIELDS = (
    "length",
    "attributes",
    "timestamp delta",
    "offset delta",
    "key length",
    "key",
    "value length",
    "value",
    "header count",
    "header key length",
    "header key",
    "header value length",
    "header value",
)
FIELD_TIMESTAMP_DELTA = 2  # the one varlong; every other varint is 32 bits
RECORD_TRUNCATED = 1  # the field runs past the record (a: the record's size; for the length: past the records)
RECORD_PAST_END = 2  # the record runs past the records (a: its size, b: bytes left)
RECORD_VARINT_TOO_LONG = 3
RECORD_VARINT_TOO_LARGE = 4
RECORD_NEGATIVE = 5  # a: the value
RECORD_UNUSED_BYTES = 6  # the fields end early (a: the record's size, b: bytes they used)


def record_fault(base_offset: int, index: int, code: int, field: int, a: int = 0, b: int = 0) -> RecordError:
    where = f"record batch at offset {base_offset}: record {index}"
    name = RECORD_FIELDS[field]
    if code == RECORD_TRUNCATED:
        if field == 0:
            return RecordError(f"{where}: its length varint runs past the end of the records")
        return RecordError(f"{where}: field '{name}' runs past the end of the record ({a} bytes)")
    if code == RECORD_PAST_END:
        return RecordError(f"{where} of {a} bytes runs past the end of the records ({b} bytes left)")
    if code == RECORD_VARINT_TOO_LONG:
        longest = 10 if field == FIELD_TIMESTAMP_DELTA else 5
        return RecordError(f"{where}: field '{name}' is a varint longer than {longest} bytes")
    if code == RECORD_VARINT_TOO_LARGE:
        bits = 64 if field == FIELD_TIMESTAMP_DELTA else 32
        return RecordError(f"{where}: field '{name}' is a varint over {bits} bits")
    if code == RECORD_NEGATIVE:
        return RecordError(f"{where}: field '{name}' is negative ({a})")
    if code == RECORD_UNUSED_BYTES:
        return RecordError(f"{where}: its fields end after {b} of its {a} bytes")
    raise AssertionError(f"unknown record fault {code}")


# Caller mistakes (ValueError or TypeError, not RecordError: they are the gateway's fault, not the peer's).


def check_limit(max_uncompressed_bytes) -> int:
    limit = operator.index(max_uncompressed_bytes)
    if limit < 0:
        raise ValueError(f"max_uncompressed_bytes is {limit}: it must be 0 or more")
    return limit


def not_constructible(name: str, maker: str) -> TypeError:
    return TypeError(f"{name} objects are made by {maker}, not directly")


def records_of_another_batch() -> ValueError:
    return ValueError("these records were decoded from another batch")


def values_count_mismatch(values: int, records: int) -> ValueError:
    return ValueError(f"{values} values given for {records} records")


def columns_mismatch(keys: int, values: int, headers: int, timestamps: int) -> ValueError:
    return ValueError(
        f"keys, values, headers and timestamps must be as long as each other, not {keys}, {values}, "
        f"{headers} and {timestamps}"
    )


def not_bytes(column: str, index: int, value) -> TypeError:
    return TypeError(f"{column}[{index}] is {type(value).__name__}, not bytes or None")


def header_invalid(index: int, position: int, header) -> TypeError:
    return TypeError(
        f"headers[{index}][{position}] is {header!r}: a header is a (str key, bytes or None value) pair"
    )


def check_codec(compression) -> int:
    codec = operator.index(compression)
    if not 0 <= codec < len(CODEC_NAMES):
        raise ValueError(f"compression {codec} is not a codec: use NONE, GZIP, SNAPPY, LZ4 or ZSTD (0-4)")
    return codec


def check_int(name: str, value, bits: int) -> int:
    number = operator.index(value)
    if not -(1 << (bits - 1)) <= number < 1 << (bits - 1):
        raise ValueError(f"{name} {number} does not fit a signed {bits}-bit integer")
    return number


def check_attributes_extra(attributes_extra) -> int:
    extra = check_int("attributes_extra", attributes_extra, 16)
    if extra & 7:
        raise ValueError(f"attributes_extra {extra:#x} sets codec bits: give the codec as compression")
    return extra


def timestamp_delta_out_of_range(index: int, delta: int) -> ValueError:
    return ValueError(f"timestamps[{index}] is {delta} ms from the first: the delta does not fit 64 bits")


def gzip_truncated() -> str:
    """Detail for records_undecompressable."""
    return "the gzip stream ends before its end"


def record_too_large(index: int, size: int) -> ValueError:
    return ValueError(f"record {index} would take {size} bytes: a record holds at most 2147483647")
