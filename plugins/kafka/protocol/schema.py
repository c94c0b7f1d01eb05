"""The Kafka message schema as objects, loaded once from messages.json (built by generate.py)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA_PATH = Path(__file__).with_name("messages.json")

PRIMITIVES = frozenset(
    {"bool", "int8", "int16", "uint16", "int32", "uint32", "int64", "float64",
     "string", "bytes", "records", "uuid"}
)
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
_MAX_VERSION = 0x7FFF


class Versions(NamedTuple):
    """An inclusive version range as Kafka writes it: "3+", "1-4", "7"."""

    lo: int
    hi: int

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.lo <= version <= self.hi

    def __str__(self) -> str:
        if self.hi == _MAX_VERSION:
            return f"{self.lo}+"
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


def parse_versions(text: str | None) -> Versions | None:
    """Kafka's version range syntax; "none" (or absent) is None."""
    if text is None or text == "none":
        return None
    match = re.fullmatch(r"(\d+)(\+|-(\d+))?", text.strip())
    if match is None:
        raise ValueError(f"bad version range {text!r}")
    lo = int(match.group(1))
    if match.group(2) == "+":
        return Versions(lo, _MAX_VERSION)
    return Versions(lo, int(match.group(3)) if match.group(3) else lo)


def snake_case(name: str) -> str:
    """Kafka's own rule (the protocol guide's names): a capital after a non-capital starts a word.

    ThrottleTimeMs -> throttle_time_ms, TopicID -> topic_id, KRaftVersion -> kraft_version,
    Enable2Pc -> enable2_pc.
    """
    out = []
    prev_upper = True
    for c in name:
        if c.isupper():
            if not prev_upper:
                out.append("_")
            out.append(c.lower())
            prev_upper = True
        else:
            out.append(c)
            prev_upper = False
    return "".join(out)


def _in(versions: Versions | None, version: int) -> bool:
    return versions is not None and versions.lo <= version <= versions.hi


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str  # as in the spec: "ThrottleTimeMs"
    key: str  # as in decoded dicts: "throttle_time_ms"
    type: str  # "int32", "[]int32", "[]MetadataResponseTopic", "Assignment"
    versions: Versions | None
    nullable_versions: Versions | None
    tagged_versions: Versions | None
    tag: int | None
    flexible_override: Versions | None | Any  # MISSING: follows the message
    default: Any  # MISSING when the spec gives none
    fields: tuple[FieldSpec, ...]  # of a struct or struct array

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[2:] if self.is_array else self.type

    @property
    def is_struct(self) -> bool:
        """A struct or an array of structs."""
        return self.element_type not in PRIMITIVES

    def present(self, version: int) -> bool:
        return _in(self.versions, version)

    def nullable(self, version: int) -> bool:
        return _in(self.nullable_versions, version)

    def tagged(self, version: int) -> bool:
        return _in(self.tagged_versions, version)

    def compact(self, version: int, flexible: bool) -> bool:
        """Whether lengths use the compact (varint) form; ClientId in the header never does."""
        if self.flexible_override is MISSING:
            return flexible
        return _in(self.flexible_override, version)

    def default_for(self, version: int) -> Any:
        """The value a missing field takes when encoding, as Kafka's generated code defaults it."""
        nullable = self.nullable(version)
        if self.default is not MISSING and (self.default is not None or nullable):
            return self.default
        if self.is_array:
            return []
        kind = self.type
        if kind == "records":
            return None if nullable else b""
        if kind not in PRIMITIVES:
            return {}
        return _TYPE_DEFAULTS[kind]


_TYPE_DEFAULTS = {
    "bool": False, "int8": 0, "int16": 0, "uint16": 0, "int32": 0, "uint32": 0, "int64": 0,
    "float64": 0.0, "string": "", "bytes": b"", "uuid": bytes(16),
}


@dataclass(frozen=True, slots=True)
class MessageSpec:
    name: str  # "MetadataRequest", "RequestHeader"
    versions: Versions | None  # validVersions
    flexible_versions: Versions | None
    fields: tuple[FieldSpec, ...]
    latest_version_unstable: bool = False

    def flexible(self, version: int) -> bool:
        return _in(self.flexible_versions, version)


@dataclass(frozen=True, slots=True)
class ApiSpec:
    key: int
    name: str  # "Metadata"
    min_version: int  # the request's validVersions
    max_version: int
    request_flexible_from: int | None
    response_flexible_from: int | None
    request: MessageSpec
    response: MessageSpec
    latest_version_unstable: bool  # max_version is still in development upstream

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version

    def request_has_field(self, key: str) -> bool:
        """Whether some struct of the request, in some version, has a field of this key."""
        return _has_field(self.request.fields, key, None)

    def response_has_field(self, key: str, version: int | None = None) -> bool:
        """Whether some struct of the response has a field of this key: in `version`, or in
        some version."""
        return _has_field(self.response.fields, key, version)


def _has_field(fields: tuple[FieldSpec, ...], key: str, version: int | None) -> bool:
    return any((version is None or f.present(version)) and (f.key == key or _has_field(f.fields, key, version))
               for f in fields)


@dataclass(frozen=True, slots=True)
class Schema:
    kafka_version: str
    apis: dict[int, ApiSpec]  # only APIs with at least one valid version
    retired: dict[int, str]  # API key -> name, for APIs whose every version was removed
    request_header: MessageSpec
    response_header: MessageSpec


def _field(raw: dict) -> FieldSpec:
    override = raw.get("flexibleVersions", MISSING)
    return FieldSpec(
        name=raw["name"],
        key=snake_case(raw["name"]),
        type=raw["type"],
        versions=parse_versions(raw.get("versions")),
        nullable_versions=parse_versions(raw.get("nullableVersions")),
        tagged_versions=parse_versions(raw.get("taggedVersions")),
        tag=raw.get("tag"),
        flexible_override=override if override is MISSING else parse_versions(override),
        default=raw.get("default", MISSING),
        fields=tuple(_field(f) for f in raw.get("fields", ())),
    )


def _message(name: str, raw: dict) -> MessageSpec:
    return MessageSpec(
        name=name,
        versions=parse_versions(raw.get("validVersions")),
        flexible_versions=parse_versions(raw.get("flexibleVersions")),
        fields=tuple(_field(f) for f in raw["fields"]),
        latest_version_unstable=bool(raw.get("latestVersionUnstable")),
    )


def _first(versions: Versions | None) -> int | None:
    return versions.lo if versions else None


def load(path: Path = SCHEMA_PATH) -> Schema:
    try:
        with path.open(encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise RuntimeError(
            f"{path} is missing: it is generated at build time. Run `pip install -e .` or "
            "`python plugins/kafka/protocol/generate.py` in the repository."
        ) from None
    apis, retired = {}, {}
    for entry in raw["apis"]:
        request = _message(entry["name"] + "Request", entry["request"])
        response = _message(entry["name"] + "Response", entry["response"])
        if request.versions is None:
            retired[entry["key"]] = entry["name"]
            continue
        apis[entry["key"]] = ApiSpec(
            key=entry["key"],
            name=entry["name"],
            min_version=request.versions.lo,
            max_version=request.versions.hi,
            request_flexible_from=_first(request.flexible_versions),
            response_flexible_from=_first(response.flexible_versions),
            request=request,
            response=response,
            latest_version_unstable=request.latest_version_unstable,
        )
    headers = raw["headers"]
    return Schema(
        kafka_version=raw["kafka_version"],
        apis=apis,
        retired=retired,
        request_header=_message("RequestHeader", headers["RequestHeader"]),
        response_header=_message("ResponseHeader", headers["ResponseHeader"]),
    )
