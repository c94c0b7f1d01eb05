"""Schema-driven codec for every Kafka request and response body, and for the headers.

Wire layout as the protocol guide (kafka.apache.org/protocol) defines it: big-endian fixed-width
ints; strings/bytes/arrays with int16/int32 lengths (-1 = null), or in flexible versions
(KIP-482) with an unsigned varint of length+1 (0 = null) and a tagged-field section closing every
struct: varint count, then per field varint tag, varint size, value. Nullable structs (KIP-893)
carry a marker byte before them: -1/1, or 0/1 when the struct is itself a tagged field.

Values are plain dicts keyed by snake_case field names (`ThrottleTimeMs` -> `throttle_time_ms`),
lists, ints, floats, bools, str, bytes and None. uuid is 16-byte `bytes`; bytes and records fields
decode to `bytes`. A field absent from a version is absent from the decoded dict, and so is a
tagged field the sender left out (absent means the spec default); encoding writes a tagged field
exactly when its key is present. Tags the schema does not know stay in `"_unknown_tags":
{tag: bytes}` and are written back in tag order, so decode -> encode is byte-identical.
Encoding fills missing fields with the spec default and ignores keys that belong to the struct
in other versions; keys no version knows are an error.

Each (API, version, direction) is compiled once into closures: consecutive fixed-width fields
become one struct.Struct call; everything else is a small reader/writer per field.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import schema as _schema
from .schema import MISSING, ApiSpec, FieldSpec, MessageSpec

SCHEMA = _schema.load()
KAFKA_VERSION: str = SCHEMA.kafka_version
API_KEYS: dict[int, ApiSpec] = SCHEMA.apis
API_BY_NAME: dict[str, ApiSpec] = {api.name: api for api in API_KEYS.values()}

_API_VERSIONS_KEY = 18  # its responses always use header v0, so old clients can read them
_CONTROLLED_SHUTDOWN_KEY = 7  # its v0 used request header v0, in Kafka versions that kept it
UNKNOWN_TAGS = "_unknown_tags"

_FIXED = {"bool": "?", "int8": "b", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
          "int64": "q", "float64": "d", "uuid": "16s"}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_HEADER_KEYS = struct.Struct(">hh")
_UVARINT = [bytes([i]) for i in range(0x80)]
_BOOLS = (True, False)


class DecodeError(ValueError):
    """Bytes that are not the message they should be; the text says which message and where."""

    def __init__(self, message: str, path: str = "$", offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset


class EncodeError(ValueError):
    """A value that cannot be written as the message; the text says which message and where."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.path = path


class _Fail(Exception):
    """Raised inside the compiled codec; each struct and array adds its step of the path."""

    __slots__ = ("reason", "offset", "path")

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        self.path: list[str] = []

    def where(self) -> str:
        return "$" + "".join(s if s[0] == "[" else "." + s for s in reversed(self.path))


def _short(data: bytes, pos: int, need: int) -> _Fail:
    return _Fail(f"needs {need} bytes at offset {pos}, {max(len(data) - pos, 0)} left", pos)


# ---------------------------------------------------------------------------------------------
# decoding: readers are read(data, pos) -> (value, pos);
# struct steps are step(data, pos, out) -> pos, storing into the dict `out`


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    start = pos
    result = shift = 0
    while True:
        try:
            b = data[pos]
        except IndexError:
            raise _Fail(f"varint at offset {start} is cut off at offset {pos}", start) from None
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 35:
            raise _Fail(f"varint at offset {start} is longer than 5 bytes", start)


def _read_length(data: bytes, pos: int, compact: bool, wide: bool,
                 nullable: bool) -> tuple[int, int]:
    """A length prefix; -1 means null. Compact: varint length+1. Else int16 (strings) or int32."""
    start = pos
    if compact:
        try:
            n = data[pos]
        except IndexError:
            raise _short(data, pos, 1) from None
        if n < 0x80:
            pos += 1
        else:
            n, pos = _read_uvarint(data, pos)
        n -= 1
    else:
        fmt = _I32 if wide else _I16
        try:
            (n,) = fmt.unpack_from(data, pos)
        except struct.error:
            raise _short(data, pos, fmt.size) from None
        pos += fmt.size
    if n < 0:
        if n != -1:
            raise _Fail(f"negative length {n} at offset {start}", start)
        if not nullable:
            raise _Fail(f"null at offset {start}, but the field is not nullable here", start)
    return n, pos


def _string_reader(nullable: bool, compact: bool) -> Callable:
    def read(data, pos):
        start = pos
        n, pos = _read_length(data, pos, compact, False, nullable)
        if n < 0:
            return None, pos
        end = pos + n
        if end > len(data):
            raise _short(data, pos, n)
        try:
            return data[pos:end].decode(), end
        except UnicodeDecodeError as err:
            bad = pos + err.start
            raise _Fail(f"string at offset {start} is not UTF-8 (byte {bad})", start) from None
    return read


def _bytes_reader(nullable: bool, compact: bool) -> Callable:
    def read(data, pos):
        n, pos = _read_length(data, pos, compact, True, nullable)
        if n < 0:
            return None, pos
        end = pos + n
        if end > len(data):
            raise _short(data, pos, n)
        return data[pos:end], end
    return read


def _fixed_reader(kind: str) -> Callable:
    s = struct.Struct(">" + _FIXED[kind])
    unpack, size = s.unpack_from, s.size

    def read(data, pos):
        try:
            return unpack(data, pos)[0], pos + size
        except struct.error:
            raise _short(data, pos, size) from None
    return read


def _array_reader(element: Callable | None, code: str | None, min_size: int,
                  nullable: bool, compact: bool) -> Callable:
    """With `code`, elements are numbers unpacked in one call; else `element` reads each."""
    min_size = max(min_size, 1)  # no element is empty on the wire, which bounds a hostile count

    def read(data, pos):
        start = pos
        n, pos = _read_length(data, pos, compact, True, nullable)
        if n < 0:
            return None, pos
        if n * min_size > len(data) - pos:
            raise _Fail(f"array of {n} elements at offset {start} cannot fit in the "
                        f"{len(data) - pos} bytes left", start)
        if code is not None:
            return list(struct.unpack_from(f">{n}{code}", data, pos)), pos + n * min_size
        out = []
        append = out.append
        try:
            for i in range(n):
                value, pos = element(data, pos)
                append(value)
        except _Fail as fail:
            fail.path.append(f"[{i}]")
            raise
        return out, pos
    return read


def _nullable_struct_reader(inner: Callable, tagged: bool) -> Callable:
    present, absent = 1, (0 if tagged else 0xFF)

    def read(data, pos):
        try:
            marker = data[pos]
        except IndexError:
            raise _short(data, pos, 1) from None
        if marker == present:
            return inner(data, pos + 1)
        if marker == absent:
            return None, pos + 1
        raise _Fail(f"nullable struct marker {marker} at offset {pos} is neither {absent} nor 1",
                    pos)
    return read


def _fixed_run_step(run: list[tuple[str, str]]) -> Callable:
    """Consecutive fixed-width fields read by one struct.Struct call."""
    keys = tuple(key for key, _ in run)
    s = struct.Struct(">" + "".join(_FIXED[kind] for _, kind in run))
    unpack, size = s.unpack_from, s.size

    def fail(data, pos):
        for key, kind in run:
            width = struct.calcsize(">" + _FIXED[kind])
            if pos + width > len(data):
                err = _short(data, pos, width)
                err.path.append(key)
                return err
            pos += width
        return _short(data, pos, size)

    if len(keys) == 1:
        (key,) = keys

        def step(data, pos, out):
            try:
                out[key] = unpack(data, pos)[0]
            except struct.error:
                raise fail(data, pos) from None
            return pos + size
    else:
        def step(data, pos, out):
            try:
                out.update(zip(keys, unpack(data, pos)))
            except struct.error:
                raise fail(data, pos) from None
            return pos + size
    return step


def _field_step(key: str, read: Callable) -> Callable:
    def step(data, pos, out):
        try:
            out[key], pos = read(data, pos)
        except _Fail as fail:
            fail.path.append(key)
            raise
        return pos
    return step


def _string_step(key: str, nullable: bool, compact: bool) -> Callable:
    """Short strings read inline; anything else (null, long, broken) goes through the reader."""
    slow = _field_step(key, _string_reader(nullable, compact))
    if compact:
        def step(data, pos, out):
            if pos < len(data):
                n = data[pos]  # length + 1
                end = pos + n
                if 0 < n < 0x80 and end <= len(data):
                    try:
                        out[key] = data[pos + 1:end].decode()
                        return end
                    except UnicodeDecodeError:
                        pass
            return slow(data, pos, out)
    else:
        def step(data, pos, out):
            if pos + 2 <= len(data):
                n = data[pos] << 8 | data[pos + 1]
                end = pos + 2 + n
                if n < 0x8000 and end <= len(data):
                    try:
                        out[key] = data[pos + 2:end].decode()
                        return end
                    except UnicodeDecodeError:
                        pass
            return slow(data, pos, out)
    return step


_SMALL_ARRAY = 32  # arrays of numbers up to this length use a prebuilt struct.Struct


def _number_array_step(key: str, code: str, nullable: bool, compact: bool) -> Callable:
    structs = [struct.Struct(f">{n}{code}") for n in range(_SMALL_ARRAY)]
    width = structs[1].size
    slow = _field_step(key, _array_reader(None, code, width, nullable, compact))

    def step(data, pos, out):
        if compact:
            n = data[pos] - 1 if pos < len(data) else -1
            head = 1
        else:
            n = _I32.unpack_from(data, pos)[0] if pos + 4 <= len(data) else -1
            head = 4
        if 0 <= n < _SMALL_ARRAY:
            end = pos + head + n * width
            if end <= len(data):
                out[key] = list(structs[n].unpack_from(data, pos + head))
                return end
        return slow(data, pos, out)
    return step


def _tags_step(known: dict[int, tuple[str, Callable]]) -> Callable:
    def step(data, pos, out):
        try:
            count = data[pos]
        except IndexError:
            raise _short(data, pos, 1) from None
        if count == 0:
            return pos + 1
        start = pos
        count, pos = _read_uvarint(data, pos)
        if count * 2 > len(data) - pos:
            raise _Fail(f"{count} tagged fields at offset {start} cannot fit in the "
                        f"{len(data) - pos} bytes left", start)
        last = -1
        unknown = None
        for _ in range(count):
            at = pos
            tag, pos = _read_uvarint(data, pos)
            size, pos = _read_uvarint(data, pos)
            if tag <= last:
                raise _Fail(f"tag {tag} at offset {at} does not follow tag {last} in ascending "
                            "order", at)
            last = tag
            end = pos + size
            if end > len(data):
                raise _Fail(f"tagged field {tag} needs {size} bytes at offset {pos}, "
                            f"{len(data) - pos} left", pos)
            entry = known.get(tag)
            if entry is None:
                if unknown is None:
                    unknown = {}
                unknown[tag] = data[pos:end]
            else:
                key, read = entry
                try:
                    value, used = read(data, pos)
                    if used != end:
                        raise _Fail(f"tagged field {tag} declares {size} bytes at offset {pos} "
                                    f"but its value takes {used - pos}", pos)
                except _Fail as fail:
                    fail.path.append(key)
                    raise
                out[key] = value
            pos = end
        if unknown:
            out[UNKNOWN_TAGS] = unknown
        return pos
    return step


def _min_size(f: FieldSpec, version: int, flexible: bool, element: bool = False) -> int:
    """Fewest bytes the field (or one element of it) takes on the wire."""
    compact = f.compact(version, flexible)
    if f.is_array and not element:
        return 1 if compact else 4
    kind = f.element_type
    if kind in _FIXED:
        return struct.calcsize(">" + _FIXED[kind])
    if kind == "string":
        return 1 if compact else 2
    if kind in ("bytes", "records"):
        return 1 if compact else 4
    if not element and f.nullable(version):
        return 1
    regular = [g for g in f.fields if g.present(version) and not (flexible and g.tagged(version))]
    return sum(_min_size(g, version, flexible) for g in regular) + (1 if flexible else 0)


def _decode_value(f: FieldSpec, version: int, flexible: bool, tagged: bool = False) -> Callable:
    nullable = f.nullable(version)
    compact = f.compact(version, flexible)
    kind = f.element_type
    if f.is_array:
        code = _FIXED.get(kind)
        min_size = _min_size(f, version, flexible, element=True)
        if code is not None and kind not in ("uuid", "bool"):
            return _array_reader(None, code, min_size, nullable, compact)
        if kind in _FIXED:
            element = _fixed_reader(kind)
        elif kind == "string":
            element = _string_reader(False, compact)
        elif kind in ("bytes", "records"):
            element = _bytes_reader(False, compact)
        else:
            element = _decode_struct(f.fields, version, flexible)
        return _array_reader(element, None, min_size, nullable, compact)
    if f.is_struct:
        inner = _decode_struct(f.fields, version, flexible)
        return _nullable_struct_reader(inner, tagged) if nullable else inner
    if kind in _FIXED:
        return _fixed_reader(kind)
    if kind == "string":
        return _string_reader(nullable, compact)
    return _bytes_reader(nullable, compact)


def _decode_struct(fields: tuple[FieldSpec, ...], version: int, flexible: bool) -> Callable:
    steps: list[Callable] = []
    run: list[tuple[str, str]] = []
    known: dict[int, tuple[str, Callable]] = {}
    for f in fields:
        if not f.present(version):
            continue
        if flexible and f.tagged(version):
            known[f.tag] = (f.key, _decode_value(f, version, flexible, tagged=True))
            continue
        if f.type in _FIXED:
            run.append((f.key, f.type))
            continue
        if run:
            steps.append(_fixed_run_step(run))
            run = []
        nullable, compact = f.nullable(version), f.compact(version, flexible)
        if f.type == "string":
            steps.append(_string_step(f.key, nullable, compact))
        elif f.is_array and f.element_type in _FIXED and f.element_type not in ("uuid", "bool"):
            steps.append(_number_array_step(f.key, _FIXED[f.element_type], nullable, compact))
        else:
            steps.append(_field_step(f.key, _decode_value(f, version, flexible)))
    if run:
        steps.append(_fixed_run_step(run))
    steps_t = tuple(steps)
    if not flexible:
        def read(data, pos):
            out: dict[str, Any] = {}
            for step in steps_t:
                pos = step(data, pos, out)
            return out, pos
        return read
    tags = _tags_step(known)

    def read_flexible(data, pos):
        out: dict[str, Any] = {}
        for step in steps_t:
            pos = step(data, pos, out)
        if pos < len(data) and not data[pos]:  # the usual empty tagged-field section
            return out, pos + 1
        return out, tags(data, pos, out)
    return read_flexible


# ---------------------------------------------------------------------------------------------
# encoding: writers are write(value, buf) and append to the bytearray `buf`


def _uvarint(n: int) -> bytes:
    if n < 0x80:
        return _UVARINT[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _write_null(nullable: bool, null: bytes, buf: bytearray) -> None:
    if not nullable:
        raise _Fail("null, but the field is not nullable here")
    buf += null


def _string_writer(nullable: bool, compact: bool) -> Callable:
    null = b"\x00" if compact else b"\xff\xff"

    def write(value, buf):
        if value is None:
            return _write_null(nullable, null, buf)
        if not isinstance(value, str):
            raise _Fail(f"expected str, got {type(value).__name__} {_show(value)}")
        try:
            raw = value.encode()
        except UnicodeEncodeError as err:
            raise _Fail(f"string cannot be UTF-8 encoded: {err.reason}") from None
        if compact:
            buf += _uvarint(len(raw) + 1)
        elif len(raw) > 0x7FFF:
            raise _Fail(f"string of {len(raw)} UTF-8 bytes is longer than 32767")
        else:
            buf += _I16.pack(len(raw))
        buf += raw
    return write


def _as_bytes(value: Any) -> bytes | bytearray | memoryview:
    if isinstance(value, (bytes, bytearray)):
        return value
    if isinstance(value, memoryview):
        return value.cast("B") if value.format != "B" or value.ndim != 1 else value
    raise _Fail(f"expected bytes, got {type(value).__name__} {_show(value)}")


def _bytes_writer(nullable: bool, compact: bool) -> Callable:
    null = b"\x00" if compact else b"\xff\xff\xff\xff"

    def write(value, buf):
        if value is None:
            return _write_null(nullable, null, buf)
        raw = _as_bytes(value)
        buf += _uvarint(len(raw) + 1) if compact else _I32.pack(len(raw))
        buf += raw
    return write


def _check_fixed(kind: str, value: Any) -> None:
    """What struct.pack would accept silently but the wire type cannot mean."""
    if kind == "bool":
        if value not in _BOOLS:
            raise _Fail(f"expected bool, got {type(value).__name__} {_show(value)}")
    elif kind == "uuid":
        if not isinstance(value, (bytes, bytearray)) or len(value) != 16:
            raise _Fail(f"uuid must be 16 bytes, got {type(value).__name__} {_show(value)}")


def _fixed_writer(kind: str) -> Callable:
    pack = struct.Struct(">" + _FIXED[kind]).pack
    checked = kind in ("bool", "uuid")

    def write(value, buf):
        if checked:
            _check_fixed(kind, value)
        try:
            buf += pack(value)
        except struct.error as err:
            got = f"{type(value).__name__} {_show(value)}"
            raise _Fail(f"{kind} cannot hold {got} ({err})") from None
    return write


def _array_writer(element: Callable, nullable: bool, compact: bool) -> Callable:
    null = b"\x00" if compact else b"\xff\xff\xff\xff"

    def write(value, buf):
        if value is None:
            return _write_null(nullable, null, buf)
        if not isinstance(value, (list, tuple)):
            raise _Fail(f"expected a list, got {type(value).__name__} {_show(value)}")
        buf += _uvarint(len(value) + 1) if compact else _I32.pack(len(value))
        try:
            for i, item in enumerate(value):
                element(item, buf)
        except _Fail as fail:
            fail.path.append(f"[{i}]")
            raise
    return write


def _nullable_struct_writer(inner: Callable, tagged: bool) -> Callable:
    absent = b"\x00" if tagged else b"\xff"

    def write(value, buf):
        if value is None:
            buf += absent
        else:
            buf += b"\x01"
            inner(value, buf)
    return write


def _field_writer(key: str, default: Any, write: Callable) -> Callable:
    def step(obj, buf):
        try:
            write(obj.get(key, default), buf)
        except _Fail as fail:
            fail.path.append(key)
            raise
    return step


def _fixed_run_writer(run: list[tuple[str, str, Any]]) -> Callable:
    """Consecutive fixed-width fields written by one struct.Struct call."""
    keys = tuple(key for key, _, _ in run)
    defaults = tuple(default for _, _, default in run)
    pack = struct.Struct(">" + "".join(_FIXED[kind] for _, kind, _ in run)).pack
    bools = tuple((key, default) for key, kind, default in run if kind == "bool")
    uuids = tuple((key, default) for key, kind, default in run if kind == "uuid")
    singles = tuple(_field_writer(key, default, _fixed_writer(kind)) for key, kind, default in run)

    def slow(obj, buf):  # field by field: names the culprit, or writes what the checks doubted
        for single in singles:
            single(obj, buf)

    def step(obj, buf):
        get = obj.get
        for key, default in bools:
            if get(key, default) not in _BOOLS:
                return slow(obj, buf)
        for key, default in uuids:
            value = get(key, default)
            if value.__class__ is not bytes or len(value) != 16:
                return slow(obj, buf)
        try:
            buf += pack(*map(get, keys, defaults))
        except struct.error:
            slow(obj, buf)
    return step


def _string_field_writer(key: str, default: Any, nullable: bool, compact: bool) -> Callable:
    """Short strings written inline; anything else goes through the writer."""
    slow = _field_writer(key, default, _string_writer(nullable, compact))
    limit = 0x7F if compact else 0x8000

    def step(obj, buf):
        value = obj.get(key, default)
        if value.__class__ is str:
            try:
                raw = value.encode()
            except UnicodeEncodeError:
                return slow(obj, buf)
            n = len(raw)
            if n < limit:
                buf += _UVARINT[n + 1] if compact else _I16.pack(n)
                buf += raw
                return
        slow(obj, buf)
    return step


def _number_array_writer(key: str, default: Any, kind: str, nullable: bool,
                         compact: bool) -> Callable:
    """Arrays of numbers packed by one struct.Struct call; odd values go through the writer."""
    structs = [struct.Struct(f">{n}{_FIXED[kind]}") for n in range(_SMALL_ARRAY)]
    slow = _field_writer(key, default, _array_writer(_fixed_writer(kind), nullable, compact))

    def step(obj, buf):
        value = obj.get(key, default)
        if value.__class__ is list and len(value) < _SMALL_ARRAY:
            try:
                packed = structs[len(value)].pack(*value)
            except struct.error:
                return slow(obj, buf)
            buf += _UVARINT[len(value) + 1] if compact else _I32.pack(len(value))
            buf += packed
            return
        slow(obj, buf)
    return step


def _merge_unknown(items: list, unknown: Any, known: dict[int, str]) -> list:
    if not isinstance(unknown, Mapping):
        raise _Fail(f"expected a dict of tag -> bytes, got {type(unknown).__name__}")
    for tag, payload in unknown.items():
        if not isinstance(tag, int) or isinstance(tag, bool) or tag < 0:
            raise _Fail(f"tag {tag!r} is not a non-negative int")
        if tag in known:
            raise _Fail(f"tag {tag} is the known field {known[tag]}; set that key instead")
        items.append((tag, _as_bytes(payload)))
    items.sort(key=lambda item: item[0])
    return items


def _tags_writer(known: list[tuple[int, str, Callable]]) -> Callable:
    known = sorted(known, key=lambda item: item[0])
    names = {tag: key for tag, key, _ in known}

    def write(obj, buf):
        items = []
        for tag, key, write_value in known:
            value = obj.get(key, MISSING)
            if value is MISSING:
                continue
            sub = bytearray()
            try:
                write_value(value, sub)
            except _Fail as fail:
                fail.path.append(key)
                raise
            items.append((tag, sub))
        unknown = obj.get(UNKNOWN_TAGS)
        if unknown:
            try:
                items = _merge_unknown(items, unknown, names)
            except _Fail as fail:
                fail.path.append(UNKNOWN_TAGS)
                raise
        buf += _uvarint(len(items))
        for tag, payload in items:
            buf += _uvarint(tag)
            buf += _uvarint(len(payload))
            buf += payload
    return write


def _encode_value(f: FieldSpec, version: int, flexible: bool, tagged: bool = False) -> Callable:
    nullable = f.nullable(version)
    compact = f.compact(version, flexible)
    kind = f.element_type
    if f.is_array:
        if kind in _FIXED:
            element = _fixed_writer(kind)
        elif kind == "string":
            element = _string_writer(False, compact)
        elif kind in ("bytes", "records"):
            element = _bytes_writer(False, compact)
        else:
            element = _encode_struct(f.fields, version, flexible)
        return _array_writer(element, nullable, compact)
    if f.is_struct:
        inner = _encode_struct(f.fields, version, flexible)
        return _nullable_struct_writer(inner, tagged) if nullable else inner
    if kind in _FIXED:
        return _fixed_writer(kind)
    if kind == "string":
        return _string_writer(nullable, compact)
    return _bytes_writer(nullable, compact)


def _encode_struct(fields: tuple[FieldSpec, ...], version: int, flexible: bool) -> Callable:
    steps: list[Callable] = []
    run: list[tuple[str, str, Any]] = []
    known: list[tuple[int, str, Callable]] = []
    allowed = frozenset(f.key for f in fields) | {UNKNOWN_TAGS}
    for f in fields:
        if not f.present(version):
            continue
        if flexible and f.tagged(version):
            known.append((f.tag, f.key, _encode_value(f, version, flexible, tagged=True)))
            continue
        default = f.default_for(version)
        if f.type in _FIXED:
            run.append((f.key, f.type, default))
            continue
        if run:
            steps.append(_fixed_run_writer(run))
            run = []
        nullable, compact = f.nullable(version), f.compact(version, flexible)
        if f.type == "string":
            steps.append(_string_field_writer(f.key, default, nullable, compact))
        elif f.is_array and f.element_type in _FIXED and f.element_type not in ("uuid", "bool"):
            steps.append(_number_array_writer(f.key, default, f.element_type, nullable, compact))
        else:
            steps.append(_field_writer(f.key, default, _encode_value(f, version, flexible)))
    if run:
        steps.append(_fixed_run_writer(run))
    steps_t = tuple(steps)
    tags = _tags_writer(known) if flexible else None
    has_known_tags = bool(known)

    def write(obj, buf):
        if obj.__class__ is not dict and not isinstance(obj, dict):
            raise _Fail(f"expected a dict, got {type(obj).__name__} {_show(obj)}")
        if not obj.keys() <= allowed:
            strays = ", ".join(sorted(map(str, obj.keys() - allowed)))
            raise _Fail(f"unknown keys {strays}; the struct has "
                        f"{', '.join(sorted(allowed - {UNKNOWN_TAGS}))}")
        for step in steps_t:
            step(obj, buf)
        if tags is not None:
            if has_known_tags or UNKNOWN_TAGS in obj:
                tags(obj, buf)
            else:
                buf += b"\x00"
    return write


# ---------------------------------------------------------------------------------------------
# the public face


def _unknown_api(api_key: int) -> str:
    if api_key in SCHEMA.retired:
        name = SCHEMA.retired[api_key]
        return f"{name} (API key {api_key}) has no versions left in Kafka {KAFKA_VERSION}"
    return f"API key {api_key} is unknown to the Kafka {KAFKA_VERSION} message specs"


def _api(api_key: int) -> ApiSpec:
    api = API_KEYS.get(api_key)
    if api is None:
        raise ValueError(_unknown_api(api_key))
    return api


def _label(api_key: int, version: int, is_request: bool) -> str:
    api = API_KEYS.get(api_key)
    name = api.name if api else SCHEMA.retired.get(api_key, f"API key {api_key}")
    return f"{name} {'request' if is_request else 'response'} v{version}"


def _message(api_key: int, version: int, is_request: bool, error: type) -> MessageSpec:
    api = API_KEYS.get(api_key)
    if api is None:
        raise error(f"{_label(api_key, version, is_request)}: {_unknown_api(api_key)}")
    spec = api.request if is_request else api.response
    if version not in spec.versions:
        raise error(f"{_label(api_key, version, is_request)}: unsupported version "
                    f"(the specs have {spec.versions})")
    return spec


_decoders: dict[tuple[int, int, bool], Callable] = {}
_encoders: dict[tuple[int, int, bool], Callable] = {}


def _decoder(api_key: int, version: int, is_request: bool) -> Callable:
    key = (api_key, version, is_request)
    read = _decoders.get(key)
    if read is None:
        spec = _message(api_key, version, is_request, DecodeError)
        read = _decoders[key] = _decode_struct(spec.fields, version, spec.flexible(version))
    return read


def _encoder(api_key: int, version: int, is_request: bool) -> Callable:
    key = (api_key, version, is_request)
    write = _encoders.get(key)
    if write is None:
        spec = _message(api_key, version, is_request, EncodeError)
        write = _encoders[key] = _encode_struct(spec.fields, version, spec.flexible(version))
    return write


def _run_decoder(read: Callable, label: str, data: bytes, offset: int) -> tuple[dict, int]:
    if not 0 <= offset <= len(data):
        raise DecodeError(f"{label}: offset {offset} is outside the {len(data)} bytes given",
                          "$", offset)
    try:
        return read(data, offset)
    except _Fail as fail:
        where = fail.where()
        raise DecodeError(f"{label}: {where}: {fail.reason}", where, fail.offset) from None
    except Exception as err:  # a codec bug must still surface as bad input, not crash the caller
        raise DecodeError(f"{label}: unexpected {type(err).__name__}: {err}") from err


def _run_encoder(write: Callable, label: str, obj: Any) -> bytes:
    buf = bytearray()
    try:
        write(obj, buf)
    except _Fail as fail:
        where = fail.where()
        raise EncodeError(f"{label}: {where}: {fail.reason}", where) from None
    except (TypeError, ValueError, OverflowError) as err:
        raise EncodeError(f"{label}: {err}") from err
    return bytes(buf)


def _decode_body(api_key: int, version: int, data: Any, offset: int, is_request: bool,
                 trailing: bool = False) -> dict:
    label = _label(api_key, version, is_request)
    if data.__class__ is not bytes:
        data = bytes(data)
    obj, pos = _run_decoder(_decoder(api_key, version, is_request), label, data, offset)
    if pos != len(data) and not trailing:
        raise DecodeError(f"{label}: $: {len(data) - pos} bytes left over after the message "
                          f"ended at offset {pos}", "$", pos)
    return obj


def decode_request(api_key: int, version: int, data: bytes | bytearray | memoryview,
                   offset: int = 0, trailing: bool = False) -> dict:
    """The request body that fills data[offset:] exactly (no size prefix, no header). With
    `trailing`, bytes after the body are ignored, as Kafka's broker ignores them."""
    return _decode_body(api_key, version, data, offset, True, trailing)


def decode_response(api_key: int, version: int, data: bytes | bytearray | memoryview,
                    offset: int = 0) -> dict:
    """The response body that fills data[offset:] exactly (no size prefix, no header)."""
    return _decode_body(api_key, version, data, offset, False)


def encode_request(api_key: int, version: int, obj: Mapping[str, Any]) -> bytes:
    """The request body's bytes (no size prefix, no header)."""
    return _run_encoder(_encoder(api_key, version, True), _label(api_key, version, True), obj)


def encode_response(api_key: int, version: int, obj: Mapping[str, Any]) -> bytes:
    """The response body's bytes (no size prefix, no header)."""
    return _run_encoder(_encoder(api_key, version, False), _label(api_key, version, False), obj)


# ---------------------------------------------------------------------------------------------
# headers


def request_header_version(api_key: int, api_version: int) -> int:
    """1, or 2 from the API's first flexible version on (also for versions newer than the specs,
    as the broker does, so an ApiVersions request from a newer client still parses); 0 only for
    ControlledShutdown v0 where the specs still have it. ValueError for an unknown API key."""
    api = _api(api_key)
    header_versions = SCHEMA.request_header.versions
    if api_key == _CONTROLLED_SHUTDOWN_KEY and api_version == 0 and 0 in header_versions:
        return 0
    flexible_from = api.request_flexible_from
    return 2 if flexible_from is not None and api_version >= flexible_from else 1


def response_header_version(api_key: int, api_version: int) -> int:
    """0, or 1 from the API's first flexible version on; ApiVersions responses always use 0."""
    api = _api(api_key)
    if api_key == _API_VERSIONS_KEY:
        return 0
    flexible_from = api.response_flexible_from
    return 1 if flexible_from is not None and api_version >= flexible_from else 0


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_offset: int  # where the request body starts in the data given
    tags: dict[int, bytes]  # tagged fields of header v2 (none are defined; kept, not dropped)


def _header_codec(is_request: bool, version: int, encode: bool) -> Callable:
    spec = SCHEMA.request_header if is_request else SCHEMA.response_header
    error = EncodeError if encode else DecodeError
    if version not in spec.versions:
        raise error(f"{spec.name} v{version}: unsupported version (the specs have {spec.versions})")
    cache = _encoders if encode else _decoders
    key = (-1 if is_request else -2, version, encode)
    codec = cache.get(key)
    if codec is None:
        build = _encode_struct if encode else _decode_struct
        codec = cache[key] = build(spec.fields, version, spec.flexible(version))
    return codec


def decode_request_header(data: bytes | bytearray | memoryview, offset: int = 0) -> RequestHeader:
    """The request header at data[offset:]; its version follows from the API key and version."""
    if data.__class__ is not bytes:
        data = bytes(data)
    try:
        api_key, api_version = _HEADER_KEYS.unpack_from(data, offset)
    except struct.error:
        raise DecodeError(f"request header: needs 4 bytes at offset {offset}, "
                          f"{max(len(data) - offset, 0)} left", "$", offset) from None
    try:
        version = request_header_version(api_key, api_version)
    except ValueError as err:
        raise DecodeError(f"request header: {err}", "$.request_api_key", offset) from None
    label = f"RequestHeader v{version} ({_label(api_key, api_version, True)})"
    obj, pos = _run_decoder(_header_codec(True, version, False), label, data, offset)
    return RequestHeader(api_key, api_version, obj["correlation_id"], obj.get("client_id"), pos,
                         obj.get(UNKNOWN_TAGS, {}))


def encode_request_header(api_key: int, api_version: int, correlation_id: int,
                          client_id: str | None, tags: Mapping[int, bytes] | None = None) -> bytes:
    """The request header bytes; its version follows from the API key and version."""
    try:
        version = request_header_version(api_key, api_version)
    except ValueError as err:
        raise EncodeError(f"request header: {err}") from None
    obj = {"request_api_key": api_key, "request_api_version": api_version,
           "correlation_id": correlation_id, "client_id": client_id}
    if tags:
        obj[UNKNOWN_TAGS] = tags
    return _run_encoder(_header_codec(True, version, True), f"RequestHeader v{version}", obj)


def decode_response_header(data: bytes | bytearray | memoryview, offset: int,
                           header_version: int) -> tuple[int, int]:
    """(correlation_id, body_offset) of the response header at data[offset:]."""
    if header_version in (0, 1) and 0 <= offset and offset + 5 <= len(data):
        # the usual case, read in place: no copy of a large frame for four bytes
        if header_version == 0:
            return _I32.unpack_from(data, offset)[0], offset + 4
        if data[offset + 4] == 0:  # no tagged fields
            return _I32.unpack_from(data, offset)[0], offset + 5
    if data.__class__ is not bytes:
        data = bytes(data)
    obj, pos = _run_decoder(_header_codec(False, header_version, False),
                            f"ResponseHeader v{header_version}", data, offset)
    return obj["correlation_id"], pos


def encode_response_header(correlation_id: int, header_version: int) -> bytes:
    """The response header bytes for `response_header_version(...)`."""
    return _run_encoder(_header_codec(False, header_version, True),
                        f"ResponseHeader v{header_version}", {"correlation_id": correlation_id})
