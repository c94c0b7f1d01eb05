"""Errors of the content core (a spec or a detector that cannot be used) and the helpers that word them."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from brokerguard.errors import ConfigError, PluginError


class ContentSpecError(ConfigError, ValueError):
    """A mask profile or validation spec that cannot be used.

    `path` says where in the spec (`$.fields[2].strategy`), `message` what is wrong and what to
    write instead; `spec` names the profile or validation when it is known.
    """

    def __init__(self, path: str, message: str, *, spec: str = "") -> None:
        self.path = path
        self.message = message
        self.spec = spec
        where = f"{spec}: {path}" if spec else path
        super().__init__(f"{where}: {message}")


class DetectorError(PluginError):
    """A detector cannot be used: unknown name, a pattern RE2 cannot compile, a plugin that fails."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean `x`?)` when a choice is close to `word`, else the empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def check_keys(spec: object, path: str, allowed: Collection[str], what: str, *, name: str = "") -> Mapping[str, Any]:
    """`spec` as a mapping with string keys among `allowed`, or ContentSpecError at the first stray key."""
    if not isinstance(spec, Mapping):
        raise ContentSpecError(path, f"{what} must be a mapping, not {type_word(spec)}", spec=name)
    for key in spec:
        if key not in allowed:
            shown = key if isinstance(key, str) else repr(key)
            raise ContentSpecError(f"{path}.{shown}" if isinstance(key, str) else path,
                                   f"unknown key `{shown}` in {what}{did_you_mean(str(key), allowed)}; "
                                   f"known keys: {', '.join(allowed)}", spec=name)
    return spec


def type_word(value: object) -> str:
    """How a spec value's type reads to someone who wrote YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    return type(value).__name__
