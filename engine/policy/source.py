"""YAML read with positions, so every mistake in a rules or test file is reported as file:line:col.

PyYAML's composer gives a tree of nodes that remember where they start; the readers below walk
that tree with the schema in hand and record a `Problem` at the offending node instead of
raising, so one pass finds every mistake in a file.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from brokerguard.policy.problems import Problem

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
# Plain scalars that read as text where a name is expected: a topic may well be called `2024`.
_TEXTUAL = {_TAG + "str", _TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "timestamp"}
_CONSTRUCTOR = SafeConstructor()
# A document can fan out through aliases (`&a [*a, *a]`, nested); turning it into values stops here.
MAX_VALUE_NODES = 10_000
MAX_VALUE_DEPTH = 32


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


class Reader:
    """Reads one file's nodes against a schema, collecting problems in `problems` and `warnings`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    # -- reporting ---------------------------------------------------------------------------

    def error(self, node: Node | None, message: str) -> None:
        self.problems.append(self._at(node, message))

    def warn(self, node: Node | None, message: str) -> None:
        self.warnings.append(self._at(node, message))

    def _at(self, node: Node | None, message: str) -> Problem:
        if node is None:
            return Problem(self.path, 1, 1, message)
        mark = node.start_mark
        return Problem(self.path, mark.line + 1, mark.column + 1, message)

    # -- the document ------------------------------------------------------------------------

    def compose(self, data: bytes | str) -> Node | None:
        """The document's root node, or None (with a problem recorded) when it is not YAML."""
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as err:
                line = data.count(b"\n", 0, err.start) + 1
                col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
                self.problems.append(Problem(self.path, line, col, "not UTF-8 text"))
                return None
        else:
            text = data
        text = _json_tabs_as_spaces(text)
        try:
            node = yaml.compose(text, Loader=_LOADER)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            what = err.problem or err.context or "not valid YAML"
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            self.problems.append(Problem(self.path, line, col, f"not valid YAML: {what}"))
            return None
        except yaml.reader.ReaderError as err:
            line, col = _line_col(text, err.position)
            self.problems.append(Problem(self.path, line, col, f"not valid YAML: {err.reason}"))
            return None
        except yaml.YAMLError as err:
            self.problems.append(Problem(self.path, 1, 1, f"not valid YAML: {err}"))
            return None
        if node is None:
            self.problems.append(Problem(self.path, 1, 1, "the file is empty"))
        return node

    # -- shapes ------------------------------------------------------------------------------

    def mapping(self, node: Node, what: str, keys: Collection[str]) -> dict[str, tuple[Node, Node]] | None:
        """The entries of a mapping by key; unknown and repeated keys are reported and left out."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping of {listing(keys)}")
            return None
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag not in _TEXTUAL:
                self.error(key_node, f"keys in {what} must be plain names")
                continue
            key = key_node.value
            if key not in keys:
                self.error(key_node, f"unknown key `{key}` in {what}{suggest(key, keys)}; "
                                     f"expected {listing(keys)}")
            elif key in entries:
                self.error(key_node, f"`{key}` appears twice in {what} (first at line "
                                     f"{entries[key][0].start_mark.line + 1})")
            else:
                entries[key] = (key_node, value_node)
        return entries

    def sequence(self, node: Node, what: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list")
            return None
        return list(node.value)

    def text(self, node: Node, what: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag in _TEXTUAL and node.value != "":
            return str(node.value)
        if isinstance(node, ScalarNode) and (node.tag == _TAG + "null" or node.value == ""):
            self.error(node, f"{what} is empty")
        else:
            self.error(node, f"{what} must be a string")
        return None

    def texts(self, node: Node, what: str) -> list[tuple[str, Node]] | None:
        """A non-empty list of strings, each with its node for later messages."""
        if isinstance(node, ScalarNode) and node.tag in _TEXTUAL:
            self.error(node, f"{what} must be a list: write [{node.value}]")
            return None
        items = self.sequence(node, what)
        if items is None:
            return None
        if not items:
            self.error(node, f"{what} is an empty list, which matches nothing; leave the key out instead")
            return None
        out = []
        for item in items:
            value = self.text(item, f"each entry of {what}")
            if value is not None:
                out.append((value, item))
        return out

    def boolean(self, node: Node, what: str) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "bool":
            return bool(_CONSTRUCTOR.construct_yaml_bool(node))
        self.error(node, f"{what} must be true or false")
        return None

    def value(self, node: Node, what: str) -> Any:
        """Plain Python data (claims, free-form values), or None with a problem recorded."""
        budget = [MAX_VALUE_NODES]
        try:
            return self._value(node, budget, 0)
        except _Unreadable as err:
            self.error(err.node, f"{what}: {err.message}")
            return None

    def _value(self, node: Node, budget: list[int], depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Unreadable(node, f"more than {MAX_VALUE_NODES} values (aliases included)")
        if depth > MAX_VALUE_DEPTH:  # also where an alias to an enclosing node ends up
            raise _Unreadable(node, f"nested deeper than {MAX_VALUE_DEPTH} levels")
        if isinstance(node, ScalarNode):
            return scalar(node)
        if isinstance(node, SequenceNode):
            return [self._value(item, budget, depth + 1) for item in node.value]
        if isinstance(node, MappingNode):
            out = {}
            for key_node, value_node in node.value:
                key = self._value(key_node, budget, depth + 1)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    raise _Unreadable(key_node, "keys must be plain names")
                out[key] = self._value(value_node, budget, depth + 1)
            return out
        raise _Unreadable(node, "unsupported YAML node")


class _Unreadable(ValueError):
    def __init__(self, node: Node, message: str) -> None:
        self.node = node
        self.message = message


def scalar(node: ScalarNode) -> Any:
    """A scalar as YAML types it: str, int, float, bool or None; timestamps stay text."""
    tag = node.tag
    if tag == _TAG + "str" or tag == _TAG + "timestamp":
        return node.value
    if tag == _TAG + "null":
        return None
    if tag == _TAG + "bool":
        return _CONSTRUCTOR.construct_yaml_bool(node)
    try:
        if tag == _TAG + "int":
            return _CONSTRUCTOR.construct_yaml_int(node)
        if tag == _TAG + "float":
            return _CONSTRUCTOR.construct_yaml_float(node)
    except ValueError:
        return node.value
    raise _Unreadable(node, f"unsupported YAML tag `{tag}`")


def _json_tabs_as_spaces(text: str) -> str:
    # JSON allows tabs between tokens where YAML does not. Valid JSON cannot hold a raw tab inside
    # a string, so swapping tabs for spaces keeps both its meaning and every position.
    if "\t" in text and text.lstrip()[:1] in ("{", "["):
        try:
            json.loads(text)
        except ValueError:
            return text
        return text.replace("\t", " ")
    return text


def listing(keys: Collection[str]) -> str:
    names = [f"`{key}`" for key in keys]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def suggest(word: str, choices: Collection[str]) -> str:
    """` (did you mean `x`?)` when a choice is close to `word`, else the empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""
