"""Builds messages.json, the Kafka message schema that the codec interprets.

The source of truth is the set of JSON message specs shipped inside the kafka-clients jar
(common/message/*.json) of the Kafka version pinned in devstack/pom.xml. The output keeps only
what a codec needs: per API key its request and response specs (versions, flexible versions,
fields with nested structs resolved) and the two headers. Stdlib only, because setup.py runs
this before anything is installed.

    python plugins/kafka/protocol/generate.py [--force]
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
OUTPUT = HERE / "messages.json"
POM = REPO / "devstack" / "pom.xml"
DEFAULT_KAFKA_VERSION = "4.4.0"  # until devstack/pom.xml pins one
FORMAT = 1  # bump when the shape of messages.json changes, so stale files are rebuilt
SPEC_DIR = "common/message/"
JAR_ENV = "BROKERGUARD_KAFKA_CLIENTS_JAR"

PRIMITIVES = frozenset(
    {"bool", "int8", "int16", "uint16", "int32", "uint32", "int64", "float64",
     "string", "bytes", "records", "uuid"}
)
_INTS = frozenset({"int8", "int16", "uint16", "int32", "uint32", "int64"})
_FIELD_KEYS = ("name", "type", "versions", "nullableVersions", "taggedVersions", "tag",
               "flexibleVersions")
_MESSAGE_KEYS = ("validVersions", "flexibleVersions")


class SchemaError(RuntimeError):
    """The message specs could not be found or understood."""


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version pinned by the dev stack's POM (its <kafka.version> property)."""
    try:
        text = pom.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DEFAULT_KAFKA_VERSION
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", text)
    if match is None:
        raise SchemaError(f"{pom} has no <kafka.version>X</kafka.version> property")
    return match.group(1)


@contextlib.contextmanager
def clients_jar(version: str) -> Iterator[Path]:
    """Yields the kafka-clients jar: env override, dev stack, local Maven repo, else `mvn`."""
    override = os.environ.get(JAR_ENV)
    if override:
        if not Path(override).is_file():
            raise SchemaError(f"{JAR_ENV}={override} is not a file")
        yield Path(override)
        return
    name = f"kafka-clients-{version}.jar"
    candidates = [
        REPO / ".devstack" / "jars" / name,
        Path.home() / ".m2/repository/org/apache/kafka/kafka-clients" / version / name,
    ]
    for jar in candidates:
        if jar.is_file():
            yield jar
            return
    mvn = shutil.which("mvn")
    why = "mvn is not on PATH"
    if mvn:
        with tempfile.TemporaryDirectory(prefix="brokerguard-schema-") as tmp:
            proc = subprocess.run(
                [mvn, "-q", "-B", "dependency:copy",
                 f"-Dartifact=org.apache.kafka:kafka-clients:{version}",
                 f"-DoutputDirectory={tmp}"],
                capture_output=True, text=True, check=False,
            )
            jar = Path(tmp) / name
            if proc.returncode == 0 and jar.is_file():
                yield jar
                return
            why = f"`mvn dependency:copy` failed: {_maven_error(proc.stdout + proc.stderr)}"
    looked = ", ".join(str(c) for c in candidates)
    raise SchemaError(
        f"cannot find kafka-clients {version} to build the Kafka message schema. "
        f"Looked at {looked}; {why}. Set {JAR_ENV} to a kafka-clients-{version}.jar, "
        "or install Maven with network access."
    )


def _maven_error(output: str) -> str:
    """Maven's first [ERROR] line, which names the cause; the rest is boilerplate."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    errors = [line[len("[ERROR]"):].strip()
              for line in plain.splitlines() if line.startswith("[ERROR]")]
    return next((e for e in errors if e), plain.strip()[-300:] or "no output")


def strip_comments(text: str) -> str:
    """Removes the `//` line comments Kafka's spec files carry, leaving string contents alone."""
    out = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                out.append(text[i:i + 2])
                i += 2
                continue
            in_string = c != '"'
        elif c == '"':
            in_string = True
        elif c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        out.append(c)
        i += 1
    return "".join(out)


def load_specs(jar: Path) -> list[dict]:
    """Every spec file in the jar, parsed."""
    specs = []
    if not zipfile.is_zipfile(jar):
        raise SchemaError(f"{jar} is not a jar (zip) file")
    with zipfile.ZipFile(jar) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(SPEC_DIR)
                       and n.endswith(".json") and "/" not in n[len(SPEC_DIR):])
        if not names:
            raise SchemaError(f"{jar} holds no {SPEC_DIR}*.json message specs")
        for name in names:
            try:
                specs.append(json.loads(strip_comments(zf.read(name).decode("utf-8"))))
            except (ValueError, UnicodeDecodeError) as err:
                raise SchemaError(f"{jar}!{name}: {err}") from err
    return specs


def _default(field: dict, owner: str):
    """The field's "default" as a JSON value: ints (hex too), bools, floats, strings, null."""
    raw, kind = field["default"], field["type"]
    if not isinstance(raw, str):
        return raw
    if raw == "null":
        return None
    try:
        if kind in _INTS:
            text = raw.lower()
            sign = -1 if text.startswith("-") else 1
            digits = text.lstrip("+-")
            if digits.startswith("0x"):
                return sign * int(digits[2:], 16)
            if len(digits) > 1 and digits.startswith("0"):
                return sign * int(digits, 8)
            return sign * int(digits)
        if kind == "bool":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
        if kind == "float64":
            return float(raw)
        if kind == "string":
            return raw
    except ValueError:
        pass
    raise SchemaError(f"{owner}: field {field['name']} has a default {raw!r} "
                      f"that does not fit {kind}")


def _fields(fields: list[dict], common: dict[str, dict], owner: str,
            chain: tuple = ()) -> list[dict]:
    out = []
    for field in fields:
        item = {k: field[k] for k in _FIELD_KEYS if k in field}
        if "default" in field:
            item["default"] = _default(field, owner)
        base = field["type"].removeprefix("[]")
        if base not in PRIMITIVES:
            body = field.get("fields")
            if body is None:
                if base not in common:
                    raise SchemaError(f"{owner}: field {field['name']} has struct type {base} "
                                      "with neither fields nor a common struct of that name")
                if base in chain:
                    raise SchemaError(f"{owner}: struct {base} contains itself")
                body = common[base]["fields"]
            item["fields"] = _fields(body, common, owner, chain + (base,))
        out.append(item)
    return out


def _message(spec: dict) -> dict:
    common = {s["name"]: s for s in spec.get("commonStructs", [])}
    out = {k: spec[k] for k in _MESSAGE_KEYS if k in spec}
    out.setdefault("flexibleVersions", "none")
    if spec.get("latestVersionUnstable"):
        out["latestVersionUnstable"] = True
    out["fields"] = _fields(spec.get("fields", []), common, spec["name"])
    return out


def build(specs: list[dict], version: str) -> dict:
    """The content of messages.json for these parsed specs."""
    apis: dict[int, dict] = {}
    headers = {}
    for spec in specs:
        kind = spec.get("type")
        if kind == "header":
            headers[spec["name"]] = _message(spec)
        elif kind in ("request", "response"):
            entry = apis.setdefault(spec["apiKey"], {"key": spec["apiKey"]})
            if kind == "request":
                entry["name"] = spec["name"].removesuffix("Request")
            entry[kind] = _message(spec)
    for key, entry in apis.items():
        if "request" not in entry or "response" not in entry:
            raise SchemaError(f"API key {key} lacks a request or a response spec")
    for name in ("RequestHeader", "ResponseHeader"):
        if name not in headers:
            raise SchemaError(f"the specs have no {name}")
    return {
        "format": FORMAT,
        "kafka_version": version,
        "source": f"kafka-clients-{version}.jar {SPEC_DIR}*.json ({len(specs)} files)",
        "headers": headers,
        "apis": [apis[k] for k in sorted(apis)],
    }


def _stamp(path: Path) -> tuple | None:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
        return data.get("format"), data.get("kafka_version")
    except (OSError, ValueError, AttributeError):
        return None


def ensure_schema(force: bool = False, output: Path = OUTPUT) -> Path:
    """Writes messages.json unless it exists and was built from the pinned Kafka version."""
    version = kafka_version()
    if not force and _stamp(output) == (FORMAT, version):
        return output
    with clients_jar(version) as jar:
        content = build(load_specs(jar), version)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content, separators=(",", ":")) + "\n", encoding="utf-8")
    os.replace(tmp, output)  # atomic: parallel builds never see half a file
    print(f"brokerguard: wrote {output} from kafka-clients {version}", file=sys.stderr)
    return output


if __name__ == "__main__":
    try:
        ensure_schema(force="--force" in sys.argv[1:])
    except SchemaError as err:
        sys.exit(f"error: {err}")
