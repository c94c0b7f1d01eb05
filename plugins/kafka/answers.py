"""Response bodies the gateway writes itself, built from the message schema.

When the gateway refuses part of a request it must answer that part the way the broker would: an
entry per refused topic (or group, or resource) carrying the same names, ids and partitions the
client asked for, with the error code in it and every other field at its spec default. A `Mirror`
says how the entries of one request array become the entries of one response array; the builders
here fill in everything else from the schema of the exact version, so what they return always
encodes for that version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .protocol import codec
from .protocol.schema import FieldSpec

ERROR_KEYS = ("error_code", "partition_error_code")
MESSAGE_KEYS = ("error_message",)
_PARTITION_KEYS = ("partition_index", "partition", "partition_id", "index")


class Mirror(NamedTuple):
    """How entries of the request array `request` become response entries.

    copy: (response key, request key) pairs; the request key "" stands for the request entry
    itself, when the request array holds plain values (topic names, partition numbers).
    children: (response array key, Mirror) pairs for arrays inside each entry.
    fill: values that differ from the spec default in a refused entry, e.g. -1 offsets.
    """

    request: str
    copy: tuple[tuple[str, str], ...] = ()
    children: tuple[tuple[str, Mirror], ...] = ()
    fill: tuple[tuple[str, Any], ...] = ()


def field(fields: Iterable[FieldSpec], key: str | tuple[str, ...]) -> FieldSpec:
    """The field `key` of a struct, or the one at a path of struct-array keys."""
    path = (key,) if isinstance(key, str) else key
    found = None
    for step in path:
        found = next((f for f in fields if f.key == step), None)
        if found is None:
            raise KeyError(step)
        fields = found.fields
    return found


def response_fields(api_key: int) -> tuple[FieldSpec, ...]:
    return codec.API_KEYS[api_key].response.fields


def build(fields: Iterable[FieldSpec], version: int, values: Mapping[str, Any] = {},
          error: int | None = None, message: str | None = None) -> dict:
    """A struct of this version with every non-tagged field: `values`, else the spec default.
    Keys of `values` the version does not have are left out.

    With `error`, every error-code field of the struct gets it (and its message fields `message`).
    """
    out: dict[str, Any] = {}
    for f in fields:
        if not f.present(version) or f.tagged(version):
            continue
        if f.key in values:
            out[f.key] = values[f.key]
        elif error is not None and f.key in ERROR_KEYS:
            out[f.key] = error
        elif error is not None and message is not None and f.key in MESSAGE_KEYS:
            out[f.key] = message
        elif f.is_struct and not f.is_array:
            out[f.key] = None if f.default is None and f.nullable(version) else build(f.fields, version)
        else:
            out[f.key] = f.default_for(version)
    return out


def mirror(fields: tuple[FieldSpec, ...], version: int, how: Mirror, entry: Any,
           error: int, message: str | None) -> dict:
    """The response entry (struct `fields`) answering the request entry `entry` with `error`."""
    values: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in how.fill}
    for response_key, request_key in how.copy:
        values[response_key] = entry if request_key == "" else entry.get(request_key)
    for response_key, child in how.children:
        f = _find(fields, response_key, version)
        if f is None:
            continue
        nested = entry.get(child.request) if isinstance(entry, Mapping) else None
        values[response_key] = [mirror(f.fields, version, child, e, error, message) for e in nested or ()]
    return build(fields, version, values, error, message)


def answer(api_key: int, version: int, values: Mapping[str, Any] = {}) -> dict:
    """A whole response body: `values`, every other field at its spec default, no error."""
    return build(response_fields(api_key), version, values)


def refuse_everything(api_key: int, version: int, request: Mapping[str, Any],
                      mirrors: Iterable[tuple[str, Mirror]], error: int, message: str | None,
                      top: Mapping[str, Any] = {}) -> dict:
    """The answer to a request refused as a whole: the top-level error (where the response has
    one) and every entry the mirrors name, each with the error; `top` fills other top-level
    fields that are not at their spec default in a refusal (e.g. node_id -1)."""
    fields = response_fields(api_key)
    values: dict[str, Any] = dict(top)
    for response_key, how in mirrors:
        f = _find(fields, response_key, version)
        if f is None or how.request not in request:
            continue
        got = [mirror(f.fields, version, how, e, error, message) for e in request[how.request] or ()]
        values.setdefault(response_key, []).extend(got)
    return build(fields, version, values, error, message)


def guess_mirrors(api_key: int, version: int) -> tuple[tuple[str, Mirror], ...]:
    """Mirrors for an API nobody described, from the names its request and response share.

    Used for APIs the gateway does not relay (inter-broker ones mostly), whose refusal must
    still name each entry when the response has no top-level error code.
    """
    spec = codec.API_KEYS[api_key]
    return _guess(spec.request.fields, spec.response.fields, version)


def _guess(request: tuple[FieldSpec, ...], response: tuple[FieldSpec, ...],
           version: int) -> tuple[tuple[str, Mirror], ...]:
    found = []
    arrays = [q for q in request if q.is_array and q.present(version) and not q.tagged(version)]
    for r in response:
        if not (r.is_array and r.is_struct and r.present(version)) or r.tagged(version):
            continue
        keys = {f.key for f in r.fields if f.present(version)} - set(ERROR_KEYS) - set(MESSAGE_KEYS)
        best: tuple[int, Mirror] | None = None
        for q in arrays:
            if q.is_struct:
                common = sorted(keys & {f.key for f in q.fields if f.present(version) and not f.is_array})
                score, how = len(common), Mirror(q.key, tuple((k, k) for k in common),
                                                 _guess(q.fields, r.fields, version))
            elif q.element_type == "int32" and "partition" in q.key:
                key = next((k for k in _PARTITION_KEYS if k in keys), None)
                score, how = (1, Mirror(q.key, ((key, ""),))) if key else (0, Mirror(q.key))
            else:
                continue
            if score and (best is None or score > best[0]):
                best = (score, how)
        if best is not None:
            found.append((r.key, best[1]))
    return tuple(found)


def _find(fields: Iterable[FieldSpec], key: str, version: int) -> FieldSpec | None:
    for f in fields:
        if f.key == key and f.present(version) and not f.tagged(version):
            return f
    return None
