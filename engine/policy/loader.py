"""Load a rules directory into a `RuleSet`, or fail with every mistake in it, each at file:line:col.

Rules files are the `*.yaml` and `*.yml` files directly in the directory; `*_test.yaml` files
beside them are tests (brokerguard.policy.testing) and are not read here. Nothing in a rules file
is ever executed or turned into a regular expression: names are globs, times are a small fixed
format, addresses are CIDR networks.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import secrets
import zoneinfo
from collections.abc import Iterable
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from brokerguard.audit.events import CAPTURES
from brokerguard.operations import ACTIONS, ALL_ACTIONS
from brokerguard.policy import globs
from brokerguard.policy.model import (
    APPLY,
    LIMIT_PER,
    DAYS,
    EFFECTS,
    KIND_KEYS,
    KIND_WORDS,
    RESOURCE_KEYS,
    ClientMatcher,
    ContentSpec,
    IdentityMatcher,
    Limit,
    Names,
    Resources,
    Rule,
    RulesFile,
    RuleSet,
    TimeWindow,
)
from brokerguard.policy.problems import Problem, RulesError
from brokerguard.policy.source import Reader, listing, scalar, suggest

FILE_KEYS = ("description", "resources", "masks", "validations", "rules")
NARROWING_KEYS = tuple(RESOURCE_KEYS)
OBLIGATION_KEYS = ("mask", "validate", "limit", "capture")
RULE_KEYS = ("name", *EFFECTS, APPLY, "who", "except", "topics", "groups", "transactional_ids", "cluster",
             "client", "when", "reason", *OBLIGATION_KEYS)
LIMIT_KEYS = ("bytes_per_s", "records_per_s", "requests_per_s", "per")
IDENTITY_KEYS = ("subjects", "groups", "claims", "mechanisms")
CLIENT_KEYS = ("addresses", "client_ids", "software")
WINDOW_KEYS = ("days", "hours", "timezone")
MECHANISMS = ("OAUTHBEARER", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "mTLS")
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
_HOURS = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*\Z")
_RULE_SUFFIXES = (".yaml", ".yml")
_TEST_SUFFIXES = ("_test.yaml", "_test.yml")


def rule_paths(directory: str | os.PathLike[str]) -> list[Path]:
    """The rules files of a directory, in name order (tests and hidden files left out)."""
    return sorted(path for path in Path(directory).iterdir()
                  if path.name.endswith(_RULE_SUFFIXES) and not path.name.endswith(_TEST_SUFFIXES)
                  and not path.name.startswith(".") and path.is_file())


def test_paths(directory: str | os.PathLike[str]) -> list[Path]:
    """The test files of a directory, in name order."""
    return sorted(path for path in Path(directory).iterdir()
                  if path.name.endswith(_TEST_SUFFIXES) and not path.name.startswith(".") and path.is_file())


def load(directory: str | os.PathLike[str], hash_key: bytes | None = None) -> RuleSet:
    """Read and check every rules file in `directory`; raise RulesError listing every problem.

    `hash_key` keys the masks' `hash` strategy; without one (checking and testing rules) a
    throwaway key is used, so pseudonyms differ from the gateway's but every spec is checked."""
    where = str(directory)
    if not Path(directory).is_dir():
        reason = "not a directory" if Path(directory).exists() else "no such directory"
        raise RulesError([Problem(where, 0, 0, f"cannot load rules: {reason}")])
    paths = rule_paths(directory)
    if not paths:
        raise RulesError([Problem(where, 0, 0, "no rules files (*.yaml, *.yml) in this directory: "
                                               "an empty rule set would deny everything")])
    sources: list[tuple[str, bytes]] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            sources.append((str(path), path.read_bytes()))
        except OSError as err:
            problems.append(Problem(str(path), 0, 0, f"cannot read: {err.strerror}"))
    if problems:
        raise RulesError(problems)
    return parse_files(sources, directory=where, hash_key=hash_key)


def parse_files(sources: Iterable[tuple[str, bytes | str]], directory: str = "",
                hash_key: bytes | None = None) -> RuleSet:
    """Check the given (path, content) pairs as one rule set; raise RulesError listing every problem."""
    files: list[RulesFile] = []
    problems: list[Problem] = []
    warnings: list[Problem] = []
    seen: dict[str, str] = {}
    content = _ContentReader(directory, hash_key)
    for path, data in sorted(sources, key=lambda source: os.path.basename(source[0])):
        name = os.path.basename(path)
        if name in seen:
            problems.append(Problem(path, 0, 0, f"a second file named {name} (the first is {seen[name]}): "
                                                "decisions name files by their base name"))
            continue
        seen[name] = path
        reader = _FileReader(path, content)
        parsed = reader.read(data)
        problems.extend(sorted(reader.problems, key=lambda problem: (problem.line, problem.col)))
        warnings.extend(sorted(reader.warnings, key=lambda problem: (problem.line, problem.col)))
        if parsed is not None:
            files.append(parsed)
    if not problems:
        problems += content.check_references()
    if problems:
        raise RulesError(problems, warnings)
    return RuleSet(directory=directory, files=tuple(files), warnings=tuple(warnings),
                   masks=tuple(content.masks.values()), validations=tuple(content.validations.values()))


def parse_file(path: str, data: bytes | str) -> RulesFile:
    """One rules file on its own; raise RulesError listing every problem in it."""
    return parse_files([(path, data)]).files[0]


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


def check_timezone(name: str) -> str | None:
    """Why `name` is not a timezone the engine can use, or None."""
    if name in _timezones():
        try:
            zoneinfo.ZoneInfo(name)
            return None
        except (ValueError, OSError, KeyError):
            pass
    return (f"unknown timezone `{name}`{suggest(name, _timezones())}; use an IANA name such as "
            f"Europe/Berlin, America/New_York or UTC")


class _ContentReader:
    """The named masks and validations of a whole rule set: defined in any file, compiled once,
    and referenced by name from rules in any file."""

    def __init__(self, directory: str, hash_key: bytes | None) -> None:
        self.base_dir = directory or "."
        self.hash_key = hash_key if hash_key is not None else secrets.token_bytes(32)
        self.masks: dict[str, ContentSpec] = {}
        self.validations: dict[str, ContentSpec] = {}
        self._references: list[tuple[str, Node, str, str]] = []  # (path, node, kind, name)

    def define(self, reader: Reader, kind: str, node: Node) -> None:
        """Read a `masks:` or `validations:` section: a mapping of names to specs."""
        from brokerguard import content

        table = self.masks if kind == "masks" else self.validations
        word = "mask" if kind == "masks" else "validation"
        if not isinstance(node, MappingNode):
            reader.error(node, f"`{kind}` must be a mapping of {word} names to their definitions")
            return
        for key_node, value_node in node.value:
            name = reader.text(key_node, f"a {word} name")
            if name is None:
                continue
            if not RULE_NAME.match(name):
                reader.error(key_node, f"{word} name `{name}` may use only lowercase letters, digits and '-'")
                continue
            if name in table:
                first = table[name]
                reader.error(key_node, f"{word} `{name}` is already defined in {first.file} at line {first.line}")
                continue
            spec = reader.value(value_node, f"{word} `{name}`")
            if spec is None:
                continue
            try:
                if kind == "masks":
                    compiled = content.compile_profile(name, spec, detectors=content.builtin_detectors(),
                                                       hash_key=self.hash_key)
                else:
                    compiled = content.compile_validation(name, spec, self.base_dir)
            except content.ContentSpecError as err:
                reader.error(_node_at(value_node, err.path), f"{word} `{name}`, at {err.path}: {err.message}")
                continue
            table[name] = ContentSpec(name, os.path.basename(reader.path), key_node.start_mark.line + 1, spec,
                                      compiled)

    def refer(self, path: str, node: Node, kind: str, name: str) -> None:
        self._references.append((path, node, kind, name))

    def check_references(self) -> list[Problem]:
        problems = []
        for path, node, kind, name in self._references:
            table = self.masks if kind == "mask" else self.validations
            if name not in table:
                known = ", ".join(sorted(table)) or "none are defined"
                problems.append(Problem(path, node.start_mark.line + 1, node.start_mark.column + 1,
                                        f"no {kind} named `{name}`{suggest(name, table)}; defined: {known}"))
        return problems


def _node_at(node: Node, path: str) -> Node:
    """The node a spec error points at (`$.fields[2].strategy`), or the nearest one above it."""
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        if key and isinstance(node, MappingNode):
            found = next((value for name, value in node.value if getattr(name, "value", None) == key), None)
        elif index and isinstance(node, SequenceNode) and int(index) < len(node.value):
            found = node.value[int(index)]
        else:
            found = None
        if found is None:
            break
        node = found
    return node


class _FileReader(Reader):
    """Reads one rules file; the schema lives in its methods, one per section."""

    def __init__(self, path: str, content: _ContentReader) -> None:
        super().__init__(path)
        self.content = content

    def read(self, data: bytes | str) -> RulesFile | None:
        root = self.compose(data)
        if root is None:
            return None
        entries = self.mapping(root, "a rules file", FILE_KEYS)
        if entries is None:
            return None
        name = os.path.basename(self.path)
        description = ""
        if "description" in entries:
            description = self.text(entries["description"][1], "`description`") or ""
        for section in ("masks", "validations"):
            if section in entries:
                self.content.define(self, section, entries[section][1])
        resources = None
        if "resources" in entries:
            resources = self.resources(entries["resources"][1])
        else:
            self.error(root, "the file has no `resources`: say which topics, groups, transactional_ids "
                             "or cluster it governs")
        rules: list[Rule] = []
        if "rules" not in entries:
            self.error(root, "the file has no `rules`")
        else:
            items = self.sequence(entries["rules"][1], "`rules`")
            if items == []:
                self.warn(entries["rules"][1], "`rules` is empty: this file decides nothing")
            names: dict[str, int] = {}
            for item in items or ():
                rule = self.rule(item, name, resources, names)
                if rule is not None:
                    rules.append(rule)
        if self.problems:
            return None
        assert resources is not None
        return RulesFile(path=self.path, name=name, description=description, resources=resources,
                         rules=tuple(rules))

    # -- resources ---------------------------------------------------------------------------

    def resources(self, node: Node) -> Resources | None:
        entries = self.mapping(node, "`resources`", NARROWING_KEYS)
        if entries is None:
            return None
        resources = self.resource_entries(entries)
        if not resources.kinds:
            self.error(node, "`resources` governs nothing: list topics, groups or transactional_ids, "
                             "or set `cluster: true`")
            return None
        return resources

    def resource_entries(self, entries: dict[str, tuple[Node, Node]]) -> Resources:
        """The resources named, as far as they could be read (problems are recorded, and later
        checks still see which kinds were meant)."""
        found: dict[str, object] = {}
        for key, kind in RESOURCE_KEYS.items():
            if key not in entries:
                continue
            value = entries[key][1]
            if kind == "cluster":
                found[key] = bool(self.boolean(value, "`cluster`"))
            else:
                found[key] = self.names(value, f"`{key}`", kind) or Names(())
        return Resources(**found)  # type: ignore[arg-type]

    def names(self, node: Node, what: str, kind: str) -> Names | None:
        items = self.texts(node, what)
        if items is None:
            return None
        if len(items) != len(node.value):
            return None  # an entry was not a string; already reported
        ok = True
        for pattern, item in items:
            problem = globs.glob_problem(pattern, kind)
            if problem:
                self.error(item, problem)
                ok = False
        return Names(tuple(pattern for pattern, _ in items)) if ok else None

    # -- rules -------------------------------------------------------------------------------

    def rule(self, node: Node, file: str, resources: Resources | None, names: dict[str, int]) -> Rule | None:
        entries = self.mapping(node, "a rule", RULE_KEYS)
        if entries is None:
            return None
        before = len(self.problems)
        line = node.start_mark.line + 1
        name = self.rule_name(node, entries, names)
        label = f"rule `{name}`" if name else "this rule"

        narrowing = None
        kinds: tuple[str, ...] | None = resources.kinds if resources is not None else None
        if any(key in entries for key in NARROWING_KEYS):
            narrowing = self.narrowing(entries, resources)
            kinds = tuple(kind for kind in narrowing.kinds if kinds is None or kind in kinds) or None

        effects = sorted((key for key in (*EFFECTS, APPLY) if key in entries),
                         key=lambda key: entries[key][0].start_mark.index)
        if not effects:
            self.error(node, f"{label} needs exactly one of `allow`, `deny`, `require_approval` or `apply`")
        for extra in effects[1:]:
            self.error(entries[extra][0], f"{label} has both `{effects[0]}` and `{extra}`: "
                                          "give each effect its own rule")
        actions: tuple[str, ...] = ()
        for effect in effects:
            read = self.actions(entries[effect][1], f"`{effect}`", kinds)
            actions = actions or read

        who = exempt = client = when = None
        if "who" in entries:
            who = self.identity(entries["who"][1], "`who`")
        if "except" in entries:
            exempt = self.identity(entries["except"][1], "`except`")
        if "client" in entries:
            client = self.client(entries["client"][1])
        if "when" in entries:
            when = self.window(entries["when"][1])
        reason = None
        if "reason" in entries:
            reason = self.text(entries["reason"][1], "`reason`")
        mask, validate, limit, capture = self.obligations(node, entries, effects[0] if effects else None, label)

        if len(self.problems) > before or not name or not effects or kinds is None:
            return None
        targets = []
        for kind in kinds:
            possible = ACTIONS[kind] if "*" in actions else ACTIONS[kind] & frozenset(actions)
            if possible:
                targets.append((kind, frozenset(possible)))
        return Rule(file=file, name=name, verdict=EFFECTS.get(effects[0]), actions=actions,
                    targets=tuple(targets), narrowing=narrowing, who=who, exempt=exempt, client=client,
                    when=when, reason=reason, line=line, col=node.start_mark.column + 1, mask=mask,
                    validate=validate, limit=limit, capture=capture)

    def obligations(self, node: Node, entries: dict[str, tuple[Node, Node]], effect: str | None,
                    label: str) -> tuple[tuple[str, ...], tuple[str, ...], Limit | None, str | None]:
        """A rule's `mask`, `validate`, `limit` and `capture`: only on what is allowed (`allow` or `apply`)."""
        given = [key for key in OBLIGATION_KEYS if key in entries]
        if effect == APPLY and not given:
            self.error(node, f"{label} is an `apply` rule without `mask`, `validate`, `limit` or `capture`: "
                             "it would do nothing")
        if effect in ("deny", "require_approval"):
            for key in given:
                self.error(entries[key][0], f"`{key}` applies to what a rule allows; `{effect}` allows nothing: "
                                            "put it on an `allow` or `apply` rule")
            return (), (), None, None
        named = {}
        for key, kind in (("mask", "mask"), ("validate", "validation")):
            names: list[str] = []
            if key in entries:
                value = entries[key][1]
                items = [(self.text(value, f"`{key}`"), value)] if isinstance(value, ScalarNode) else \
                    self.texts(value, f"`{key}`") or []
                for item_name, item in items:
                    if item_name is not None:
                        self.content.refer(self.path, item, kind, item_name)
                        names.append(item_name)
            named[key] = tuple(names)
        limit = self.limit(entries["limit"][1]) if "limit" in entries else None
        capture = None
        if "capture" in entries:
            capture = self.text(entries["capture"][1], "`capture`")
            if capture is not None and capture not in CAPTURES:
                self.error(entries["capture"][1], f"`capture` is one of {', '.join(CAPTURES)} (how much of the "
                                                  f"payload the audit trail keeps), not {capture!r}")
                capture = None
        return named["mask"], named["validate"], limit, capture

    def limit(self, node: Node) -> Limit | None:
        entries = self.mapping(node, "`limit`", LIMIT_KEYS)
        if entries is None:
            return None
        rates: dict[str, float] = {}
        for key in LIMIT_KEYS[:3]:
            if key in entries:
                value = scalar(entries[key][1]) if isinstance(entries[key][1], ScalarNode) else None
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    self.error(entries[key][1], f"`limit.{key}` must be a number above 0")
                else:
                    rates[key] = float(value)
        if not any(key in entries for key in LIMIT_KEYS[:3]):
            self.error(node, "`limit` needs bytes_per_s, records_per_s or requests_per_s")
            return None
        per = "resource"
        if "per" in entries:
            per = self.text(entries["per"][1], "`limit.per`") or per
            if per not in LIMIT_PER:
                self.error(entries["per"][1], "`limit.per` is `resource` (each topic its own allowance) or "
                                              "`identity` (one allowance for all)")
        return Limit(per=per, **rates)

    def rule_name(self, node: Node, entries: dict[str, tuple[Node, Node]], names: dict[str, int]) -> str | None:
        if "name" not in entries:
            self.error(node, "this rule has no `name`; give it one of lowercase letters, digits and '-'")
            return None
        name_node = entries["name"][1]
        name = self.text(name_node, "`name`")
        if name is None:
            return None
        if not RULE_NAME.match(name):
            self.error(name_node, f"rule name `{name}` may use only lowercase letters, digits and '-' "
                                  "(and must not start with '-')")
            return None
        if name in names:
            self.error(name_node, f"rule name `{name}` is already used at line {names[name]}")
            return None
        names[name] = name_node.start_mark.line + 1
        return name

    def narrowing(self, entries: dict[str, tuple[Node, Node]], resources: Resources | None) -> Resources:
        narrowing = self.resource_entries({key: entries[key] for key in NARROWING_KEYS if key in entries})
        if resources is None:
            return narrowing
        if "cluster" in entries and not narrowing.cluster:
            self.error(entries["cluster"][1], "`cluster: false` in a rule narrows to nothing: leave it out, "
                                              "or narrow with `topics`, `groups` or `transactional_ids`")
        for kind in narrowing.kinds:
            key = KIND_KEYS[kind]
            governed = resources.names_for(kind)
            if governed is None:
                self.error(entries[key][0], f"this rule narrows to {key}, but the file governs none: add them "
                                            f"under `resources.{key}` first")
                continue
            if kind == "cluster":
                continue
            narrowed = narrowing.names_for(kind)
            assert narrowed is not None
            if not governed.patterns or len(narrowed.patterns) != len(entries[key][1].value):
                continue  # names already reported as unreadable
            for pattern, item in zip(narrowed.patterns, entries[key][1].value):
                if not any(globs.overlaps(pattern, own) for own in governed.patterns):
                    self.warn(item, f"`{pattern}` matches none of the {key} this file governs "
                                    f"({governed}): the rule never applies to it")
        return narrowing

    def actions(self, node: Node, what: str, kinds: tuple[str, ...] | None) -> tuple[str, ...]:
        items = self.texts(node, what)
        if items is None:
            return ()
        if len(items) > 1 and any(action == "*" for action, _ in items):
            self.error(node, f"`*` in {what} already means every action: list it alone")
            return ()
        possible = frozenset().union(*(ACTIONS[kind] for kind in kinds)) if kinds else ALL_ACTIONS
        words = _kind_words(kinds) if kinds else ""
        out = []
        for action, item in items:
            if action == "*":
                out.append(action)
            elif action not in ALL_ACTIONS:
                self.error(item, f"unknown action `{action}`{suggest(action, ALL_ACTIONS)}; actions on "
                                 f"{words or 'any resource'} are: {', '.join(sorted(possible))}")
            elif action not in possible:
                applies = _kind_words(tuple(kind for kind in ACTIONS if action in ACTIONS[kind]))
                self.error(item, f"`{action}` is not an action on {words}, what this rule applies to; "
                                 f"it acts on {applies}")
            else:
                out.append(action)
        return tuple(out)

    # -- matchers ----------------------------------------------------------------------------

    def identity(self, node: Node, what: str) -> IdentityMatcher | None:
        entries = self.mapping(node, what, IDENTITY_KEYS)
        if entries is None:
            return None
        if not entries:
            hint = ("leave it out to mean any authenticated identity" if what == "`who`"
                    else "it would exempt everyone")
            self.error(node, f"{what} is empty: {hint}")
            return None
        ok = True
        subjects = groups = None
        if "subjects" in entries:
            subjects = self.names(entries["subjects"][1], f"`{what[1:-1]}.subjects`", "identity")
            ok &= subjects is not None
        if "groups" in entries:
            groups = self.names(entries["groups"][1], f"`{what[1:-1]}.groups`", "identity")
            ok &= groups is not None
        claims: tuple[tuple[str, tuple[object, ...]], ...] = ()
        if "claims" in entries:
            read = self.claims(entries["claims"][1], f"`{what[1:-1]}.claims`")
            ok &= read is not None
            claims = read or ()
        mechanisms = None
        if "mechanisms" in entries:
            mechanisms = self.mechanisms(entries["mechanisms"][1], f"`{what[1:-1]}.mechanisms`")
            ok &= mechanisms is not None
        if not ok:
            return None
        return IdentityMatcher(subjects=subjects, groups=groups, claims=claims, mechanisms=mechanisms)

    def claims(self, node: Node, what: str) -> tuple[tuple[str, tuple[object, ...]], ...] | None:
        if not isinstance(node, MappingNode) or not node.value:
            self.error(node, f"{what} must be a mapping of claim names to a value or a list of values")
            return None
        before = len(self.problems)
        out = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            claim = self.text(key_node, "a claim name")
            if claim is None:
                continue
            if claim in seen:
                self.error(key_node, f"claim `{claim}` appears twice in {what}")
                continue
            seen.add(claim)
            if isinstance(value_node, ScalarNode):
                items = [value_node]
            elif isinstance(value_node, SequenceNode) and value_node.value:
                items = list(value_node.value)
            else:
                self.error(value_node, f"claim `{claim}` needs a value or a non-empty list of values")
                continue
            values = []
            for item in items:
                value = _claim_value(item)
                if value is None:
                    self.error(item, f"claim `{claim}`: values must be strings, numbers or true/false")
                else:
                    values.append(value)
            out.append((claim, tuple(values)))
        return tuple(out) if len(self.problems) == before else None

    def mechanisms(self, node: Node, what: str) -> frozenset[str] | None:
        items = self.texts(node, what)
        if items is None:
            return None
        by_upper = {mechanism.upper(): mechanism for mechanism in MECHANISMS}
        before = len(self.problems)
        out = set()
        for value, item in items:
            known = by_upper.get(value.upper())
            if known is None:
                self.error(item, f"unknown mechanism `{value}`; mechanisms are {', '.join(MECHANISMS)}")
            else:
                out.add(known)
        return frozenset(out) if len(self.problems) == before and len(items) == len(node.value) else None

    def client(self, node: Node) -> ClientMatcher | None:
        entries = self.mapping(node, "`client`", CLIENT_KEYS)
        if entries is None:
            return None
        if not entries:
            self.error(node, "`client` is empty: leave it out to mean any client")
            return None
        ok = True
        addresses = None
        if "addresses" in entries:
            addresses = self.networks(entries["addresses"][1])
            ok &= addresses is not None
        client_ids = software = None
        if "client_ids" in entries:
            client_ids = self.names(entries["client_ids"][1], "`client.client_ids`", "client")
            ok &= client_ids is not None
        if "software" in entries:
            software = self.names(entries["software"][1], "`client.software`", "client")
            ok &= software is not None
        return ClientMatcher(addresses=addresses, client_ids=client_ids, software=software) if ok else None

    def networks(self, node: Node) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
        items = self.texts(node, "`client.addresses`")
        if items is None:
            return None
        out = []
        for value, item in items:
            try:
                out.append(ipaddress.ip_network(value.strip(), strict=True))
            except ValueError as err:
                hint = ""
                try:
                    hint = f"; did you mean {ipaddress.ip_network(value.strip(), strict=False)}?"
                except ValueError:
                    pass
                if hint:
                    self.error(item, f"`{value}` has host bits set{hint}")
                else:
                    self.error(item, f"`{value}` is not an IP address or CIDR network "
                                     f"(e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32): {err}")
        return tuple(out) if len(out) == len(items) == len(node.value) else None

    def window(self, node: Node) -> TimeWindow | None:
        entries = self.mapping(node, "`when`", WINDOW_KEYS)
        if entries is None:
            return None
        if "days" not in entries and "hours" not in entries:
            self.error(node, "`when` needs `days`, `hours` or both")
            return None
        ok = True
        days = None
        if "days" in entries:
            days = self.days(entries["days"][1])
            ok &= days is not None
        start = end = None
        if "hours" in entries:
            hours = self.hours(entries["hours"][1])
            ok &= hours is not None
            start, end = hours or (None, None)
        timezone = "UTC"
        if "timezone" in entries:
            value_node = entries["timezone"][1]
            name = self.text(value_node, "`timezone`")
            problem = check_timezone(name) if name is not None else "bad"
            if name is not None and problem:
                self.error(value_node, problem)
            ok &= problem is None
            timezone = name or timezone
        if not ok:
            return None
        return TimeWindow(days=days, start_minute=start, end_minute=end, timezone=timezone)

    def days(self, node: Node) -> frozenset[int] | None:
        items = self.texts(node, "`when.days`")
        if items is None:
            return None
        before = len(self.problems)
        out = set()
        for value, item in items:
            word = value.strip().lower()
            day = next((index for index, short in enumerate(DAYS) if word in (short, _FULL_DAYS[index])), None)
            if day is None:
                self.error(item, f"`{value}` is not a day: use {', '.join(DAYS)}")
            else:
                out.add(day)
        return frozenset(out) if len(self.problems) == before else None

    def hours(self, node: Node) -> tuple[int, int] | None:
        value = self.text(node, "`when.hours`")
        if value is None:
            return None
        found = _HOURS.match(value)
        if found:
            h1, m1, h2, m2 = (int(part) for part in found.groups())
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if h1 < 24 and m1 < 60 and m2 < 60 and (h2 < 24 or end == 1440):
                if start == end:
                    self.error(node, f"`{value}` is an empty window: for the whole day leave `hours` out")
                    return None
                return start, end
        self.error(node, f"`{value}` is not a time range: write HH:MM-HH:MM in 24-hour time, e.g. "
                         "08:00-18:00 (22:00-06:00 runs past midnight)")
        return None


def _claim_value(node: Node) -> object | None:
    """A claim value as YAML types it, or None when it is not a plain scalar."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        return scalar(node)
    except ValueError:
        return None


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _kind_words(kinds: tuple[str, ...]) -> str:
    words = []
    for kind in kinds:
        word = KIND_WORDS[kind]
        words.append(word if kind == "cluster" else word + "s")
    return listing(words).replace("`", "")
