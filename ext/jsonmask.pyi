# Types of brokerguard._native.jsonmask; jsonmask_py.py is its pure-Python twin with the same API.
from collections.abc import Callable, Iterable
from typing import Final, TypeAlias

__all__: Final[list[str]]

# A rule: (path, strategy, n, replacement). path names members from the root object down, e.g.
# ("card", "number") for $.card.number; n is read by KEEP_LAST and KEEP_FIRST (0 otherwise);
# replacement, the JSON text REDACT writes (e.g. b'"[REDACTED]"'), by REDACT only (None otherwise).
Rule: TypeAlias = tuple[tuple[str, ...], int, int, bytes | None]

# A mask of a state: (strategy, n, replacement), read as in a Rule.
Mask: TypeAlias = tuple[int, int, bytes | None]

# A state of a deterministic path automaton: (mask, members, elements, other). states[0] is the
# document's (its mask must be None). A value whose state has a mask is masked whole; otherwise,
# when it is an object, each member goes to the state its name leads to in members, else to other;
# when it is an array, each element to the state its index (from 0, as the array came) leads to in
# elements, else to other. A state is an index into the states list; -1 is none: nothing there is
# masked. Loops are allowed ($..ssn loops through every member and element below). Profiles
# compile their paths, with [*], [n] and ..name, into states.
State: TypeAlias = tuple[Mask | None, tuple[tuple[str, int], ...], tuple[tuple[int, int], ...], int]

class _Fallback: ...

FALLBACK: Final[_Fallback]
"""mask's answer for a valid document with a matched value that only the general path (parse,
mask, write) can mask; shared by both twins."""

# Strategies
REDACT: Final = 1  # the value, of any type, becomes the rule's replacement
NULL: Final = 2  # the value becomes null
DROP: Final = 3  # the member (key, colon, value and one comma) leaves its object; see jsonmask_py.py
KEEP_LAST: Final = 4  # a string's code points become '*' but its last n; all of them if n or fewer
KEEP_FIRST: Final = 5  # the same, keeping the first n
HASH: Final = 6  # a string becomes hash_function(its JSON text, quotes included)

class Pseudonyms:
    """A hash_function for HASH that the compiled twin computes itself, without Python (so its
    native_mask_plain is there): a string's JSON text (quotes included) becomes `"h:` and the
    first 16 bytes of HMAC-SHA256(key, that text) in lowercase hex, quoted."""

    key: bytes
    def __init__(self, key: bytes) -> None: ...
    def __call__(self, literal: bytes) -> bytes: ...

class FieldMasker:
    """Mask rules applied to the bytes of JSON documents, in one pass that builds no Python
    objects: only the bytes of masked values change; every other byte, whitespace included,
    stays as it was."""

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        hash_function: Callable[[bytes], bytes] | None = None,
        max_depth: int = 1024,
        *,
        states: Iterable[State] | None = None,
    ) -> None:
        """Member-path rules, or the states of a path automaton (one or the other).

        Paths must be unique and name at least one member. A path under another rule's path
        is moot: the outer rule replaces the whole value. hash_function is needed by HASH; it
        gets a string's raw JSON text (quotes included) and returns the JSON text to write.
        Documents nested deeper than max_depth (objects and arrays) count as invalid.

        Raises TypeError or ValueError for a malformed rule or state (the same message in both
        twins)."""
    @property
    def native_mask_value(self) -> object | None:
        """A capsule holding the C function by which Batch.with_masked_values masks a batch's
        values in place (see value_mask.pxd); None in the pure-Python twin."""
    @property
    def native_mask_plain(self) -> object | None:
        """The same without Python, so called with the GIL released: a capsule whose context is
        these rules; None when a rule is HASH with a hash_function other than Pseudonyms (it is
        called from C) and in the pure-Python twin."""
    def mask_all(self, values: list[bytes | None]) -> tuple[list[bytes | None], list[int]]:
        """mask for each item of values in one call: the results in order, and the indexes of
        the items it left for the general path (kept as they were in the list): those that are
        not bytes and those mask answers None or FALLBACK for. A None item stays None. Raises
        what mask raises."""

    def mask(self, value: bytes) -> bytes | _Fallback | None:
        """value masked by the rules:

        - value itself (the same object) when no rule matched anything;
        - new bytes with only the matched values replaced (or members removed);
        - None when value is not one JSON document (RFC 8259, UTF-8, at most max_depth deep);
        - FALLBACK when it is, but KEEP_LAST, KEEP_FIRST or HASH matched a value that is not a
          string, or a string with a backslash escape.

        The whole document is validated even after the last match. Every occurrence of a
        duplicate key is masked; keys are compared after decoding their escapes.

        Raises TypeError if value is not bytes, and whatever hash_function raises (TypeError if
        it returns anything but bytes, ValueError if those bytes are not one JSON value); never
        anything for the bytes of value."""
