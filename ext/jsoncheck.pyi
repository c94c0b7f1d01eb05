# Types of brokerguard._native.jsoncheck; jsoncheck_py.py is its pure-Python twin with the same API.
from typing import Any, Final

__all__: Final[list[str]]

MAX_DEPTH: Final[int]
"""Documents nested deeper (objects and arrays) are never sure to pass: the full validator decides."""

class SchemaCheck:
    """Whether JSON documents surely pass one JSON Schema, read in one pass over their bytes."""

    def __init__(self, schema: Any, nodes: list[tuple[Any, ...]]) -> None:
        """Use compile_check; nodes is jsoncheck_py.plan(schema)."""

    def passes(self, data: bytes) -> bool:
        """True only if data is JSON that orjson parses and the schema accepts. False means
        invalid or not sure (see jsoncheck.pyx): the caller asks the full validator."""

    @property
    def native_check_value(self) -> object | None:
        """A capsule holding the C function by which Records.values_pass checks a batch's values
        in place, its context this check's plan (see value_check.pxd); None in the pure-Python
        twin."""
    def passes_all(self, values: list[bytes | None], allow_none: bool) -> bool:
        """passes for each item of values, in one call; a None passes if allow_none. An item
        that is not bytes does not pass."""

def compile_check(schema: Any) -> SchemaCheck | None:
    """A SchemaCheck for a JSON Schema already known to be valid, or None when it uses keywords
    the check does not read (see jsoncheck_py.py for the list)."""
