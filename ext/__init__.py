"""Hot paths of the data plane: compiled twins, with pure-Python references beside them.

The choice is made once, here: the compiled modules, unless BROKERGUARD_NO_EXTENSIONS=1
asks for the pure-Python twins (debugging, or a platform without a compiler).
"""
import os

from brokerguard._native.errors import FrameError, RecordError

if os.environ.get("BROKERGUARD_NO_EXTENSIONS") == "1":
    from brokerguard._native import frames_py as _frames
    from brokerguard._native import jsoncheck_py as _jsoncheck
    from brokerguard._native import jsonmask_py as _jsonmask
    from brokerguard._native import produce_py as _produce
    from brokerguard._native import records_py as _records

    IMPLEMENTATION = "python"
else:
    try:
        from brokerguard._native import frames as _frames
        from brokerguard._native import jsoncheck as _jsoncheck
        from brokerguard._native import jsonmask as _jsonmask
        from brokerguard._native import produce as _produce
        from brokerguard._native import records as _records
    except ImportError as err:
        # A silent fallback would hide a slow gateway; say how to fix it instead.
        raise ImportError(
            f"a Cython extension is not compiled ({err}): run `pip install -e .` to build them, "
            "or set BROKERGUARD_NO_EXTENSIONS=1 to use the pure-Python twins"
        ) from err

    IMPLEMENTATION = "cython"

RequestScanner = _frames.RequestScanner
ResponseScanner = _frames.ResponseScanner
parse_request_header = _frames.parse_request_header
read_uvarint = _frames.read_uvarint
write_uvarint = _frames.write_uvarint
unfilled_bytearray = _frames.unfilled_bytearray

NONE = _records.NONE
GZIP = _records.GZIP
SNAPPY = _records.SNAPPY
LZ4 = _records.LZ4
ZSTD = _records.ZSTD
Batch = _records.Batch
Records = _records.Records
read_batches = _records.read_batches
encode_batch = _records.encode_batch

PRODUCE_LAST_VERSION = _produce.LAST_VERSION
read_produce_request = _produce.read_request
produce_response_clean = _produce.response_clean

SchemaCheck = _jsoncheck.SchemaCheck
compile_check = _jsoncheck.compile_check

FALLBACK = _jsonmask.FALLBACK
FieldMasker = _jsonmask.FieldMasker
Pseudonyms = _jsonmask.Pseudonyms  # a hash_function FieldMasker computes without Python
# FieldMasker's strategies
MASK_REDACT, MASK_NULL, MASK_DROP = _jsonmask.REDACT, _jsonmask.NULL, _jsonmask.DROP
MASK_KEEP_LAST, MASK_KEEP_FIRST, MASK_HASH = _jsonmask.KEEP_LAST, _jsonmask.KEEP_FIRST, _jsonmask.HASH

__all__ = [
    "FALLBACK",
    "MASK_DROP",
    "MASK_HASH",
    "MASK_KEEP_FIRST",
    "MASK_KEEP_LAST",
    "MASK_NULL",
    "MASK_REDACT",
    "GZIP",
    "IMPLEMENTATION",
    "LZ4",
    "NONE",
    "PRODUCE_LAST_VERSION",
    "SNAPPY",
    "ZSTD",
    "Batch",
    "FieldMasker",
    "FrameError",
    "Pseudonyms",
    "RecordError",
    "Records",
    "RequestScanner",
    "ResponseScanner",
    "SchemaCheck",
    "compile_check",
    "encode_batch",
    "parse_request_header",
    "produce_response_clean",
    "read_batches",
    "read_produce_request",
    "read_uvarint",
    "unfilled_bytearray",
    "write_uvarint",
]
