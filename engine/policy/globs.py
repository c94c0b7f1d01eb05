"""Globs, the one pattern language of rules: `*` matches any run of characters (dots included),
`?` exactly one; everything else matches itself. Authors never write regular expressions.

Globs compile to the cheapest test that does the job (equality, a prefix, a suffix) and to an
anchored regular expression otherwise. That expression places each middle segment atomically at
its leftmost occurrence, which is correct for globs and keeps matching free of the exponential
backtracking a naive translation invites (`a*a*a*a*b` against a long name).
"""

from __future__ import annotations

import re
from collections.abc import Callable

WILDCARDS = frozenset("*?")
# Characters that suggest someone wrote a regular expression or a shell character class.
_REGEX_HINTS = frozenset("[]{}()|\\^$+")
_TOPIC_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_TOPIC_LENGTH = 249


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a name matches `pattern`."""
    if not is_glob(pattern):
        return pattern.__eq__
    if "?" not in pattern:
        parts = pattern.split("*")
        if all(part == "" for part in parts):
            return _anything
        if len(parts) == 2:
            prefix, suffix = parts
            if not suffix:
                return lambda name: name.startswith(prefix)
            if not prefix:
                return lambda name: name.endswith(suffix)
            least = len(prefix) + len(suffix)
            return lambda name: len(name) >= least and name.startswith(prefix) and name.endswith(suffix)
    match = re.compile(_regex(pattern), re.DOTALL).match
    return lambda name: match(name) is not None


def _anything(name: str) -> bool:
    return True


def _segment(text: str) -> str:
    return "".join("." if char == "?" else re.escape(char) for char in text)


def _regex(pattern: str) -> str:
    parts = pattern.split("*")
    if len(parts) == 1:
        return _segment(pattern) + r"\Z"
    middle = "".join(f"(?>.*?{_segment(part)})" for part in parts[1:-1] if part)
    return _segment(parts[0]) + middle + ".*" + _segment(parts[-1]) + r"\Z"


def glob_problem(pattern: str, kind: str) -> str | None:
    """Why `pattern` is not a usable glob for resources of `kind` (or names of identities), if it is not."""
    if pattern == "":
        return "an empty name matches nothing"
    hints = sorted(set(pattern) & _REGEX_HINTS)
    if hints:
        return (f"`{pattern}` contains {' '.join(hints)}, which globs do not have: only * (any run of "
                f"characters) and ? (one character) are special; regular expressions are not supported")
    if kind == "topic":
        odd = sorted(set(pattern) - _TOPIC_CHARACTERS - WILDCARDS)
        if odd:
            shown = " ".join(repr(char) for char in odd)
            return (f"`{pattern}` can never match a topic: topic names use only letters, digits, "
                    f"'.', '_' and '-' (found {shown})")
        if not is_glob(pattern) and len(pattern) > MAX_TOPIC_LENGTH:
            return f"`{pattern[:40]}...` is longer than {MAX_TOPIC_LENGTH} characters, the limit for topic names"
    return None


def overlaps(first: str, second: str) -> bool:
    """Whether some name matches both globs.

    A walk over pairs of positions in the two patterns: a position can advance on a character both
    accept, and a `*` may also be passed by without consuming anything or stay while consuming.
    """
    ends = (len(first), len(second))
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        i, j = state
        if (i, j) == ends:
            return True
        a = first[i] if i < ends[0] else None
        b = second[j] if j < ends[1] else None
        if a == "*":
            todo.append((i + 1, j))
        if b == "*":
            todo.append((i, j + 1))
        if a is None or b is None:
            continue
        # Consume one character accepted by both sides; a star stays where it is.
        if a == "*" or b == "*" or a == "?" or b == "?" or a == b:
            todo.append((i if a == "*" else i + 1, j if b == "*" else j + 1))
    return False
