"""Mask profiles: hide parts of record values before they travel on.

A profile comes from rules files as plain data and names JSON paths with a strategy each (its
own, or those of path sets it lists by name), and detectors (both from
brokerguard.content.detectors) that are applied to every string value and to values that are
text but not JSON. `compile_profile` checks the spec and compiles the paths once into
an automaton; `MaskProfile.mask_values` applies it to the values of one batch.

Guarantees:
- A value nothing was masked in is returned as the very bytes object it came in as.
- Field rules are applied by a native walker in the value's bytes (the paths compiled into an
  automaton it runs): only the masked values change, every other byte (spacing, number spelling,
  key order) stays as it came. Profiles it cannot run (a rule on `$` itself, an index from the
  end such as `[-1]`), and what it leaves to them (escaped strings, non-string values under keep
  or hash), parse the value with orjson and write it back as compact JSON, keys in their
  original order.
- A value that cannot be masked (see `mask_values`) is never returned unmasked: it is reported
  and withheld, or replaced by `UNMASKABLE`, as the profile says.
- Rules deeper in a document apply before rules on the objects that hold them; when several
  rules hit the same place the one that reveals least wins (drop > null > redact > hash > keep).

Paths: `$` the root, `.name` or `['name']` a member, `[3]` / `[-1]` an element, `[*]` or `.*`
every member or element, `..name` the member `name` at any depth. A path that is not there in a
value is no error: nothing happens. Detectors see string values only, not object keys or numbers.
The walker masks every occurrence of a duplicated key; orjson reads duplicates last-key-wins.
orjson reads an integer beyond 64 bits as a float, so on its path such a document cannot be
written back exactly: it passes as it came when nothing in it needs masking, gets its detectors
applied to its text when only detectors matched, and is unmaskable when a field rule applies to
it (the walker has no such limit: it never reads numbers).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from brokerguard import _native
from brokerguard._native import FALLBACK, FieldMasker

from brokerguard.content.detectors import TEXT_STRATEGIES, Detector, DetectorSet, Replacer, Scanner
from brokerguard.content.errors import ContentSpecError, DetectorError, check_keys, did_you_mean, type_word

__all__ = ["UNMASKABLE", "Mask", "MaskProfile", "check_field_rules", "combine", "compile_profile", "parse_path"]

UNMASKABLE = b'"[REDACTED: not maskable]"'
STRATEGIES = ("redact", "keep_last", "keep_first", "null", "drop", "hash")
ON_UNMASKABLE = ("refuse", "redact")
PROFILE_KEYS = ("description", "fields", "paths", "detectors", "on_unmaskable")
FIELD_KEYS = ("path", "strategy", "n", "with")
DETECTOR_KEYS = ("name", "strategy", "n", "with")  # a detector's or a path set's entry in a profile
# How much each strategy reveals, least last: the higher rank wins where rules meet.
_RANK = {"keep_last": 1, "keep_first": 1, "hash": 2, "redact": 3, "null": 4, "drop": 5}
_PATH_HINT = "write paths like $.card.number, $['a.b'], $.items[*].note, $.items[0] or $..ssn"

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError


@dataclass(frozen=True, slots=True)
class Mask:
    """One strategy with its settings. `key` is the HMAC key of `hash`."""

    strategy: str
    n: int = 0
    text: str = "[REDACTED]"
    key: bytes | None = field(default=None, repr=False)

    @property
    def rank(self) -> int:
        return _RANK[self.strategy]


def _least_revealing(a: Mask, b: Mask) -> Mask:
    if a.rank != b.rank:
        return a if a.rank > b.rank else b
    if a.strategy != b.strategy:  # keep_first against keep_last: keep nothing
        return Mask("keep_last", 0)
    if a.strategy in ("keep_last", "keep_first"):
        return a if a.n <= b.n else b
    return a


# -- strategies --------------------------------------------------------------------------------


def _text_form(value: Any) -> str:
    return value if type(value) is str else _dumps(value).decode()


class _Pseudonyms:
    """`h:` and 32 hex digits of HMAC-SHA256(key, canonical JSON of the value).

    Canonical JSON (sorted keys) so equal values give equal pseudonyms wherever they appear.
    `literal` makes them from JSON text (quoted): the walker computes that one itself, and a
    JSON string literal without escapes (all it hashes) is already its string's canonical JSON.
    """

    def __init__(self, key: bytes) -> None:
        self.literal = _native.Pseudonyms(key)

    def __call__(self, value: Any) -> str:
        return self.of_json(_dumps(value, option=orjson.OPT_SORT_KEYS))

    def of_json(self, canonical: bytes) -> str:
        return self.literal(canonical)[1:-1].decode()


def _field_function(mask: Mask) -> Callable[[Any], Any] | None:
    """What a field rule does to a value; None for `drop`, which its container does."""
    strategy, n = mask.strategy, mask.n
    if strategy == "drop":
        return None
    if strategy == "null":
        return lambda value: None
    if strategy == "redact":
        text = mask.text
        return lambda value: text
    if strategy == "hash":
        assert mask.key
        return _Pseudonyms(mask.key)
    if strategy == "keep_last":
        def keep_last(value: Any) -> str:
            text = value if type(value) is str else _text_form(value)
            size = len(text)
            return "*" * size if size <= n else "*" * (size - n) + text[size - n:]
        return keep_last

    def keep_first(value: Any) -> str:
        text = value if type(value) is str else _text_form(value)
        size = len(text)
        return "*" * size if size <= n else text[:n] + "*" * (size - n)
    return keep_first


_GENERATED_DEPTH = 12  # Python allows 20 nested blocks; deeper member paths use the automaton


def _member_function(rules: Sequence[_Rule]) -> Callable[[Any], bool]:
    """One function that applies rules of member names only to a document in place and says
    whether it changed anything: a tree of plain lookups, inner members before their holders.

    Names and masks reach the generated code as bound variables, never as source text.
    """
    tree: dict[str, list[Any]] = {}  # name -> [mask or None, children]
    for rule in rules:
        if not rule.segments:
            continue
        level = tree
        entry: list[Any] = []
        for _, name in rule.segments:
            entry = level.setdefault(name, [None, {}])
            level = entry[1]
        entry[0] = rule.mask if entry[0] is None else _least_revealing(entry[0], rule.mask)
    bound: list[Any] = []
    lines = [" def apply(doc):", "  changed = False", "  if type(doc) is dict:"]

    def bind(value: Any) -> str:
        bound.append(value)
        return f"v{len(bound) - 1}"

    def emit(level: dict[str, list[Any]], holder: str, depth: int) -> None:
        pad = " " * (depth + 2)
        for name, (mask, children) in level.items():
            key = bind(name)
            if children:
                inner = f"n{depth}"
                lines.append(f"{pad}{inner} = {holder}.get({key})")
                lines.append(f"{pad}if type({inner}) is dict:")
                emit(children, inner, depth + 1)
            if mask is None:
                continue
            lines.append(f"{pad}if {key} in {holder}:")
            if mask.strategy == "drop":
                lines.append(f"{pad} del {holder}[{key}]")
            elif mask.strategy in ("null", "redact"):
                lines.append(f"{pad} {holder}[{key}] = {bind(None if mask.strategy == 'null' else mask.text)}")
            else:
                lines.append(f"{pad} {holder}[{key}] = {bind(_field_function(mask))}({holder}[{key}])")
            lines.append(f"{pad} changed = True")

    emit(tree, "doc", 1)
    lines.append("  return changed")
    # Bound values arrive as the factory's arguments: closure cells are the quickest to read.
    lines.insert(0, f"def make({', '.join(f'v{index}' for index in range(len(bound)))}):")
    lines.append(" return apply")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<mask profile>", "exec"), namespace)
    return namespace["make"](*bound)


def _star(text: str, n: int, last: bool) -> str:
    """Letters and digits of `text` starred except the last (or first) n; separators stay."""
    chars = list(text)
    keep = n if sum(char.isalnum() for char in chars) > n else 0
    for index in (range(len(chars) - 1, -1, -1) if last else range(len(chars))):
        if chars[index].isalnum():
            if keep:
                keep -= 1
            else:
                chars[index] = "*"
    return "".join(chars)


def _text_replacer(mask: Mask) -> Replacer:
    """What a detector's mask puts in place of matched UTF-8 text."""
    strategy, n = mask.strategy, mask.n
    if strategy == "redact":
        constant = mask.text.encode("utf-8")
        return lambda found: constant
    if strategy == "hash":
        assert mask.key
        pseudonym = _Pseudonyms(mask.key)
        return lambda found: pseudonym(found.decode("utf-8")).encode()
    last = strategy == "keep_last"
    return lambda found: _star(found.decode("utf-8"), n, last).encode("utf-8")


# -- paths -------------------------------------------------------------------------------------

Segment = tuple[str, Any]  # ("key", name) | ("index", int) | ("each", None) | ("deep", name)

_NAME = re.compile(r"[A-Za-z0-9_\-\u0080-\U0010FFFF]+")
_INDEX = re.compile(r"\[\s*(-?[0-9]+)\s*\]")
_EACH = re.compile(r"\[\s*\*\s*\]")
_QUOTED = re.compile(r"""\[\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\s*\]""")


def parse_path(text: str) -> tuple[Segment, ...]:
    """The segments of a path; ValueError saying what is wrong and at which character."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise ValueError(f"a path starts with `$` (the whole value); {_PATH_HINT}")
    segments: list[Segment] = []
    pos = 1
    while pos < len(text):
        deep = text.startswith("..", pos)
        if deep or text[pos] == ".":
            pos += 2 if deep else 1
            if not deep and text.startswith("*", pos):
                segments.append(("each", None))
                pos += 1
                continue
            name = _NAME.match(text, pos)
            if name:
                segments.append(("deep" if deep else "key", name.group()))
                pos = name.end()
                continue
            if not (deep and text.startswith("[", pos)):
                raise ValueError(f"expected a name at character {pos + 1}; {_PATH_HINT}")
        if text.startswith("[", pos):
            if quoted := _QUOTED.match(text, pos):
                raw = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
                segments.append(("deep" if deep else "key", re.sub(r"\\(.)", r"\1", raw)))
                pos = quoted.end()
                continue
            if deep:
                raise ValueError(f"`..` takes a name (`..ssn` or `..['a b']`), at character {pos + 1}")
            if each := _EACH.match(text, pos):
                segments.append(("each", None))
                pos = each.end()
                continue
            if index := _INDEX.match(text, pos):
                segments.append(("index", int(index.group(1))))
                pos = index.end()
                continue
            raise ValueError(f"`[` at character {pos + 1} must hold *, an index or a quoted name; {_PATH_HINT}")
        raise ValueError(f"unexpected `{text[pos]}` at character {pos + 1}; {_PATH_HINT}")
    return tuple(segments)


# -- the compiled automaton --------------------------------------------------------------------


class _Node:
    """A path position; several can be live at once (`[*]`, `..`), hence the automaton below."""

    __slots__ = ("keys", "indexes", "every", "mask")

    def __init__(self) -> None:
        self.keys: dict[str, list[_Node]] = {}
        self.indexes: dict[int, list[_Node]] = {}
        self.every: list[_Node] = []
        self.mask: Mask | None = None


class _State:
    """The set of path positions a place in a document is at: what to do there, where to go next."""

    __slots__ = ("members", "mask", "drop", "apply", "named", "named_items", "other", "indexed", "descends")

    def __init__(self, members: frozenset[_Node]) -> None:
        self.members = members
        self.mask: Mask | None = None
        self.drop = False
        self.apply: Callable[[Any], Any] | None = None
        self.named: dict[str, _State] = {}
        self.named_items: tuple[tuple[str, _State], ...] = ()
        self.other: _State | None = None  # every member or element not named or indexed
        self.indexed: dict[int, _State] = {}
        self.descends = False


class _Automaton:
    """Deterministic states over the path tree, built once; `union` adds one for a rare case."""

    def __init__(self, rules: Sequence[tuple[tuple[Segment, ...], Mask]]) -> None:
        root = _Node()
        for segments, mask in rules:
            node = root
            for kind, arg in segments:
                following = _Node()
                if kind == "key":
                    node.keys.setdefault(arg, []).append(following)
                elif kind == "index":
                    node.indexes.setdefault(arg, []).append(following)
                elif kind == "each":
                    node.every.append(following)
                else:  # `..name`: the member at this level, or at any level below through a loop
                    below = _Node()
                    below.every.append(below)
                    below.keys[arg] = [following]
                    node.every.append(below)
                    node.keys.setdefault(arg, []).append(following)
                node = following
            node.mask = mask if node.mask is None else _least_revealing(node.mask, mask)
        self._states: dict[frozenset[_Node], _State] = {}
        self.root = self.state(frozenset((root,)))
        assert self.root is not None

    def state(self, members: frozenset[_Node]) -> _State | None:
        if not members:
            return None
        found = self._states.get(members)
        if found is not None:
            return found
        state = self._states[members] = _State(members)
        for node in members:
            if node.mask is not None:
                state.mask = node.mask if state.mask is None else _least_revealing(state.mask, node.mask)
        if state.mask is not None:
            state.drop = state.mask.strategy == "drop"
            state.apply = _field_function(state.mask)
        every = frozenset(target for node in members for target in node.every)
        for name in sorted({name for node in members for name in node.keys}):
            targets = frozenset(target for node in members for target in node.keys.get(name, ()))
            state.named[name] = self.state(targets | every)  # type: ignore[assignment]
        for index in sorted({index for node in members for index in node.indexes}):
            targets = frozenset(target for node in members for target in node.indexes.get(index, ()))
            state.indexed[index] = self.state(targets | every)  # type: ignore[assignment]
        state.named_items = tuple(state.named.items())
        state.other = self.state(every)
        state.descends = bool(state.named or state.indexed or state.other)
        return state

    def walker_states(self) -> list[tuple[Any, ...]] | None:
        """The states as the native walker takes them (FieldMasker's `states`, masks as
        (strategy code, n, JSON text of the replacement)); None when it cannot run them: a rule on
        the root, or an index from the end (the walker reads an array once, front to back)."""
        if self.root.mask is not None:
            return None
        numbers: dict[int, int] = {id(self.root): 0}
        order = [self.root]
        for state in order:  # grows as new states are found: breadth first
            if state.mask is not None:
                continue  # the walker masks the value whole and does not look inside
            if any(index < 0 for index in state.indexed):
                return None
            for target in (*state.named.values(), *state.indexed.values(), state.other):
                if target is not None and id(target) not in numbers:
                    numbers[id(target)] = len(order)
                    order.append(target)

        def number(state: _State | None) -> int:
            return -1 if state is None else numbers[id(state)]

        return [((_WALKER_STRATEGIES[state.mask.strategy], state.mask.n, _dumps(state.mask.text)), (), (), -1)
                if state.mask is not None else
                (None, tuple((name, number(target)) for name, target in state.named.items()),
                 tuple((index, number(target)) for index, target in state.indexed.items()), number(state.other))
                for state in order]

    def union(self, a: _State, b: _State) -> _State:
        state = self.state(a.members | b.members)
        assert state is not None
        return state

    def apply(self, doc: Any) -> tuple[Any, bool]:
        """`doc` with every rule applied in place (the root may be replaced), and whether any was."""
        root = self.root
        todo: list[tuple[Any, Any, _State]] = []
        # Visiting order: a container's own entry is queued before any entry inside it, and the
        # elements of one list in ascending order, so running the queue backwards applies inner
        # rules first and drops list elements from the end without shifting the rest.
        stack: list[tuple[Any, _State]] = [(doc, root)] if root.descends else []
        while stack:
            node, state = stack.pop()
            kind = type(node)
            if kind is dict:
                other = state.other
                if other is None:
                    for key, sub in state.named_items:
                        if key in node:
                            if sub.mask is not None:
                                todo.append((node, key, sub))
                            if sub.descends:
                                child = node[key]
                                if type(child) is dict or type(child) is list:
                                    stack.append((child, sub))
                else:
                    named = state.named
                    for key, child in node.items():
                        sub = named.get(key, other)
                        if sub.mask is not None:
                            todo.append((node, key, sub))
                        if sub.descends and (type(child) is dict or type(child) is list):
                            stack.append((child, sub))
            elif kind is list:
                size = len(node)
                other = state.other
                chosen: dict[int, _State] = {}
                for index, sub in state.indexed.items():
                    position = index if index >= 0 else index + size
                    if 0 <= position < size:
                        chosen[position] = self.union(chosen[position], sub) if position in chosen else sub
                for position in (range(size) if other is not None else sorted(chosen)):
                    sub = chosen.get(position, other)  # type: ignore[assignment]
                    if sub.mask is not None:
                        todo.append((node, position, sub))
                    child = node[position]
                    if sub.descends and (type(child) is dict or type(child) is list):
                        stack.append((child, sub))
        for container, key, sub in reversed(todo):
            if sub.drop:
                del container[key]
            else:
                container[key] = sub.apply(container[key])  # type: ignore[misc]
        changed = bool(todo)
        if root.apply is not None:
            doc = root.apply(doc)
            changed = True
        return doc, changed


# -- profiles ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    path: str
    segments: tuple[Segment, ...]
    mask: Mask


class MaskProfile:
    """A compiled mask profile. Build with `compile_profile` or `combine`."""

    def __init__(self, name: str, rules: Sequence[_Rule], uses: Sequence[tuple[Detector, Mask]],
                 on_unmaskable: str = "refuse") -> None:
        if on_unmaskable not in ON_UNMASKABLE:
            raise ValueError(f"on_unmaskable must be one of {', '.join(ON_UNMASKABLE)}")
        self.name = name
        self.on_unmaskable = on_unmaskable
        self._rules = tuple(rules)
        self._uses = tuple(uses)
        self._redact_unmaskable = on_unmaskable == "redact"
        self._scanner = Scanner([(detector, _text_replacer(mask)) for detector, mask in uses]) if uses else None
        self._splice = self._scanner is not None and self._scanner.context_free
        # Paths of member names only (the usual case) become one generated function of plain
        # lookups; anything with [*], [i] or .. runs through the automaton.
        self._members: Callable[[Any], bool] | None = None
        self._root: Callable[[Any], Any] | None = None
        self._automaton: _Automaton | None = None
        if all(kind == "key" for rule in self._rules for kind, _ in rule.segments) and \
                all(len(rule.segments) <= _GENERATED_DEPTH for rule in self._rules):
            roots = [rule.mask for rule in self._rules if not rule.segments]
            if roots:
                root_mask = roots[0]
                for mask in roots[1:]:
                    root_mask = _least_revealing(root_mask, mask)
                self._root = _field_function(root_mask)
            if any(rule.segments for rule in self._rules):
                self._members = _member_function(self._rules)
        else:
            self._automaton = _Automaton([(rule.segments, rule.mask) for rule in self._rules])
        self._members_only = self._members is not None and self._root is None and self._scanner is None
        # Values go first through the native walker, which masks in the bytes without parsing into
        # Python objects; what it cannot do exactly (escaped strings, non-string values under
        # keep/hash, invalid JSON) takes the path above, and so do profiles it cannot run at all.
        self._walker = _walker(self._rules, self._automaton) if self._rules else None
        # What settles a value in its bytes before detectors are spliced in: the walker, or
        # without field rules the bare JSON check; None when only the general path can.
        self._settle = self._walker if self._rules else _SYNTAX
        self._search_batch = self._splice and self._settle is not None

    @property
    def uses_hash(self) -> bool:
        """Whether pseudonyms are made: then the key must be the same in every worker and run."""
        return any(rule.mask.strategy == "hash" for rule in self._rules) or \
            any(mask.strategy == "hash" for _, mask in self._uses)

    @property
    def batch_masker(self) -> FieldMasker | None:
        """The native walker, when it alone masks this profile's values: then a batch's values
        can be masked in place (Batch.with_masked_values); None when detectors or root rules
        need the general path."""
        return self._walker if self._scanner is None else None

    @property
    def fields(self) -> tuple[tuple[str, Mask], ...]:
        """(path, mask) of every field rule, as written."""
        return tuple((rule.path, rule.mask) for rule in self._rules)

    @property
    def detectors(self) -> tuple[tuple[str, Mask], ...]:
        """(detector name, mask) in scanning order."""
        return tuple((detector.name, mask) for detector, mask in self._uses)

    def __repr__(self) -> str:
        return f"<MaskProfile {self.name}: {len(self._rules)} fields, {len(self._uses)} detectors>"

    def mask_values(self, values: Sequence[bytes | None]) -> tuple[list[bytes | None], list[tuple[int, str]]]:
        """Masked values in the same order, and (index, reason) for each value that could not be masked.

        None (a null value) stays None. A value that is not JSON (invalid UTF-8, not parseable,
        nested deeper than orjson reads) has field paths that cannot be applied: if the profile
        has detectors and the value is UTF-8 text, the detectors are applied to the text;
        otherwise it is unmaskable. A JSON value with an integer beyond 64 bits is unmaskable
        when a field rule applies to it (the module docstring has the details).

        An unmaskable value is, with `on_unmaskable: refuse`, reported in the failures list with
        None in its place (the caller refuses or withholds the record; it is never delivered
        unmasked); with `on_unmaskable: redact`, replaced by `UNMASKABLE` and not reported.
        Never raises for any content of `values`.
        """
        walker = self._walker
        walked = False
        if type(values) is list and walker is not None and self._scanner is None:
            # The usual profile: one native call for the batch; only what it leaves comes back here.
            out, pending = walker.mask_all(values)
            walked = True
        elif type(values) is list and self._search_batch:
            out, pending = self._detect_batch(values)
        else:
            out, pending = list(values), range(len(values))
        failures: list[tuple[int, str]] = []
        for index in pending:
            value = values[index]
            if value is None:
                continue
            result = self._mask_one(value, walked)
            if type(result) is str:
                if self._redact_unmaskable:
                    out[index] = UNMASKABLE
                else:
                    out[index] = None
                    failures.append((index, result))
            else:
                out[index] = result
        return out, failures

    def _detect_batch(self, values: list[bytes | None]) -> tuple[list[bytes | None], list[int]]:
        """mask_values' first pass for a profile with detectors: the field rules by the walker
        (or only the JSON check, without rules), then one search of the detectors over every
        settled value at once. A value no pattern matches anywhere in, and without escapes, is
        done; the indexes of the rest (matched, escaped, not settled) are returned to go value
        by value. The values are joined by a line feed, which like the edge of a text is no
        word character (the patterns have no anchors: `context_free`), so whatever matches
        inside one value matches there in the joined bytes too; a match running across two
        values only sends the first of them value by value.
        """
        out, pending = self._settle.mask_all(values)  # type: ignore[union-attr]
        settled = [True] * len(values)
        for index in pending:
            settled[index] = False
        owners: list[int] = []
        starts: list[int] = []
        at = 0
        for index, value in enumerate(out):
            if value is None or not settled[index]:
                continue
            if 92 in value:  # a backslash: the strings must be decoded before they are scanned
                pending.append(index)
                continue
            owners.append(index)
            starts.append(at)
            at += len(value) + 1
        joined = b"\n".join([out[index] for index in owners])  # type: ignore[misc]
        candidate = self._scanner.candidate  # type: ignore[union-attr]
        pos = matched = 0
        while (found := candidate(joined, pos)) >= 0:
            owner = bisect.bisect_right(starts, found) - 1
            pending.append(owners[owner])
            matched += 1
            if owner + 1 == len(starts):
                break
            if matched >= 8 and 2 * matched > owner + 1:
                # Most values match: searching each once more only adds to going value by value.
                pending.extend(owners[owner + 1:])
                break
            pos = starts[owner + 1]
        pending.sort()
        return out, pending

    def _mask_one(self, value: bytes, walked: bool) -> bytes | str:
        """One value masked, or why it cannot be; walked: the native walker already had a look."""
        settle = self._settle
        if not walked and settle is not None and type(value) is bytes:
            result = settle.mask(value)
            if result is not None and result is not FALLBACK:
                scanner = self._scanner
                if scanner is None:
                    return result
                if self._splice and 92 not in result:  # no anchors, no backslash: splice in the bytes
                    spliced = _splice(scanner, result)
                    if spliced is not _ACROSS:
                        return result if spliced is None else spliced
        try:
            doc = _loads(value)
        except _JSONDecodeError as err:
            return self._text(value, err)
        try:
            if self._members_only:  # the usual profile, without a call in between
                return _write(value, doc) if self._members(doc) else value
            return self._document(value, doc)
        except Exception as err:  # e.g. hashing a part nested deeper than orjson writes
            return f"value cannot be masked: {type(err).__name__}: {err}"

    def _document(self, raw: bytes, doc: Any) -> bytes | str:
        """The masked bytes of one parsed value, or why it cannot be masked."""
        changed = False
        if self._automaton is None:
            changed = self._members is not None and self._members(doc)
            if self._root is not None:
                doc = self._root(doc)
                changed = True
        else:
            doc, changed = self._automaton.apply(doc)
        scanner = self._scanner
        if scanner is None:
            return _write(raw, doc) if changed else raw
        data = _write(raw, doc) if changed else raw
        if type(data) is str:
            return data
        if self._splice and 92 not in data:  # no backslash: every string stands as it is in the bytes
            spliced = _splice(scanner, data)
            if spliced is not _ACROSS:
                return data if spliced is None else spliced
        # Escaped text, or a match across the document's structure: scan string by string.
        doc, found = _scan_strings(doc, scanner)
        if not found:
            return data
        return _dumps(doc) if changed else self._detected(raw, doc)

    def _detected(self, raw: bytes, doc: Any) -> bytes | str:
        """`doc`, changed by detectors only, written back."""
        if _has_wide_integer(raw):
            # orjson read an integer beyond 64 bits as a float, so the document cannot be written
            # back: its text is masked instead, unless escapes could hide matches from a text scan.
            if 92 in raw:
                return ("value holds an integer beyond 64 bits and escaped text, so neither the document "
                        "nor its text can be masked exactly")
            return self._text(raw, None)
        return _write(raw, doc)

    def _text(self, raw: bytes, err: _JSONDecodeError | None) -> bytes | str:
        """A value that is not JSON masked as text, or why it cannot be masked."""
        if err is not None and self._rules and is_json(raw):
            # JSON that orjson cannot read (a number beyond a double's range): its fields cannot
            # be found, and scanning its text alone would let them through.
            return f"value is JSON that cannot be read whole ({err.msg}), so its fields cannot be masked"
        why = (f"not JSON ({err.msg} at line {err.lineno} column {err.colno})" if err is not None
               else "JSON with an integer beyond 64 bits, which cannot be written back exactly")
        if self._scanner is None:
            return f"value is {why} and the profile has no detectors for text, so it cannot be masked"
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return f"value is {why} and not UTF-8 text, so it cannot be masked"
        found = self._scanner.scan(raw)
        return raw if found is None else found


_SYNTAX = FieldMasker([])  # no rules: only checks that bytes are JSON


def is_json(data: bytes) -> bool:
    """Whether `data` is one JSON value (RFC 8259, UTF-8), read natively without building objects."""
    return _SYNTAX.mask(data) is not None


_WALKER_STRATEGIES = {"redact": _native.MASK_REDACT, "null": _native.MASK_NULL, "drop": _native.MASK_DROP,
                      "keep_last": _native.MASK_KEEP_LAST, "keep_first": _native.MASK_KEEP_FIRST,
                      "hash": _native.MASK_HASH}


def _walker(rules: Sequence[_Rule], automaton: _Automaton | None) -> FieldMasker | None:
    """The native walker for the rules (`automaton`, if built already, is theirs), or None when
    it cannot run them."""
    states = (automaton or _Automaton([(rule.segments, rule.mask) for rule in rules])).walker_states()
    if states is None:
        return None
    hashes = {rule.mask.key for rule in rules if rule.mask.strategy == "hash"}
    assert len(hashes) <= 1, "one profile, one hash key"
    pseudonyms = _Pseudonyms(hashes.pop()).literal if hashes else None
    return FieldMasker(states=states, hash_function=pseudonyms)


def _write(raw: bytes, doc: Any) -> bytes | str:
    """The masked document `doc` read from `raw`, as JSON bytes, or why it cannot be written."""
    if _TWENTY in raw.translate(_SHAPE) and _has_wide_integer(raw):
        # orjson read an integer beyond 64 bits as a float: written back, it would change.
        return "value holds an integer beyond 64 bits, so it cannot be written back exactly after masking"
    try:
        return _dumps(doc)
    except orjson.JSONEncodeError as err:
        return f"the masked value cannot be written as JSON: {err}"


_ACROSS = object()
_JSON_SPACE = b" \t\r\n"


def _splice(scanner: Scanner, data: bytes) -> bytes | None | object:
    """Detector matches inside the string values of JSON `data` (which has no backslash), replaced
    in the bytes themselves; None when there are none; `_ACROSS` when a match reaches across a
    quote, which only scanning each string on its own can settle.

    Without escapes a string's text is the bytes between its quotes, and a quote (not a word
    character) stands where the string's text would start or end: a match found in the bytes
    that lies inside one string is the match that scanning that string alone finds.
    """
    first = scanner.first
    parts: list[bytes] | None = None
    size = len(data)
    pos = last = counted = quotes = 0
    close = -1
    while (hit := first(data, pos)) is not None:
        start, end, replace = hit
        quotes += data.count(b'"', counted, start)
        counted = start
        if start > close:  # else still before the quote found last time: a long string, many matches
            close = data.find(b'"', start)
            if close < 0:
                close = size
        if end > close:
            return _ACROSS
        if not quotes % 2:  # in a number or between values: go on at the next string
            pos = close
            continue
        after = close + 1
        while after < size and data[after] in _JSON_SPACE:
            after += 1
        if after < size and data[after] == 58:  # a member name (`:` follows): names are not masked
            pos = close + 1
            continue
        if parts is None:
            parts = []
        parts.append(data[last:start])
        parts.append(_dumps(replace(data[start:end]).decode("utf-8"))[1:-1])  # escaped for inside quotes
        last = pos = end
    if parts is None:
        return None
    parts.append(data[last:])
    return b"".join(parts)


def _scan_strings(doc: Any, scanner: Scanner) -> tuple[Any, bool]:
    """Every string value in `doc` scanned, in place (a string root is replaced)."""
    scan = scanner.scan_text
    if type(doc) is str:
        found = scan(doc)
        return (doc, False) if found is None else (found, True)
    changed = False
    stack = [doc] if type(doc) is dict or type(doc) is list else []
    while stack:
        node = stack.pop()
        pairs = node.items() if type(node) is dict else enumerate(node)
        for key, value in pairs:
            kind = type(value)
            if kind is str:
                found = scan(value)
                if found is not None:
                    node[key] = found  # replacing a value keeps the container's size: safe mid-iteration
                    changed = True
            elif kind is dict or kind is list:
                stack.append(value)
    return doc, changed


# orjson reads integers beyond 64 bits as floats, which would be written back changed. A run of
# 20 digits, or a minus and 19, is the cheap sign (both read as 20 zeros once digits and minus
# are zeros and all else is blank); the exact check reads the document again.
_SHAPE = bytes(48 if 48 <= byte <= 57 or byte == 45 else 32 for byte in range(256))
_TWENTY = b"0" * 20


class _Wide(Exception):
    pass


def _check_int(text: str) -> int:
    value = int(text)
    if not -(2 ** 63) <= value < 2 ** 64:
        raise _Wide
    return value


def _has_wide_integer(raw: bytes) -> bool:
    if _TWENTY not in raw.translate(_SHAPE):
        return False
    try:
        json.loads(raw, parse_int=_check_int)
    except _Wide:
        return True
    except (ValueError, RecursionError):
        return True  # cannot tell: treat as wide, the safe side
    return False


# -- compiling specs ---------------------------------------------------------------------------


def compile_profile(name: str, spec: Mapping[str, Any], *, detectors: DetectorSet,
                    hash_key: bytes | None) -> MaskProfile:
    """Check a profile spec and compile it; ContentSpecError says where and what to write instead.

    `detectors` resolves detector and path set names; `hash_key` is the HMAC key of the `hash`
    strategy (a spec that uses `hash` without one is refused).
    """
    check_keys(spec, "$", PROFILE_KEYS, "a mask profile", name=name)

    def fail(path: str, message: str) -> ContentSpecError:
        return ContentSpecError(path, message, spec=name)

    rules = _field_rules(spec.get("fields", []), "$.fields", hash_key, fail, name)
    rules += _path_set_rules(spec.get("paths", []), detectors, hash_key, fail, name)

    uses: list[tuple[Detector, Mask]] = []
    for item, where, at, detector_name in _entries(spec.get("detectors", []), "detectors", "detector", fail, name):
        try:
            detector = detectors.get(detector_name)
        except DetectorError as err:
            raise fail(at, str(err)) from None
        default = Mask(detector.strategy, detector.n, f"[REDACTED:{detector.name}]")
        mask = _mask(item, where, TEXT_STRATEGIES, default, hash_key, fail) if isinstance(item, Mapping) else default
        if mask.strategy == "hash" and mask.key is None:
            mask = _mask({"strategy": "hash"}, where, TEXT_STRATEGIES, default, hash_key, fail)
        uses.append((detector, mask))

    on_unmaskable = spec.get("on_unmaskable", "refuse")
    if on_unmaskable not in ON_UNMASKABLE:
        raise fail("$.on_unmaskable", f"`on_unmaskable` is `refuse` (the record is refused or withheld) or "
                                      f"`redact` (the value is replaced by a marker), not {type_word(on_unmaskable)}")
    if not rules and not uses:
        raise fail("$", "this profile masks nothing: give it `fields`, `paths`, `detectors` or more than one")
    return MaskProfile(name, rules, uses, on_unmaskable)


def check_field_rules(fields: Any) -> None:
    """Raises ContentSpecError where `fields` (a profile's `fields`, or a path set's) has a rule
    that cannot be used. A `hash` rule is checked as if the gateway had a key."""

    def fail(path: str, message: str) -> ContentSpecError:
        return ContentSpecError(path, message)

    _field_rules(fields, "$.fields", b"a key to check with", fail, "")


def _field_rules(fields: Any, where: str, hash_key: bytes | None, fail: Callable[[str, str], ContentSpecError],
                 name: str) -> list[_Rule]:
    """The rules of a `fields` list; `where` is its place in the spec."""
    if not isinstance(fields, (list, tuple)):
        raise fail(where, f"`fields` must be a list of {{path, strategy}}, not {type_word(fields)}")
    rules = []
    for index, item in enumerate(fields):
        at = f"{where}[{index}]"
        check_keys(item, at, FIELD_KEYS, "a field rule", name=name)
        if "path" not in item:
            raise fail(at, "this field rule has no `path`; " + _PATH_HINT)
        path = item["path"]
        try:
            segments = parse_path(path)
        except ValueError as err:
            raise fail(f"{at}.path", f"{path!r} is not a path: {err}") from None
        rules.append(_rule(path, segments, _mask(item, at, STRATEGIES, None, hash_key, fail), at, fail))
    return rules


def _rule(path: str, segments: tuple[Segment, ...], mask: Mask, where: str,
          fail: Callable[[str, str], ContentSpecError]) -> _Rule:
    if mask.strategy == "drop" and not segments:
        raise fail(f"{where}.strategy", "`drop` cannot remove the whole value; use `null` or `redact` on `$`")
    return _Rule(path, segments, mask)


def _path_set_rules(listed: Any, detectors: DetectorSet, hash_key: bytes | None,
                    fail: Callable[[str, str], ContentSpecError], name: str) -> list[_Rule]:
    """The field rules of the path sets a profile lists, each with its own strategy or, where the
    entry names one, with that strategy for every path in the set."""
    rules: list[_Rule] = []
    for entry, where, at, set_name in _entries(listed, "paths", "path set", fail, name):
        try:
            path_set = detectors.path_set(set_name)
        except DetectorError as err:
            raise fail(at, str(err)) from None
        if isinstance(entry, Mapping) and "strategy" in entry:
            mask = _mask(entry, where, STRATEGIES, None, hash_key, fail)
            rules += [_rule(rule["path"], parse_path(rule["path"]), mask, where, fail) for rule in path_set.fields]
            continue
        for key in ("n", "with"):
            if isinstance(entry, Mapping) and key in entry:
                raise fail(f"{where}.{key}", f"`{key}` needs a `strategy` beside it")

        def fail_in_set(path: str, message: str, where: str = where, set_name: str = set_name) -> ContentSpecError:
            return fail(where, f"path set `{set_name}` {path}: {message}")

        rules += _field_rules(path_set.fields, "$.fields", hash_key, fail_in_set, name)
    return rules


def _entries(listed: Any, key: str, what: str, fail: Callable[[str, str], ContentSpecError],
             name: str) -> Iterator[tuple[Any, str, str, str]]:
    """(entry, where, where its name is, name) of each entry of a profile's `detectors` or
    `paths`: a name, or `{name, strategy?, n?, with?}`; each name once."""
    if not isinstance(listed, (list, tuple)):
        raise fail(f"$.{key}", f"`{key}` must be a list of {what} names, not {type_word(listed)}")
    seen: set[str] = set()
    for index, item in enumerate(listed):
        where = f"$.{key}[{index}]"
        if isinstance(item, Mapping):
            check_keys(item, where, DETECTOR_KEYS, f"a {what} entry", name=name)
            if "name" not in item:
                raise fail(where, f"this {what} entry has no `name`")
            entry_name, at = item["name"], f"{where}.name"
        else:
            entry_name, at = item, where
        if not isinstance(entry_name, str):
            raise fail(at, f"a {what} name must be text, not {type_word(entry_name)}")
        if entry_name in seen:
            raise fail(at, f"{what} `{entry_name}` is listed twice")
        seen.add(entry_name)
        yield item, where, at, entry_name


def _mask(item: Mapping[str, Any], where: str, allowed: Sequence[str], default: Mask | None,
          hash_key: bytes | None, fail: Callable[[str, str], ContentSpecError]) -> Mask:
    """The Mask an entry asks for; `default` (a detector's own) when it names no strategy."""
    if "strategy" not in item:
        if default is None:
            raise fail(where, f"this field rule has no `strategy`; one of {', '.join(allowed)}")
        for key in ("n", "with"):
            if key in item:
                raise fail(f"{where}.{key}", f"`{key}` needs a `strategy` beside it")
        return default
    strategy = item["strategy"]
    if strategy is None:
        raise fail(f"{where}.strategy", 'write "null" in quotes: a bare null in YAML means no value')
    if strategy not in allowed:
        hint = did_you_mean(str(strategy), allowed)
        extra = " (detector matches are replaced inside text)" if allowed is TEXT_STRATEGIES else ""
        raise fail(f"{where}.strategy", f"unknown strategy {type_word(strategy)}{hint}; "
                                        f"strategies{extra}: {', '.join(allowed)}")
    n = 0
    if strategy in ("keep_last", "keep_first"):
        if "n" not in item:
            raise fail(where, f"`{strategy}` needs `n`, the number of characters to keep")
        n = item["n"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise fail(f"{where}.n", f"`n` must be a whole number, 0 or more, not {type_word(n)}")
    elif "n" in item:
        raise fail(f"{where}.n", f"`n` belongs to keep_last and keep_first, not to `{strategy}`")
    text = default.text if default is not None else "[REDACTED]"
    if "with" in item:
        if strategy != "redact":
            raise fail(f"{where}.with", f"`with` is the replacement text of `redact`, not of `{strategy}`")
        text = item["with"]
        if not isinstance(text, str):
            raise fail(f"{where}.with", f"`with` must be text, not {type_word(text)}")
    key = None
    if strategy == "hash":
        if not hash_key or not isinstance(hash_key, bytes):
            raise fail(f"{where}.strategy", "`hash` needs the gateway's hash key, and none is configured: "
                                            "configure one, or use `redact` or `keep_last`")
        key = hash_key
    return Mask(strategy, n, text, key)


def combine(profiles: Sequence[MaskProfile]) -> MaskProfile:
    """One profile that applies all of `profiles` (where several rules ask for masks).

    Field rules are united (where they meet, the least revealing wins); a detector listed by
    several uses the least revealing of their masks; unmaskable values are refused if any
    profile refuses them.
    """
    profiles = list(profiles)
    if not profiles:
        raise ValueError("combine needs at least one profile")
    if len(profiles) == 1:
        return profiles[0]
    rules = [rule for profile in profiles for rule in profile._rules]
    uses: dict[str, tuple[Detector, Mask]] = {}
    for profile in profiles:
        for detector, mask in profile._uses:
            if detector.name in uses:
                mask = _least_revealing(uses[detector.name][1], mask)
            uses[detector.name] = (detector, mask)
    on_unmaskable = "redact" if all(profile.on_unmaskable == "redact" for profile in profiles) else "refuse"
    return MaskProfile("+".join(profile.name for profile in profiles), rules, list(uses.values()), on_unmaskable)
