# Types of brokerguard._native.records; records_py.py is its pure-Python twin with the same API.
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol, TypeAlias

from typing_extensions import Buffer

from brokerguard._native.errors import RecordError as RecordError

# A record's headers: (key, value) pairs. Keys are decoded from UTF-8 with "surrogateescape",
# so any bytes read come back unchanged when written.
Headers: TypeAlias = list[tuple[str, bytes | None]]

__all__: Final[list[str]]

# Codecs: the low 3 bits of the batch attributes.
NONE: Final = 0
GZIP: Final = 1
SNAPPY: Final = 2
LZ4: Final = 3
ZSTD: Final = 4

class _ValueMasker(Protocol):
    def mask(self, value: bytes) -> object:
        """The masked value (the same object if unchanged) as bytes; anything else: not masked here."""

class Batch:
    """One record batch as read_batches found it. Not built directly."""

    @property
    def base_offset(self) -> int: ...
    @property
    def partition_leader_epoch(self) -> int: ...
    @property
    def magic(self) -> int: ...
    @property
    def crc(self) -> int: ...
    @property
    def attributes(self) -> int: ...
    @property
    def last_offset_delta(self) -> int: ...
    @property
    def base_timestamp(self) -> int: ...
    @property
    def max_timestamp(self) -> int: ...
    @property
    def producer_id(self) -> int: ...
    @property
    def producer_epoch(self) -> int: ...
    @property
    def base_sequence(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def compression(self) -> int:
        """attributes & 7"""
    @property
    def timestamp_type(self) -> int:
        """(attributes >> 3) & 1: 0 create time, 1 log-append time"""
    @property
    def is_transactional(self) -> bool: ...
    @property
    def is_control(self) -> bool: ...
    @property
    def raw(self) -> bytes:
        """This batch's own bytes exactly as read, the 12-byte offset and length prefix included."""
    def decode(self, max_uncompressed_bytes: int) -> Records:
        """Decompress (never more than about max_uncompressed_bytes) and parse every record.

        Raises RecordError if the records exceed the limit, do not decompress or parse, a record
        runs past the batch, or their number differs from count.
        """
    def with_values(self, records: Records, values: Sequence[Buffer | None]) -> bytes:
        """This batch re-encoded with new record values, everything else kept byte for byte: the
        header fields, and each record's attributes, timestamp and offset deltas, key and headers.
        Same codec (snappy: same framing as read); new batch length and CRC.

        records must come from this batch's decode; values holds one entry per record.
        """
    def with_masked_values(self, records: Records, masker: _ValueMasker) -> bytes | None:
        """This batch with every non-null value replaced by masker.mask(value), as with_values
        makes it; the raw bytes themselves when no value changed. None when the masker leaves a
        value to its caller (answers anything but bytes): mask value by value then.

        A compiled masker (jsonmask.FieldMasker) is called on each value in place, with no
        Python object per record; any other masker through its mask method.
        """
    def masked(self, masker: _ValueMasker, max_uncompressed_bytes: int) -> bytes | None:
        """with_masked_values(decode(max_uncompressed_bytes), masker), raising what they raise.

        An uncompressed batch and a masker that calls no Python (FieldMasker without `hash`
        rules) are read, masked, written and sealed with the GIL released (but to allocate the
        new batch), so other threads mask other batches meanwhile.
        """

class Records:
    """The records of one batch, column by column; per-record objects are made only when a
    column is asked for. Not built directly."""

    def __len__(self) -> int: ...
    def keys(self) -> list[bytes | None]: ...
    def values(self) -> list[bytes | None]: ...
    def values_pass(self, check: Any, allow_none: bool) -> bool:
        """check.passes_all(self.values(), allow_none), but where check has a native_check_value
        capsule each value is checked where it lies, with no bytes object made."""
    def headers(self) -> list[Headers]: ...
    def offset_deltas(self) -> list[int]: ...
    def timestamp_deltas(self) -> list[int]: ...
    def sizes(self) -> list[int]:
        """Each record's encoded size: the value of its length varint."""

def read_batches(data: Buffer, max_uncompressed_bytes: int, check_crc: bool = True) -> tuple[list[Batch], int]:
    """(the complete batches in data, the end of the last one). A partial batch at the end is not
    an error: it is left out, and starts at the returned end.

    Raises RecordError for magic other than 2, a batch length too small for the header, a batch
    larger than max_uncompressed_bytes, a CRC-32C mismatch, or an unknown codec. With check_crc
    false, a batch's CRC is checked when its records are first read (decode, masked), with the
    same error: for batches whose records are read on other threads, each checks its own.
    """

def encode_batch(
    keys: Sequence[Buffer | None],
    values: Sequence[Buffer | None],
    headers: Sequence[Iterable[tuple[str | bytes, Buffer | None]] | None],
    timestamps: Sequence[int],
    *,
    compression: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    attributes_extra: int = 0,
) -> bytes:
    """A new batch of these records: offset deltas 0..n-1, base timestamp the first timestamp,
    max timestamp the largest, create-time timestamps. attributes_extra is OR-ed into the
    attributes (e.g. 0x10 transactional) and may not touch the codec bits. Snappy is written
    with xerial framing, LZ4 as the Java client writes it."""
