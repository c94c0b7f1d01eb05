"""Detectors: named kinds of sensitive text (card numbers, e-mail addresses, keys), found by RE2;
and path sets: named places in JSON records where sensitive values are kept.

A detector is a name, one RE2 pattern, an optional validator that confirms a match (a Luhn
check, a checksum) and the mask used when a profile does not say. A path set is a name and field
rules as a profile writes them (path, strategy), so that the places an organisation keeps, say,
credentials are written once, in a package, and listed by name in every profile that masks
them. Built-ins and third-party plugins of both kinds are found the same way, through entry
points in the group `brokerguard.detectors`.

Guarantees:
- Every pattern is compiled by RE2 with the fallback to Python's backtracking `re` disabled, so
  scanning is linear in the input; a pattern RE2 cannot compile is refused when the detector is
  built or loaded, with a message naming the detector.
- A `Scanner` finds every detector of a profile in one pass over UTF-8 bytes (one alternation);
  a match whose validator says no is not masked: the next detector matching at the same place
  is asked, then the scan goes on from the next position.
- A validator that raises counts as a match: masking errs on the side of hiding.
"""

from __future__ import annotations

import functools
import re as _re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import re2

from brokerguard.content.errors import ContentSpecError, DetectorError, did_you_mean

# Never let pyre2 hand a pattern it cannot compile to the backtracking `re` module.
re2.set_fallback_notification(re2.FALLBACK_EXCEPTION)

GROUP = "brokerguard.detectors"
TEXT_STRATEGIES = ("redact", "keep_last", "keep_first", "hash")
_NAME = _re.compile(r"[a-z][a-z0-9_]*\Z")

Validator = Callable[[str], bool]
Replacer = Callable[[bytes], bytes]


def compile_pattern(pattern: str) -> re2.Pattern:
    """`pattern` compiled by RE2 for UTF-8 bytes; raises (`re.error` mostly) when RE2 cannot compile it."""
    return re2.compile(pattern.encode("utf-8"), re2.UNICODE)


@dataclass(frozen=True, slots=True)
class Detector:
    """One kind of sensitive text.

    `pattern` is RE2 syntax (no backreferences, no lookaround) and is matched against UTF-8 text;
    `validate(matched_text) -> bool` confirms a match; `strategy` and `n` are the mask used when
    a profile names the detector without one (`redact` gives `[REDACTED:<name>]`). Building a
    Detector checks all of it and raises DetectorError naming the detector. A pattern with `^`,
    `$`, `\\A` or `\\z` works, but makes every JSON string be scanned on its own (slower).
    """

    name: str
    pattern: str
    validate: Validator | None = None
    strategy: str = "redact"
    n: int = 4
    description: str = ""
    regex: re2.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DetectorError(f"detector name {self.name!r} must be lowercase letters, digits and '_', "
                                "starting with a letter")
        if not isinstance(self.pattern, str) or not self.pattern:
            raise DetectorError(f"detector `{self.name}`: the pattern must be non-empty text")
        if "\\C" in self.pattern:
            raise DetectorError(f"detector `{self.name}`: `\\C` (any byte) would split UTF-8 characters; "
                                "use `.` instead")
        try:
            regex = compile_pattern(self.pattern)
        except Exception as err:  # re.error, and pyre2's own exceptions for unsupported syntax
            raise DetectorError(f"detector `{self.name}`: RE2 cannot compile its pattern: {err} (RE2 syntax "
                                "has no backreferences or lookaround; that is what keeps scanning linear)") from err
        if regex.fullmatch(b"") is not None:
            raise DetectorError(f"detector `{self.name}`: the pattern matches empty text, so it would find "
                                "something everywhere")
        if self.validate is not None and not callable(self.validate):
            raise DetectorError(f"detector `{self.name}`: validate must be a function of the matched text")
        if self.strategy not in TEXT_STRATEGIES:
            raise DetectorError(f"detector `{self.name}`: default strategy `{self.strategy}` is not one of "
                                f"{', '.join(TEXT_STRATEGIES)}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise DetectorError(f"detector `{self.name}`: n must be a whole number of characters, 0 or more")
        object.__setattr__(self, "regex", regex)


@dataclass(frozen=True, eq=False)  # rules are dicts: a set is itself, not its contents' hash
class PathSet:
    """Field rules a mask profile lists by name (`paths: [credentials]`).

    `fields` are written as in a profile: `{path, strategy, n?, with?}` each. Building a PathSet
    checks all of it as a profile's own field rules are checked, and raises DetectorError naming
    the set; only whether the gateway has a key for `hash` is left to the profiles that use it.
    """

    name: str
    fields: Sequence[Mapping[str, Any]]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DetectorError(f"path set name {self.name!r} must be lowercase letters, digits and '_', "
                                "starting with a letter")
        if not isinstance(self.fields, (list, tuple)) or not self.fields:
            raise DetectorError(f"path set `{self.name}`: fields must be a non-empty list of "
                                "{path, strategy} rules")
        from brokerguard.content.masking import check_field_rules  # masking builds on this module

        try:
            check_field_rules(self.fields)
        except ContentSpecError as err:
            raise DetectorError(f"path set `{self.name}`: {err}") from None
        object.__setattr__(self, "fields", tuple(dict(rule) for rule in self.fields))


class DetectorSet:
    """Detectors and path sets by name. `DetectorSet.load()` finds the installed ones by entry point."""

    def __init__(self, detectors: Iterable[Detector] = (), path_sets: Iterable[PathSet] = ()) -> None:
        self._by_name: dict[str, Detector] = _by_name(detectors, Detector, "detector")
        self._path_sets: dict[str, PathSet] = _by_name(path_sets, PathSet, "path set")

    @classmethod
    def load(cls, group: str = GROUP) -> DetectorSet:
        """Every detector and path set registered in entry point group `group`.

        Raises DetectorError listing every plugin that cannot be used (fails to import, is neither
        a Detector nor a PathSet, has a pattern RE2 cannot compile or a field rule that cannot be
        used, clashes with another of the same name), so a bad plugin stops the gateway at start
        instead of leaving data unmasked.
        """
        problems: list[str] = []
        found: dict[str, tuple[str, Detector | PathSet]] = {}
        for entry in metadata.entry_points(group=group):
            if entry.name in found:
                if found[entry.name][0] != entry.value:
                    problems.append(f"two detectors are registered as `{entry.name}`: {found[entry.name][0]} and "
                                    f"{entry.value}; uninstall one of them")
                continue  # the same entry point seen twice (one distribution on the path twice)
            try:
                loaded = entry.load()
            except DetectorError as err:
                problems.append(f"detector plugin `{entry.name}` ({entry.value}) is refused: {err}")
                continue
            except Exception as err:
                problems.append(f"detector plugin `{entry.name}` ({entry.value}) failed to load: "
                                f"{type(err).__name__}: {err}")
                continue
            if not isinstance(loaded, (Detector, PathSet)):
                problems.append(f"detector plugin `{entry.name}` ({entry.value}) is {type(loaded).__name__}, "
                                "not a brokerguard.content.Detector or PathSet")
                continue
            if loaded.name != entry.name:
                problems.append(f"detector plugin `{entry.name}` ({entry.value}) calls itself `{loaded.name}`: "
                                "register it under the name it has")
                continue
            found[entry.name] = (entry.value, loaded)
        if problems:
            raise DetectorError("\n".join(problems))
        plugins = [plugin for _, plugin in found.values()]
        return cls([p for p in plugins if isinstance(p, Detector)], [p for p in plugins if isinstance(p, PathSet)])

    def get(self, name: str) -> Detector:
        """The detector called `name`; DetectorError naming the known ones when there is none."""
        return _named(self._by_name, name, "detector")

    def path_set(self, name: str) -> PathSet:
        """The path set called `name`; DetectorError naming the known ones when there is none."""
        return _named(self._path_sets, name, "path set")

    @property
    def names(self) -> tuple[str, ...]:
        """The detectors' names (path sets are not detectors: see path_set_names)."""
        return tuple(sorted(self._by_name))

    @property
    def path_set_names(self) -> tuple[str, ...]:
        return tuple(sorted(self._path_sets))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Detector]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"DetectorSet({', '.join(self.names)}; path sets: {', '.join(self.path_set_names) or 'none'})"


def _by_name(plugins: Iterable[Any], kind: type, what: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for plugin in plugins:
        if not isinstance(plugin, kind):
            raise DetectorError(f"{plugin!r} is not a {kind.__name__}")
        if plugin.name in table:
            raise DetectorError(f"two {what}s are named `{plugin.name}`")
        table[plugin.name] = plugin
    return table


def _named(table: dict[str, Any], name: str, what: str) -> Any:
    try:
        return table[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(table)) or "none"
        raise DetectorError(f"no {what} named `{name}`{did_you_mean(str(name), table)}; known {what}s: {known}") from None


@functools.cache
def builtin_detectors() -> DetectorSet:
    """The detectors of this installation, loaded once per process: the built-ins and every
    installed plugin, which are registered the same way (`DetectorSet.load()`)."""
    return DetectorSet.load()


class Scanner:
    """Several detectors, each with its replacement, scanned in one pass over UTF-8 bytes.

    At each position the first detector (in the given order) whose pattern matches there and
    whose validator agrees wins; matched text is replaced by its detector's `replace(matched)`.
    Input must be valid UTF-8 (JSON strings and checked text are).
    """

    def __init__(self, uses: Sequence[tuple[Detector, Replacer]]) -> None:
        if not uses:
            raise ValueError("a Scanner needs at least one detector")
        # Without capture groups RE2 finds a match with its DFA alone; which detector matched is
        # then asked of each in turn, anchored there (the rare case: something was found).
        alternation = "|".join(f"(?:{detector.pattern})" for detector, _ in uses)
        try:
            self._regex = compile_pattern(alternation)
        except Exception as err:  # e.g. two detectors using the same named group
            names = ", ".join(detector.name for detector, _ in uses)
            raise DetectorError(f"detectors {names} cannot be scanned together: {err}") from err
        self._uses = tuple((detector.regex.match, detector.validate, detector, replace) for detector, replace in uses)
        self.detectors = tuple(detector for detector, _ in uses)
        # Whether a match can depend on where the text starts or ends (a string's edges are
        # quotes when it is searched inside a JSON document).
        self.context_free = not any(token in detector.pattern for detector, _ in uses
                                    for token in ("^", "$", "\\A", "\\z", "\\Z"))

    def candidate(self, data: bytes, pos: int = 0) -> int:
        """Where the first place at or after `pos` is that some pattern matches (validators not
        asked), or -1: with none, `first` and `scan` find nothing."""
        found = self._regex.search(data, pos)
        return -1 if found is None else found.start()

    def first(self, data: bytes, pos: int = 0) -> tuple[int, int, Replacer] | None:
        """(start, end, replace) of the first confirmed match at or after `pos`, or None."""
        search = self._regex.search
        while True:
            found = search(data, pos)
            if found is None:
                return None
            start = found.start()
            for match, validate, detector, replace in self._uses:
                own = match(data, start)
                if own is None:
                    continue
                end = own.end()
                if end > start and (validate is None or _confirms(detector, data[start:end])):
                    return start, end, replace
            pos = start + 1

    def scan(self, data: bytes) -> bytes | None:
        """`data` with every confirmed match replaced, or None when nothing matched."""
        first = self.first
        parts: list[bytes] | None = None
        pos = 0
        while (hit := first(data, pos)) is not None:
            start, end, replace = hit
            if parts is None:
                parts = []
            parts.append(data[pos:start])
            parts.append(replace(data[start:end]))
            pos = end
        if parts is None:
            return None
        parts.append(data[pos:])
        return b"".join(parts)

    def scan_text(self, text: str) -> str | None:
        """`scan` for a str."""
        out = self.scan(text.encode("utf-8"))
        return None if out is None else out.decode("utf-8")


def _confirms(detector: Detector, matched: bytes) -> bool:
    try:
        return bool(detector.validate(matched.decode("utf-8")))  # type: ignore[misc]
    except Exception:
        return True
