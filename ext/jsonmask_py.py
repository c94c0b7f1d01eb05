# JSON read here (RFC 8259), as bytes in UTF-8 (no byte order mark):
#
#   document          ws value ws
#   value             object | array | string | number | true | false | null
#   object            { ws }  or  { ws string ws : ws value ws (, ws string ws : ws value ws)* }
#   array             [ ws ]  or  [ ws value ws (, ws value ws)* ]
#   string            " (char | escape)* "
#     char            any Unicode scalar value from U+0020 on but " and \, in shortest-form UTF-8
#                     (no surrogates ED A0..BF, nothing above U+10FFFF)
#     escape          \" \\ \/ \b \f \n \r \t or \u and 4 hex digits of either case; a surrogate
#                     escape need not be one of a pair (Python's json accepts it too)
#   number            -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
#   ws                space, tab, line feed, carriage return
#
# Nesting: an object or array opens one level (`[]` is depth 1, `[[]]` depth 2); a document
# nested deeper than max_depth is invalid. NaN, Infinity and a BOM are not JSON.
#
# A rule's path names object members, from the root object down: ("card", "number") is the
# member "number" of the object that is the value of the root's member "card". Arrays are not
# looked into. Keys are compared after decoding their escapes (a surrogate pair is one code
# point; a lone surrogate escape compares as its 3-byte surrogatepass form, as the rule names
# are encoded); every occurrence of a duplicate key is masked.
#
# DROP removes a member's key, colon and value, the whitespace between them, and one comma: the
# one after the value with the whitespace up to the next key, or for the last member the one
# before the key with the whitespace back to the previous value. `{"a":1 , "b":2}` without b is
# `{"a":1}`, without a `{"b":2}`; without its only member an object keeps what whitespace it held.
"""Pure-Python twin of jsonmask.pyx: the reference for differential tests, and the fallback
when BROKERGUARD_NO_EXTENSIONS=1.

FieldMasker applies member-path rules to the bytes of a JSON document in one pass and changes
only the bytes of the values it masks: every other byte, whitespace included, stays as it was.

Rule checking and its messages live here and only here: jsonmask.pyx compiles its rules with
`_compile` too, so both twins refuse the same rules with the same words.
"""
import hashlib
import hmac
import re
import sys

__all__ = [
    "DROP",
    "FALLBACK",
    "HASH",
    "KEEP_FIRST",
    "KEEP_LAST",
    "NULL",
    "REDACT",
    "FieldMasker",
    "Pseudonyms",
]

REDACT, NULL, DROP, KEEP_LAST, KEEP_FIRST, HASH = 1, 2, 3, 4, 5, 6
_STRATEGY_NAMES = {REDACT: "REDACT", NULL: "NULL", DROP: "DROP", KEEP_LAST: "KEEP_LAST",
                   KEEP_FIRST: "KEEP_FIRST", HASH: "HASH"}


class _Fallback:
    """The one FALLBACK: a value that only the general (parse and rewrite) path can mask."""

    __slots__ = ()

    def __repr__(self):
        return "FALLBACK"

    def __reduce__(self):
        return "FALLBACK"


FALLBACK = _Fallback()


# Rules: checked and compiled once, for both twins


def _not_bytes(value) -> TypeError:
    return TypeError(f"FieldMasker.mask takes bytes, not {type(value).__name__}")


def _initialized_twice() -> TypeError:
    return TypeError("a FieldMasker is initialized once; make a new one for other rules")


def _hash_not_bytes(out) -> TypeError:
    return TypeError(f"hash_function must return bytes (a JSON string literal), not {type(out).__name__}")


def _hash_not_json(out: bytes) -> ValueError:
    return ValueError(f"hash_function returned {out[:60]!r}, which is not one JSON value")


def _compile(rules, hash_function, max_depth):
    """(nodes, height, max_depth) of checked rules. nodes[0] is the root object's; a node is a
    list of edges (name: UTF-8 bytes, strategy: 0 or a code, n, replacement, child node or -1).
    An edge with a strategy ends a rule; one without leads to the child node. height is the
    longest path kept: how many objects deep a match can lie."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise TypeError(f"max_depth must be an int, not {type(max_depth).__name__}")
    if max_depth < 0:
        raise ValueError(f"max_depth must be 0 or more, not {max_depth}")
    max_depth = min(max_depth, sys.maxsize)
    if hash_function is not None and not callable(hash_function):
        raise TypeError(f"hash_function must be callable, not {type(hash_function).__name__}")
    try:
        rules = list(rules)
    except TypeError:
        raise TypeError(f"rules must be a list of (path, strategy, n, replacement), not {type(rules).__name__}") from None
    by_path = {}
    for index, rule in enumerate(rules):
        where = f"rule {index}"
        if not isinstance(rule, tuple) or len(rule) != 4:
            raise TypeError(f"{where}: a rule is a tuple (path, strategy, n, replacement), not {rule!r}")
        path, strategy, n, replacement = rule
        if not isinstance(path, tuple) or not all(isinstance(name, str) for name in path):
            raise TypeError(f"{where}: the path must be a tuple of member names (str), not {path!r}")
        if not path:
            raise ValueError(f"{where}: the path is empty; a path names at least one member of the root object")
        if isinstance(strategy, bool) or strategy not in _STRATEGY_NAMES:
            raise ValueError(f"{where}: unknown strategy {strategy!r}; strategies are "
                             + ", ".join(f"{code} ({name})" for code, name in _STRATEGY_NAMES.items()))
        if strategy in (KEEP_LAST, KEEP_FIRST):
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"{where}: n must be an int, not {type(n).__name__}")
            if n < 0:
                raise ValueError(f"{where}: n must be 0 or more, not {n}")
            n = min(n, sys.maxsize)
        else:
            n = 0
        if strategy == REDACT:
            if not isinstance(replacement, bytes):
                raise TypeError(f"{where}: the replacement must be bytes (JSON text), not {type(replacement).__name__}")
            if not _is_one_value(bytes(replacement)):
                raise ValueError(f"{where}: the replacement {replacement[:60]!r} is not one JSON value")
            replacement = bytes(replacement)
        else:
            replacement = None
        if strategy == HASH and hash_function is None:
            raise ValueError(f"{where}: HASH needs a hash_function")
        names = tuple(name.encode("utf-8", "surrogatepass") for name in path)
        if names in by_path:
            raise ValueError(f"{where}: the path {path!r} is listed twice; merge the rules first")
        by_path[names] = (strategy, n, replacement)
    nodes = [[]]
    edges = {}  # (node, name) -> its edge
    height = 0
    # Shorter paths first: a rule under another rule's path is moot, the outer one replaces it all.
    for names in sorted(by_path, key=len):
        node = 0
        for name in names[:-1]:
            edge = edges.get((node, name))
            if edge is None:
                edge = [name, 0, 0, None, len(nodes)]
                nodes.append([])
                nodes[node].append(edge)
                edges[(node, name)] = edge
            elif edge[1]:
                break
            node = edge[4]
        else:
            edge = [names[-1], *by_path[names], -1]
            nodes[node].append(edge)
            edges[(node, names[-1])] = edge
            height = max(height, len(names))
    return [[tuple(edge) for edge in node] for node in nodes], height, max_depth


# The walker


_WS = re.compile(rb"[ \t\n\r]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_PLAIN = re.compile(rb'[^"\\\x00-\x1f]*')  # up to a quote, a backslash or a control character
_ESCAPE = re.compile(rb'\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})')
_KEY_ESCAPE = re.compile(
    rb"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\(.)", re.DOTALL
)
_SIMPLE_ESCAPES = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r",
                   b"t": b"\t"}
_LITERALS = {0x74: b"true", 0x66: b"false", 0x6E: b"null"}
_OBJECT, _ARRAY = 0x7B, 0x5B  # an open container's opening byte; its closing byte is 2 more
_QUOTE, _BACKSLASH, _COMMA, _COLON = 0x22, 0x5C, 0x2C, 0x3A

_INVALID = None


def _string(data: bytes, pos: int):
    """(the position after the string whose opening quote is before pos, whether it has an
    escape), or (-1, False) if it is not a valid string."""
    start = pos
    escaped = False
    plain = _PLAIN.match
    while True:
        pos = plain(data, pos).end()
        if pos >= len(data):
            return -1, False
        byte = data[pos]
        if byte == _QUOTE:
            break
        if byte != _BACKSLASH:  # a control character
            return -1, False
        found = _ESCAPE.match(data, pos)
        if found is None:
            return -1, False
        pos = found.end()
        escaped = True
    content = data[start:pos]
    if not content.isascii():
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return -1, False
    return pos + 1, escaped


def _decode_escape(found) -> bytes:
    if found.group(1):
        high, low = int(found.group(1), 16), int(found.group(2), 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)).encode("utf-8")
    if found.group(3):
        return chr(int(found.group(3), 16)).encode("utf-8", "surrogatepass")
    return _SIMPLE_ESCAPES[found.group(4)]


class _Frame:
    """An open object that rules may match members of."""

    __slots__ = ("node", "edge", "value_start", "value_end", "run_start", "run_from", "run_end", "kept")

    def __init__(self, node):
        self.node = node
        self.edge = None  # the rule of the member whose value is being read
        self.value_start = 0
        self.value_end = 0  # the end of the last member's value
        self.run_start = -1  # the key of the first of the dropped members not yet removed
        self.run_from = -1  # the end of the kept member's value before that run, or -1
        self.run_end = 0
        self.kept = False  # a member of this object is kept


def _walk(data: bytes, nodes, max_depth: int):
    """(edits, fallback) for a valid document, or None. An edit is (start, end, edge): the
    bytes start:end are replaced as the edge's rule says, or removed when edge is None."""
    n = len(data)
    edits = []
    fallback = False
    kinds = []  # the opening byte of each open container
    frames = []  # the open objects rules may match in: kinds[:len(frames)]
    next_node = 0 if nodes and nodes[0] else -1  # the node of an object about to be opened
    value_escaped = False
    want_key = False
    ws = _WS.match
    pos = ws(data, 0).end()
    while True:
        if want_key:
            want_key = False
            if pos >= n or data[pos] != _QUOTE:
                return _INVALID
            key_start = pos
            pos, escaped = _string(data, pos + 1)
            if pos < 0:
                return _INVALID
            key_end = pos
            pos = ws(data, pos).end()
            if pos >= n or data[pos] != _COLON:
                return _INVALID
            pos = ws(data, pos + 1).end()
            next_node = -1
            if len(frames) == len(kinds):
                frame = frames[-1]
                name = data[key_start + 1 : key_end - 1]
                if escaped:
                    name = _KEY_ESCAPE.sub(_decode_escape, name)
                edge = nodes[frame.node].get(name)
                if edge is not None and edge[1] == DROP:
                    if frame.run_start < 0:
                        frame.run_start = key_start
                        frame.run_from = frame.value_end if frame.kept else -1
                    frame.edge = edge
                else:
                    if frame.run_start >= 0:
                        edits.append((frame.run_start, key_start, None))
                        frame.run_start = -1
                    frame.kept = True
                    if edge is not None:
                        if edge[1]:
                            frame.edge = edge
                            frame.value_start = pos
                        else:
                            next_node = edge[4]
        # One value at pos.
        if pos >= n:
            return _INVALID
        byte = data[pos]
        if byte == _QUOTE:
            pos, value_escaped = _string(data, pos + 1)
            if pos < 0:
                return _INVALID
        elif byte == _OBJECT or byte == _ARRAY:
            if len(kinds) >= max_depth:
                return _INVALID
            kinds.append(byte)
            if next_node >= 0 and byte == _OBJECT:
                frames.append(_Frame(next_node))
            next_node = -1
            pos = ws(data, pos + 1).end()
            if pos < n and data[pos] == byte + 2:  # empty
                pos += 1
                kinds.pop()
                if len(frames) > len(kinds):
                    frames.pop()
            elif byte == _OBJECT:
                want_key = True
                continue
            else:
                continue
        elif byte in _LITERALS:
            literal = _LITERALS[byte]
            if not data.startswith(literal, pos):
                return _INVALID
            pos += len(literal)
        else:
            found = _NUMBER.match(data, pos)
            if found is None:
                return _INVALID
            pos = found.end()
        next_node = -1
        # After a value: close containers, or find the next value or key.
        while True:
            if not kinds:
                pos = ws(data, pos).end()
                return (edits, fallback) if pos == n else _INVALID
            active = len(frames) == len(kinds)
            if active:
                frame = frames[-1]
                frame.value_end = pos
                edge = frame.edge
                if edge is not None:
                    frame.edge = None
                    strategy = edge[1]
                    if strategy == DROP:
                        frame.run_end = pos
                    elif strategy >= KEEP_LAST and (data[frame.value_start] != _QUOTE or value_escaped):
                        fallback = True
                    else:
                        edits.append((frame.value_start, pos, edge))
            pos = ws(data, pos).end()
            if pos >= n:
                return _INVALID
            byte = data[pos]
            if byte == _COMMA:
                pos = ws(data, pos + 1).end()
                if kinds[-1] == _OBJECT:
                    want_key = True
                break
            if byte != kinds[-1] + 2:
                return _INVALID
            if active:
                if frame.run_start >= 0:
                    edits.append((frame.run_from if frame.run_from >= 0 else frame.run_start, frame.run_end, None))
                frames.pop()
            kinds.pop()
            pos += 1


def _is_one_value(data: bytes) -> bool:
    return _walk(data, [{}], 1 << 20) is not None


def _keep(content: bytes, n: int, last: bool) -> bytes:
    text = content.decode("utf-8")
    size = len(text)
    if size <= n:
        kept = "*" * size
    elif last:
        kept = "*" * (size - n) + text[size - n :]
    else:
        kept = text[:n] + "*" * (size - n)
    return b'"' + kept.encode("utf-8") + b'"'


class Pseudonyms:
    """A hash_function the compiled twin runs without Python (ext/pseudonym.pxd). See jsonmask.pyi."""

    __slots__ = ("key", "_keyed")

    def __init__(self, key):
        if not isinstance(key, bytes):
            raise TypeError(f"the key must be bytes, not {type(key).__name__}")
        self.key = key
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied per value: half the cost of keying anew

    def __call__(self, literal):
        mac = self._keyed.copy()
        mac.update(literal)
        return b'"h:' + mac.digest()[:16].hex().encode() + b'"'


class FieldMasker:
    """Member-path mask rules, applied to JSON documents byte by byte. See jsonmask.pyi."""

    __slots__ = ("_nodes", "_hash", "_max_depth")

    def __init__(self, rules, hash_function=None, max_depth=1024):
        if getattr(self, "_nodes", None) is not None:
            raise _initialized_twice()
        nodes, _, max_depth = _compile(rules, hash_function, max_depth)
        self._nodes = [{edge[0]: edge for edge in node} for node in nodes]
        self._hash = hash_function
        self._max_depth = max_depth

    native_mask_value = None  # no C function here: the record core calls mask() value by value
    native_mask_plain = None

    def mask_all(self, values):
        out = []
        pending = []
        for index, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            result = self.mask(value) if isinstance(value, bytes) else None
            if result is None or result is FALLBACK:
                pending.append(index)
                out.append(value)
            else:
                out.append(result)
        return out, pending

    def mask(self, value):
        if not isinstance(value, bytes):
            raise _not_bytes(value)
        walked = _walk(value, self._nodes, self._max_depth)
        if walked is None:
            return None
        edits, fallback = walked
        if fallback:
            return FALLBACK
        if not edits:
            return value
        parts = []
        done = 0
        for start, end, edge in edits:
            parts.append(value[done:start])
            done = end
            if edge is None:
                continue
            strategy = edge[1]
            if strategy == REDACT:
                parts.append(edge[3])
            elif strategy == NULL:
                parts.append(b"null")
            elif strategy == HASH:
                out = self._hash(value[start:end])
                if not isinstance(out, bytes):
                    raise _hash_not_bytes(out)
                if _walk(out, [{}], self._max_depth) is None:
                    raise _hash_not_json(out)
                parts.append(out)
            else:
                parts.append(_keep(value[start + 1 : end - 1], edge[2], strategy == KEEP_LAST))
        parts.append(value[done:])
        return b"".join(parts)
