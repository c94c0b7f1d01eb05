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
# member "number" of the object that is the value of the root's member "card". States (see
# jsonmask.pyi) reach into arrays too, by index or every element, and to any depth. Keys are
# compared after decoding their escapes (a surrogate pair is one code point; a lone surrogate
# escape compares as its 3-byte surrogatepass form, as the names are encoded); every occurrence
# of a duplicate key is masked. Elements are counted as they came, dropped ones included.
#
# DROP removes a member's key, colon and value, the whitespace between them, and one comma: the
# one after the value with the whitespace up to the next key, or for the last member the one
# before the key with the whitespace back to the previous value. `{"a":1 , "b":2}` without b is
# `{"a":1}`, without a `{"b":2}`; without its only member an object keeps what whitespace it held.
# An array's element goes the same way: `[1 , 2]` without element 1 is `[1]`.
"""Pure-Python twin of jsonmask.pyx: the reference for differential tests, and the fallback
when BROKERGUARD_NO_EXTENSIONS=1.

FieldMasker applies mask rules (member paths, or the states of a path automaton) to the bytes
of a JSON document in one pass and changes only the bytes of the values it masks: every other
byte, whitespace included, stays as it was.

Checking rules and states, and its messages, live here and only here: jsonmask.pyx compiles
with `_compile` too, so both twins refuse the same input with the same words.
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


# Rules and states: checked and compiled once, for both twins


def _not_bytes(value) -> TypeError:
    return TypeError(f"FieldMasker.mask takes bytes, not {type(value).__name__}")


def _initialized_twice() -> TypeError:
    return TypeError("a FieldMasker is initialized once; make a new one for other rules")


def _hash_not_bytes(out) -> TypeError:
    return TypeError(f"hash_function must return bytes (a JSON string literal), not {type(out).__name__}")


def _hash_not_json(out: bytes) -> ValueError:
    return ValueError(f"hash_function returned {out[:60]!r}, which is not one JSON value")


def _check_mask(where, strategy, n, replacement, hash_function):
    """(strategy, n, replacement) checked: n is 0 but for KEEP_*, replacement None but for REDACT."""
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
    return strategy, n, replacement


def _compile(rules, hash_function, max_depth, states=None):
    """(states, max_depth), checked, from either rules or states (see jsonmask.pyi). A compiled
    state is (strategy or 0, n, replacement, members: ((name as UTF-8 bytes, target), ...),
    elements: ((index, target), ...), other: target or -1); states[0] is the root's."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise TypeError(f"max_depth must be an int, not {type(max_depth).__name__}")
    if max_depth < 0:
        raise ValueError(f"max_depth must be 0 or more, not {max_depth}")
    max_depth = min(max_depth, sys.maxsize)
    if hash_function is not None and not callable(hash_function):
        raise TypeError(f"hash_function must be callable, not {type(hash_function).__name__}")
    if states is not None:
        if not isinstance(rules, (tuple, list)) or rules:
            raise TypeError("give rules or states, not both")
        return _checked_states(states, hash_function), max_depth
    return _rule_states(rules, hash_function), max_depth


def _rule_states(rules, hash_function):
    """The states of member-path rules: a tree, one state per member named."""
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
        mask = _check_mask(where, strategy, n, replacement, hash_function)
        names = tuple(name.encode("utf-8", "surrogatepass") for name in path)
        if names in by_path:
            raise ValueError(f"{where}: the path {path!r} is listed twice; merge the rules first")
        by_path[names] = mask
    states = [[0, 0, None, {}]]  # strategy, n, replacement, members
    # Shorter paths first: a rule under another rule's path is moot, the outer one replaces it all.
    for names in sorted(by_path, key=len):
        state = states[0]
        for name in names[:-1]:
            target = state[3].get(name)
            if target is None:
                target = state[3][name] = len(states)
                states.append([0, 0, None, {}])
            elif states[target][0]:
                break
            state = states[target]
        else:
            state[3][names[-1]] = len(states)
            states.append([*by_path[names], {}])
    return [(strategy, n, replacement, tuple(members.items()), (), -1)
            for strategy, n, replacement, members in states]


def _checked_states(states, hash_function):
    try:
        states = list(states)
    except TypeError:
        raise TypeError(f"states must be a list of (mask, members, elements, other), not {type(states).__name__}") \
            from None
    if not states:
        raise ValueError("states is empty; states[0] is the root's")
    count = len(states)

    def target_of(where, target):
        if isinstance(target, bool) or not isinstance(target, int):
            raise TypeError(f"{where}: a target is a state's index (int), not {type(target).__name__}")
        if not -1 <= target < count:
            raise ValueError(f"{where}: no state {target}; there are {count}")
        return target

    checked = []
    for index, state in enumerate(states):
        where = f"state {index}"
        if not isinstance(state, tuple) or len(state) != 4:
            raise TypeError(f"{where}: a state is a tuple (mask, members, elements, other), not {state!r}")
        mask, members, elements, other = state
        if mask is None:
            mask = (0, 0, None)
        elif index == 0:
            raise ValueError("state 0: the root is not masked here; its mask must be None")
        elif not isinstance(mask, tuple) or len(mask) != 3:
            raise TypeError(f"{where}: a mask is None or a tuple (strategy, n, replacement), not {mask!r}")
        else:
            mask = _check_mask(where, *mask, hash_function)
        names = {}
        for name, target in members:
            if not isinstance(name, str):
                raise TypeError(f"{where}: a member name is a str, not {type(name).__name__}")
            encoded = name.encode("utf-8", "surrogatepass")
            if encoded in names:
                raise ValueError(f"{where}: the member {name!r} is listed twice")
            names[encoded] = target_of(f"{where}, member {name!r}", target)
        indexes = {}
        for position, target in elements:
            if isinstance(position, bool) or not isinstance(position, int):
                raise TypeError(f"{where}: an element index is an int, not {type(position).__name__}")
            if position < 0:
                raise ValueError(f"{where}: element index {position}: indexes count from the front, 0 on")
            if position in indexes:
                raise ValueError(f"{where}: element {position} is listed twice")
            indexes[position] = target_of(f"{where}, element {position}", target)
        checked.append((*mask, tuple(names.items()), tuple(indexes.items()), target_of(f"{where}, other", other)))
    return checked


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
# A state as the walker reads it: _compile's tuple with dicts, and whether containers of each kind
# have members or elements that lead somewhere (else no frame is opened for them).
_STRATEGY, _N, _REPLACEMENT, _MEMBERS, _ELEMENTS, _OTHER, _OBJECTS, _ARRAYS = range(8)


def _walk_states(states):
    return [(strategy, n, replacement, dict(members), dict(elements), other, bool(members) or other >= 0,
             bool(elements) or other >= 0) for strategy, n, replacement, members, elements, other in states]


_NO_RULES = _walk_states([(0, 0, None, (), (), -1)])


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
    """An open container that rules may match members or elements of."""

    __slots__ = ("state", "index", "target", "value_start", "value_end", "run_start", "run_from", "run_end", "kept")

    def __init__(self, state):
        self.state = state
        self.index = 0  # in an array: the next element's
        self.target = None  # the state of the member or element whose value is being read, if it masks
        self.value_start = 0
        self.value_end = 0  # the end of the last member's or element's value
        self.run_start = -1  # the start of the first of the dropped members or elements not yet removed
        self.run_from = -1  # the end of the kept value before that run, or -1
        self.run_end = 0
        self.kept = False  # a member or element of this container is kept


def _walk(data: bytes, states, max_depth: int):
    """(edits, fallback) for a valid document, or None. An edit is (start, end, state): the
    bytes start:end are replaced as the state's mask says, or removed when state is None."""
    n = len(data)
    edits = []
    fallback = False
    kinds = []  # the opening byte of each open container
    frames = []  # the open containers rules may match in: kinds[:len(frames)]
    next_state = 0 if states[0][_OBJECTS] or states[0][_ARRAYS] else -1  # of a container about to be opened
    value_escaped = False
    starting = False  # a member or element starts at pos
    ws = _WS.match
    pos = ws(data, 0).end()
    while True:
        if starting:
            starting = False
            start = pos
            active = len(frames) == len(kinds)
            if kinds[-1] == _OBJECT:
                if pos >= n or data[pos] != _QUOTE:
                    return _INVALID
                pos, escaped = _string(data, pos + 1)
                if pos < 0:
                    return _INVALID
                key_end = pos
                pos = ws(data, pos).end()
                if pos >= n or data[pos] != _COLON:
                    return _INVALID
                pos = ws(data, pos + 1).end()
                if active:
                    frame = frames[-1]
                    state = states[frame.state]
                    name = data[start + 1 : key_end - 1]
                    if escaped:
                        name = _KEY_ESCAPE.sub(_decode_escape, name)
                    target = state[_MEMBERS].get(name, state[_OTHER])
            elif active:
                frame = frames[-1]
                state = states[frame.state]
                target = state[_ELEMENTS].get(frame.index, state[_OTHER])
                frame.index += 1
            next_state = -1
            if active:
                strategy = states[target][_STRATEGY] if target >= 0 else 0
                if strategy == DROP:
                    if frame.run_start < 0:
                        frame.run_start = start
                        frame.run_from = frame.value_end if frame.kept else -1
                    frame.target = target
                else:
                    if frame.run_start >= 0:
                        edits.append((frame.run_start, start, None))
                        frame.run_start = -1
                    frame.kept = True
                    if strategy:
                        frame.target = target
                        frame.value_start = pos
                    else:
                        next_state = target
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
            if next_state >= 0 and states[next_state][_OBJECTS if byte == _OBJECT else _ARRAYS]:
                frames.append(_Frame(next_state))
            next_state = -1
            pos = ws(data, pos + 1).end()
            if pos < n and data[pos] == byte + 2:  # empty
                pos += 1
                kinds.pop()
                if len(frames) > len(kinds):
                    frames.pop()
            else:
                starting = True
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
        next_state = -1
        # After a value: close containers, or find the next value or key.
        while True:
            if not kinds:
                pos = ws(data, pos).end()
                return (edits, fallback) if pos == n else _INVALID
            active = len(frames) == len(kinds)
            if active:
                frame = frames[-1]
                frame.value_end = pos
                target = frame.target
                if target is not None:
                    frame.target = None
                    strategy = states[target][_STRATEGY]
                    if strategy == DROP:
                        frame.run_end = pos
                    elif strategy >= KEEP_LAST and (data[frame.value_start] != _QUOTE or value_escaped):
                        fallback = True
                    else:
                        edits.append((frame.value_start, pos, target))
            pos = ws(data, pos).end()
            if pos >= n:
                return _INVALID
            byte = data[pos]
            if byte == _COMMA:
                pos = ws(data, pos + 1).end()
                starting = True
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
    return _walk(data, _NO_RULES, 1 << 20) is not None


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
    """Mask rules applied to JSON documents byte by byte. See jsonmask.pyi."""

    __slots__ = ("_states", "_hash", "_max_depth")

    def __init__(self, rules=(), hash_function=None, max_depth=1024, *, states=None):
        if getattr(self, "_states", None) is not None:
            raise _initialized_twice()
        states, max_depth = _compile(rules, hash_function, max_depth, states)
        self._states = _walk_states(states)
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
        walked = _walk(value, self._states, self._max_depth)
        if walked is None:
            return None
        edits, fallback = walked
        if fallback:
            return FALLBACK
        if not edits:
            return value
        parts = []
        done = 0
        for start, end, target in edits:
            parts.append(value[done:start])
            done = end
            if target is None:
                continue
            strategy, n, replacement = self._states[target][:3]
            if strategy == REDACT:
                parts.append(replacement)
            elif strategy == NULL:
                parts.append(b"null")
            elif strategy == HASH:
                out = self._hash(value[start:end])
                if not isinstance(out, bytes):
                    raise _hash_not_bytes(out)
                if _walk(out, _NO_RULES, self._max_depth) is None:
                    raise _hash_not_json(out)
                parts.append(out)
            else:
                parts.append(_keep(value[start + 1 : end - 1], n, strategy == KEEP_LAST))
        parts.append(value[done:])
        return b"".join(parts)
