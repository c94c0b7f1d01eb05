"""Payload validation: which records of a batch break a topic's contract, and why.

A validation spec comes from rules files as plain data: what the value and key must be (JSON,
optionally matching a JSON Schema), which headers must be present, how large a record may be,
and what happens to an invalid record (`reject`, or `dead_letter` to a named destination).

Guarantees:
- `Validation.check` never raises for any content of the records: nesting 100000 deep, numbers
  beyond any range, invalid UTF-8 and 10 MB strings all come back as a message.
- A valid record costs one native pass over its bytes where the schema is within what
  `SchemaCheck` reads (brokerguard._native.compile_check), else one orjson parse and one
  `is_valid`; the detailed errors are computed only for records that fail.
- Schemas are checked when compiled; `$ref`s are never fetched (no network or file access while
  validating) and `pattern`s run on a linear-time regex engine.
- Messages name the place: `$.amount: "12" is not of type "number"`; each is at most a few
  hundred characters, however large the offending value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import yaml

from brokerguard._native import compile_check
from brokerguard.content.errors import ContentSpecError, check_keys, type_word
from brokerguard.content.masking import is_json

__all__ = ["Validation", "compile_validation"]

VALIDATION_KEYS = ("description", "value", "key", "required_headers", "max_record_bytes", "on_invalid")
PART_KEYS = ("json", "schema", "schema_file", "allow_null")
MESSAGE_LIMIT = 240  # characters of one schema error; the value it quotes can be any size
PATH_LIMIT = 80
SCHEMA_ERRORS = 3  # schema errors named per record; more are summed up
_DESTINATION = re.compile(r"[A-Za-z0-9._-]{1,249}\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

Header = tuple[str | bytes, bytes | str | None]


def json_path(parts: Sequence[str | int]) -> str:
    """`$.items[0].sku`, `$['odd key']` for an instance path as jsonschema_rs gives it."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}")
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            out.append(f"['{escaped}']")
    return "".join(out)


def _clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _clip_path(path: str) -> str:
    # A path 1000 levels deep says no more than its two ends do.
    return path if len(path) <= PATH_LIMIT else path[:PATH_LIMIT // 2] + "…" + path[-PATH_LIMIT // 2:]


@dataclass(frozen=True, slots=True)
class _Part:
    """The checks on a record's value or key."""

    label: str  # "value" or "key"
    json: bool
    allow_null: bool
    validator: Any  # a jsonschema_rs validator, or None
    fast: Any  # a SchemaCheck for the same schema, or None where it cannot read the schema

    def problem(self, data: bytes | None) -> str | None:
        if data is None:
            if self.allow_null:
                return None
            return f"{self.label} is null (a tombstone), which this topic does not accept"
        if not self.json:
            return None
        validator = self.validator
        if (validator is None and is_json(data)) or (self.fast is not None and self.fast.passes(data)):
            return None  # checked natively, without building objects
        try:
            doc = _loads(data)
        except _JSONDecodeError as err:
            return f"{self.label} is not JSON: {err.msg} at line {err.lineno} column {err.colno}"
        if validator is None or validator.is_valid(doc):
            return None
        prefix = "" if self.label == "value" else f"{self.label} "
        messages = []
        for error in validator.iter_errors(doc):
            if len(messages) == SCHEMA_ERRORS:
                messages.append("and more")
                break
            messages.append(f"{prefix}{_clip_path(json_path(error.instance_path))}: {_clip(error.message)}")
        return "; ".join(messages) or f"{self.label} does not match the schema"


class Validation:
    """A compiled validation spec. Build with `compile_validation`."""

    def __init__(self, name: str, *, value: _Part | None = None, key: _Part | None = None,
                 required_headers: Sequence[str] = (), max_record_bytes: int | None = None,
                 dead_letter: str | None = None) -> None:
        self.name = name
        self.value = value
        self.key = key
        self.required_headers = tuple(required_headers)
        self.max_record_bytes = max_record_bytes
        self.dead_letter = dead_letter  # where invalid records go instead; None: they are rejected

    def __repr__(self) -> str:
        return f"<Validation {self.name}>"

    def check(self, keys: Sequence[bytes | None] | None, values: Sequence[bytes | None],
              headers: Sequence[Sequence[Header] | None] | None = None,
              sizes: Sequence[int] | None = None) -> list[tuple[int, str]]:
        """(record index, message) for each invalid record of a batch, in order; [] when all are valid.

        `keys`, `values` and `headers` are parallel lists, one entry per record (`keys` or
        `headers` may be None for a batch without them); a record's headers are (name, value)
        pairs. `sizes`, each record's encoded size if known, lets a batch far enough below
        `max_record_bytes` skip counting. Never raises for any content of the records.
        """
        if self._batch_passes(values, headers, sizes):
            return []
        problems: list[tuple[int, str]] = []
        record = self._record
        for index, value in enumerate(values):
            key = keys[index] if keys is not None else None
            pairs = headers[index] if headers is not None else None
            try:
                message = record(key, value, pairs)
            except Exception as err:  # whatever a payload provokes, it is that record's problem
                message = f"record could not be checked: {type(err).__name__}: {_clip(str(err))}"
            if message is not None:
                problems.append((index, message))
        return problems

    def passes_in_place(self, records: Any) -> bool:
        """Whether every record of a decoded batch (brokerguard._native.Records) surely passes,
        told from the values where they lie: for a validation of values alone by a native
        schema check. False: ask check() with the batch's lists, which also says why."""
        part = self.value
        if (part is None or part.fast is None or self.key is not None or self.required_headers
                or self.max_record_bytes is not None):
            return False
        return records.values_pass(part.fast, part.allow_null)

    @property
    def reads_keys(self) -> bool:
        return self.key is not None or self.max_record_bytes is not None

    @property
    def reads_headers(self) -> bool:
        return bool(self.required_headers) or self.max_record_bytes is not None

    def _batch_passes(self, values: Sequence[bytes | None], headers: Sequence[Sequence[Header] | None] | None,
                      sizes: Sequence[int] | None) -> bool:
        """The common case in a few tight passes over the batch: every record surely passes.
        False sends the batch record by record, for the reasons."""
        if self.key is not None:
            return False
        limit = self.max_record_bytes
        # An encoded record holds its key, value and headers, and more: within the limit, so are they.
        if limit is not None and (sizes is None or max(sizes, default=0) > limit):
            return False
        if self.required_headers:
            if headers is None:
                return False
            required = self.required_headers
            for pairs in headers:
                names = [name for name, _ in pairs or ()]
                if not all(name in names for name in required):
                    return False
        part = self.value
        if part is None:
            return True
        if part.fast is not None and type(values) is list:
            return part.fast.passes_all(values, part.allow_null)
        if not part.allow_null and None in values:
            return False
        if not part.json:
            return True
        if part.validator is None:
            return all(is_json(value) for value in values if value is not None)
        try:
            docs = [_loads(value) for value in values if value is not None]
        except (_JSONDecodeError, TypeError):
            return False
        return all(map(part.validator.is_valid, docs))

    def _record(self, key: bytes | None, value: bytes | None, headers: Sequence[Header] | None) -> str | None:
        limit = self.max_record_bytes
        if limit is not None:
            size = _size(key, value, headers)
            if size > limit:
                return f"record is {size} bytes, over the limit of {limit}"
        messages: list[str] | None = None
        if self.required_headers:
            present = {name if type(name) is str else bytes(name).decode("utf-8", "replace")
                       for name, _ in headers or ()}
            missing = [name for name in self.required_headers if name not in present]
            if missing:
                messages = [f"missing header{'s' if len(missing) > 1 else ''} {', '.join(missing)}"]
        for part, data in ((self.key, key), (self.value, value)):
            if part is not None:
                problem = part.problem(data)
                if problem is not None:
                    messages = [*(messages or ()), problem]
        return None if messages is None else "; ".join(messages)


def _length(data: bytes | str | None) -> int:
    if data is None:
        return 0
    if type(data) is str:
        if data.isascii():
            return len(data)
        try:  # header names are decoded with surrogateescape: count the bytes they came from
            return len(data.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            return len(data.encode("utf-8", "surrogatepass"))
    return len(data)


def _size(key: bytes | None, value: bytes | None, headers: Sequence[Header] | None) -> int:
    size = _length(key) + _length(value)
    for name, data in headers or ():
        size += _length(name) + _length(data)
    return size


# -- compiling specs ---------------------------------------------------------------------------


def compile_validation(name: str, spec: Mapping[str, Any], base_dir: str | os.PathLike[str]) -> Validation:
    """Check a validation spec and compile it; ContentSpecError says where and what to write instead.

    `schema_file` paths are read relative to `base_dir` (the rules directory).
    """
    check_keys(spec, "$", VALIDATION_KEYS, "a validation", name=name)

    def fail(path: str, message: str) -> ContentSpecError:
        return ContentSpecError(path, message, spec=name)

    parts = {label: _part(label, spec[label], Path(base_dir), fail, name) for label in ("value", "key")
             if label in spec}

    required = spec.get("required_headers", [])
    if not isinstance(required, (list, tuple)):
        raise fail("$.required_headers", f"`required_headers` must be a list of header names, not {type_word(required)}")
    for index, header in enumerate(required):
        if not isinstance(header, str) or not header:
            raise fail(f"$.required_headers[{index}]", f"a header name must be non-empty text, not {type_word(header)}")
        if header in required[:index]:
            raise fail(f"$.required_headers[{index}]", f"header `{header}` is listed twice")

    limit = spec.get("max_record_bytes")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise fail("$.max_record_bytes", f"`max_record_bytes` must be a whole number of bytes, 1 or more "
                                         f"(e.g. 1048576), not {type_word(limit)}")

    dead_letter = None
    on_invalid = spec.get("on_invalid", "reject")
    if isinstance(on_invalid, Mapping):
        check_keys(on_invalid, "$.on_invalid", ("dead_letter",), "`on_invalid`", name=name)
        dead_letter = on_invalid.get("dead_letter")
        if not isinstance(dead_letter, str) or not _DESTINATION.match(dead_letter):
            raise fail("$.on_invalid.dead_letter", f"`dead_letter` names where invalid records go (letters, digits, "
                                                   f"'.', '_', '-'), not {type_word(dead_letter)}")
    elif on_invalid != "reject":
        raise fail("$.on_invalid", f"`on_invalid` is `reject` or `{{dead_letter: <destination>}}`, "
                                   f"not {type_word(on_invalid)}")

    checking = [part for part in parts.values() if part.json or not part.allow_null]
    if not checking and not required and limit is None:
        raise fail("$", "this validation checks nothing: give it `value`, `key`, `required_headers` "
                        "or `max_record_bytes`")
    return Validation(name, value=parts.get("value"), key=parts.get("key"), required_headers=required,
                      max_record_bytes=limit, dead_letter=dead_letter)


def _part(label: str, spec: Any, base_dir: Path, fail: Any, name: str) -> _Part:
    where = f"$.{label}"
    check_keys(spec, where, PART_KEYS, f"`{label}`", name=name)
    if "schema" in spec and "schema_file" in spec:
        raise fail(where, "give `schema` or `schema_file`, not both")
    has_schema = "schema" in spec or "schema_file" in spec
    is_json = spec.get("json", has_schema)
    if not isinstance(is_json, bool):
        raise fail(f"{where}.json", f"`json` is true or false, not {type_word(is_json)}")
    if has_schema and not is_json:
        raise fail(f"{where}.json", "a schema applies to JSON: set `json: true` or drop the schema")
    allow_null = spec.get("allow_null", True)
    if not isinstance(allow_null, bool):
        raise fail(f"{where}.allow_null", f"`allow_null` is true or false, not {type_word(allow_null)}")
    validator = schema = None
    if "schema" in spec:
        schema = spec["schema"]
        validator = _validator(schema, f"{where}.schema", "", fail)
    elif "schema_file" in spec:
        file = spec["schema_file"]
        at = f"{where}.schema_file"
        if not isinstance(file, str) or not file:
            raise fail(at, f"`schema_file` is a path relative to the rules directory, not {type_word(file)}")
        schema = _read_schema(base_dir / file, file, at, fail)
        validator = _validator(schema, at, f"{file}: ", fail)
    return _Part(label, is_json, allow_null, validator, None if validator is None else compile_check(schema))


def _read_schema(path: Path, shown: str, at: str, fail: Any) -> Any:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise fail(at, f"cannot read {shown} (in {path.parent}): {err.strerror or err}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        return orjson.loads(data)
    except (orjson.JSONDecodeError, yaml.YAMLError) as err:
        raise fail(at, f"{shown} is not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: "
                       f"{_clip(str(err))}") from None


def _validator(schema: Any, at: str, label: str, fail: Any) -> Any:
    if not isinstance(schema, (Mapping, bool)):
        raise fail(at, f"{label}a JSON Schema is a mapping (or true/false), not {type_word(schema)}")
    try:
        return jsonschema_rs.validator_for(schema, offline=True, pattern_options=jsonschema_rs.RegexOptions())
    except jsonschema_rs.ValidationError as err:
        inside = json_path(err.instance_path)
        if label:
            raise fail(at, f"{label}not a valid JSON Schema at {inside}: {_clip(err.message)}") from None
        raise fail(at + inside[1:], f"not a valid JSON Schema: {_clip(err.message)}") from None
    except Exception as err:  # values YAML allows and JSON does not (dates, sets), unresolvable refs
        raise fail(at, f"{label}not a usable JSON Schema: {_clip(str(err))}") from None
