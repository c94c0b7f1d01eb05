"""Pure-Python twin of jsoncheck.pyx, and the one place that decides which schemas it can check.

A SchemaCheck answers one question about a JSON document, fast: does it surely pass? `passes`
is True only for a document that orjson parses and the JSON Schema accepts. The compiled twin
reads the bytes once, builds no Python object, and says False whenever it is not sure (a
number with an exponent, a string with a surrogate escape, nesting beyond MAX_DEPTH); the
caller then parses the document and asks the full validator, which also says why. This twin
is exact: it is that full check.

`compile_check(schema)` gives a SchemaCheck for schemas made only of the keywords below, and
None for any other (the caller keeps the full validator alone):

    type, enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers),
    minLength, maxLength, pattern, format, properties, required, additionalProperties, items
    (one schema), minItems, maxItems, and true / false as schemas;
    annotations that change nothing: title, description, $comment, examples, default,
    deprecated, readOnly, writeOnly, $id, $defs, definitions;
    $schema naming draft 6, 7, 2019-09 or 2020-12, where these keywords mean the same.

enum and const values may be text, true, false, null or whole numbers below 2**53; numeric
bounds may be up to 2**53 in size; at most 64 names are required of one object. `pattern` and
`format` are not reimplemented: a string they apply to is handed, as text, to a jsonschema_rs
validator of just those keywords (and the root's $schema), so they mean exactly what they mean
to the full validator.
"""
import math
from collections.abc import Mapping

import jsonschema_rs
import orjson

__all__ = ["MAX_DEPTH", "SchemaCheck", "compile_check"]

MAX_DEPTH = 128  # deeper documents are never sure to pass: the full validator decides

# JSON types, as bits. An integer token is digits with an optional minus sign; a fraction is a
# number with a decimal point. `number` allows both; `integer` only the first (a 2.0 is left to
# the full validator).
T_NULL, T_BOOLEAN, T_INTEGER, T_FRACTION, T_STRING, T_ARRAY, T_OBJECT = 1, 2, 4, 8, 16, 32, 64
T_ALL = 127
_TYPES = {"null": T_NULL, "boolean": T_BOOLEAN, "integer": T_INTEGER, "number": T_INTEGER | T_FRACTION,
          "string": T_STRING, "array": T_ARRAY, "object": T_OBJECT}

# enum values
E_STRING, E_INTEGER, E_NULL, E_TRUE, E_FALSE = 1, 2, 3, 4, 5

ANY = -1  # the child of a node that constrains nothing: its values are only read as JSON
EXACT = 2 ** 53  # every integer up to this is a double exactly

_ANNOTATIONS = frozenset(("title", "description", "$comment", "examples", "default", "deprecated",
                          "readOnly", "writeOnly", "$id", "$defs", "definitions"))
_KEYWORDS = frozenset(("type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                       "minLength", "maxLength", "pattern", "format", "properties", "required", "additionalProperties", "items",
                       "minItems", "maxItems")) | _ANNOTATIONS
_DRAFTS = frozenset(f"{base}{tail}" for base in ("http://json-schema.org/draft-06/schema",
                                                 "http://json-schema.org/draft-07/schema",
                                                 "https://json-schema.org/draft/2019-09/schema",
                                                 "https://json-schema.org/draft/2020-12/schema")
                    for tail in ("", "#"))


class _Unsupported(Exception):
    """A schema outside what the fast check reads."""


def plan(schema):
    """The schema flattened into nodes for the compiled twin (node 0 is the root), or None.

    A node is (types, minimum, exclusive_minimum, maximum, exclusive_maximum, min_length,
    max_length, enum, properties, required, additional, items, min_items, max_items, text): bounds
    are floats or None, lengths and counts -1 when absent, enum a list of (kind, value) or None,
    properties a list of (name as UTF-8, child node, required bit or 0), required the mask of
    all required bits, additional and items child nodes (ANY: anything), text the schema of
    `pattern` and `format` that a string must pass, or None.
    """
    draft = {}
    if isinstance(schema, Mapping) and "$schema" in schema:
        if schema["$schema"] not in _DRAFTS:
            return None
        draft = {"$schema": schema["$schema"]}
        schema = {key: value for key, value in schema.items() if key != "$schema"}
    nodes = []
    try:
        root = _node(schema, nodes, draft)
    except (_Unsupported, KeyError, TypeError, ValueError, AttributeError, RecursionError):
        return None  # outside the subset, or not a schema that a validator would compile
    if root == ANY:  # every document passes that is JSON: one node that allows all
        nodes.append((T_ALL, None, None, None, None, -1, -1, None, [], 0, ANY, ANY, -1, -1, None))
    return nodes


def _node(schema, nodes, draft):
    """Appends the node for schema (and its children) and returns its index, or ANY."""
    if schema is True:
        return ANY
    if schema is False:
        nodes.append((0, None, None, None, None, -1, -1, None, [], 0, ANY, ANY, -1, -1, None))
        return len(nodes) - 1
    if not isinstance(schema, Mapping) or not set(schema) <= _KEYWORDS:
        raise _Unsupported
    if not set(schema) - _ANNOTATIONS:
        return ANY
    index = len(nodes)
    nodes.append(None)  # children come after their parent
    types = _types(schema.get("type"))
    bounds = [_bound(schema.get(name)) for name in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")]
    enum = None
    if "enum" in schema:
        enum = [_choice(value) for value in schema["enum"]]
    if "const" in schema:
        const = [_choice(schema["const"])]
        enum = const if enum is None else [choice for choice in enum if choice in const]
    required = list(dict.fromkeys(schema.get("required", ())))
    if len(required) > 64:
        raise _Unsupported
    properties = {name: _node(child, nodes, draft) for name, child in schema.get("properties", {}).items()}
    additional = _node(schema.get("additionalProperties", True), nodes, draft)
    entries = []
    for name in dict.fromkeys([*properties, *required]):
        bit = 1 << required.index(name) if name in required else 0
        entries.append((name.encode("utf-8", "surrogatepass"), properties.get(name, additional), bit))
    items = schema.get("items", True)
    if not isinstance(items, (Mapping, bool)):
        raise _Unsupported  # a list of schemas, one per position
    items = _node(items, nodes, draft)
    text = {key: schema[key] for key in ("pattern", "format") if key in schema}
    nodes[index] = (types, *bounds, _count(schema, "minLength"), _count(schema, "maxLength"), enum, entries,
                    (1 << len(required)) - 1, additional, items, _count(schema, "minItems"),
                    _count(schema, "maxItems"), {**draft, **text} if text else None)
    return index


def _count(schema, keyword):
    value = schema.get(keyword, -1)
    if type(value) is not int or value < -1 or value >= 2 ** 62:
        raise _Unsupported
    return value


def _types(value):
    if value is None:
        return T_ALL
    names = [value] if isinstance(value, str) else value
    bits = 0
    for name in names:
        bits |= _TYPES[name]
    return bits


def _bound(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= EXACT:
        raise _Unsupported
    return float(value)


def _choice(value):
    if isinstance(value, str):
        return (E_STRING, value.encode("utf-8", "surrogatepass"))
    if value is None:
        return (E_NULL, None)
    if value is True or value is False:
        return (E_TRUE, None) if value else (E_FALSE, None)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and abs(value) < EXACT:
        return (E_INTEGER, value)
    raise _Unsupported


class SchemaCheck:
    """Whether JSON documents surely pass a schema. Build with `compile_check`."""

    def __init__(self, schema, nodes):
        self._validator = jsonschema_rs.validator_for(schema, offline=True, pattern_options=jsonschema_rs.RegexOptions())
        self._nodes = nodes

    def passes(self, data):
        """True only if data (bytes) is JSON that the schema accepts."""
        if not isinstance(data, bytes):
            raise TypeError(f"a document is bytes, not {type(data).__name__}")
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        return self._validator.is_valid(document)

    native_check_value = None  # no C function here: the record core hands passes_all the values

    def passes_all(self, values, allow_none):
        """True only if every item of the list values passes (a None passes if allow_none); an
        item that is not bytes does not."""
        for value in values:
            if value is None:
                if not allow_none:
                    return False
            elif not isinstance(value, bytes) or not self.passes(value):
                return False
        return True


def compile_check(schema):
    """A SchemaCheck for a JSON Schema (already known to be valid), or None when the schema uses
    what the fast check does not read."""
    nodes = plan(schema)
    return None if nodes is None else SchemaCheck(schema, nodes)
