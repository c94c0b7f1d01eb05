"""One access request written as data: the `input` of a rules test and of `rules eval`.

    identity: {subject: alice, groups: [analysts], claims: {}, mechanism: OAUTHBEARER}
    action: consume
    resource: {topic: payments.cards.eu}     # or {group: x}, {transactional_id: x}, {cluster: kafka-cluster}
    client: {address: 10.1.2.3, client_id: app, software: apache-kafka-java 3.9.0}   # optional
    time: "2026-01-05T10:00:00Z"             # optional; ISO 8601 with a zone, or epoch seconds
"""

from __future__ import annotations

import math
from datetime import datetime
from types import MappingProxyType

from yaml.nodes import Node, ScalarNode

from brokerguard.identity import Identity
from brokerguard.operations import ACTIONS, ALL_ACTIONS, CLUSTER_NAME, AccessRequest, Client, Resource
from brokerguard.policy.engine import parse_address
from brokerguard.policy.loader import MECHANISMS
from brokerguard.policy.model import KIND_KEYS, KIND_WORDS
from brokerguard.policy.source import Reader, suggest

INPUT_KEYS = ("identity", "action", "resource", "client", "time")
IDENTITY_KEYS = ("subject", "groups", "claims", "mechanism")
RESOURCE_KEYS = tuple(KIND_WORDS)  # topic, group, transactional_id, cluster
CLIENT_KEYS = ("address", "client_id", "software")
DEFAULT_MECHANISM = "OAUTHBEARER"
DEFAULT_ADDRESS = "127.0.0.1"
# datetime's range, which time zones must be able to convert: years 1970 to 9998.
_LATEST = 253_370_764_800.0


def read_input(reader: Reader, node: Node) -> tuple[AccessRequest, float | None] | None:
    """The request and its time (None: the clock), or None with problems recorded in `reader`."""
    entries = reader.mapping(node, "`input`", INPUT_KEYS)
    if entries is None:
        return None
    before = len(reader.problems)
    for key in ("identity", "action", "resource"):
        if key not in entries:
            reader.error(node, f"`input` needs `{key}`")
    identity = read_identity(reader, entries["identity"][1]) if "identity" in entries else None
    resource = read_resource(reader, entries["resource"][1]) if "resource" in entries else None
    action = None
    if "action" in entries:
        action = read_action(reader, entries["action"][1], resource.kind if resource else None)
    client = Client(DEFAULT_ADDRESS)
    if "client" in entries:
        client = read_client(reader, entries["client"][1]) or client
    now = None
    if "time" in entries:
        now = read_time(reader, entries["time"][1])
    if len(reader.problems) > before or identity is None or resource is None or action is None:
        return None
    return AccessRequest(identity, action, resource, client), now


def read_identity(reader: Reader, node: Node) -> Identity | None:
    entries = reader.mapping(node, "`identity`", IDENTITY_KEYS)
    if entries is None:
        return None
    if "subject" not in entries:
        reader.error(node, "`identity` needs `subject`")
        return None
    subject = reader.text(entries["subject"][1], "`identity.subject`")
    groups: frozenset[str] = frozenset()
    if "groups" in entries:
        value_node = entries["groups"][1]
        items = [] if getattr(value_node, "value", None) == [] else reader.texts(value_node, "`identity.groups`")
        groups = frozenset(name for name, _ in items or ())
    claims: dict[object, object] = {}
    if "claims" in entries:
        value = reader.value(entries["claims"][1], "`identity.claims`")
        if isinstance(value, dict):
            claims = value
        elif value is not None:
            reader.error(entries["claims"][1], "`identity.claims` must be a mapping of claim names to values")
    mechanism = DEFAULT_MECHANISM
    if "mechanism" in entries:
        value_node = entries["mechanism"][1]
        written = reader.text(value_node, "`identity.mechanism`")
        known = {name.upper(): name for name in MECHANISMS}.get((written or "").upper())
        if written is not None and known is None:
            reader.error(value_node, f"unknown mechanism `{written}`; mechanisms are {', '.join(MECHANISMS)}")
        mechanism = known or mechanism
    if subject is None:
        return None
    return Identity(subject=subject, mechanism=mechanism, groups=groups, claims=MappingProxyType(claims))


def read_resource(reader: Reader, node: Node) -> Resource | None:
    entries = reader.mapping(node, "`resource`", RESOURCE_KEYS)
    if entries is None:
        return None
    if len(entries) != 1:
        reader.error(node, "`resource` needs exactly one of `topic`, `group`, `transactional_id` or `cluster`")
        return None
    (kind, (_, value_node)), = entries.items()
    if kind == "cluster" and isinstance(value_node, ScalarNode) and value_node.value.lower() == "true":
        return Resource("cluster", CLUSTER_NAME)
    name = reader.text(value_node, f"`resource.{kind}`")
    return Resource(kind, name) if name is not None else None


def read_action(reader: Reader, node: Node, kind: str | None) -> str | None:
    action = reader.text(node, "`action`")
    if action is None:
        return None
    if action not in ALL_ACTIONS:
        reader.error(node, f"unknown action `{action}`{suggest(action, ALL_ACTIONS)}")
        return None
    if kind is not None and action not in ACTIONS[kind]:
        reader.error(node, f"`{action}` is not an action on {KIND_KEYS[kind].replace('_', ' ')}; actions on "
                           f"them are: {', '.join(sorted(ACTIONS[kind]))}")
        return None
    return action


def read_client(reader: Reader, node: Node) -> Client | None:
    entries = reader.mapping(node, "`client`", CLIENT_KEYS)
    if entries is None:
        return None
    address = DEFAULT_ADDRESS
    if "address" in entries:
        value_node = entries["address"][1]
        written = reader.text(value_node, "`client.address`")
        if written is not None and parse_address(written) is None:
            reader.error(value_node, f"`{written}` is not an IP address")
        address = written or address
    client_id = software = None
    if "client_id" in entries:
        client_id = reader.text(entries["client_id"][1], "`client.client_id`")
    if "software" in entries:
        software = reader.text(entries["software"][1], "`client.software`")
    return Client(address, client_id, software)


def read_time(reader: Reader, node: Node) -> float | None:
    written = reader.text(node, "`time`")
    if written is None:
        return None
    try:
        seconds = float(written)
    except ValueError:
        try:
            moment = datetime.fromisoformat(written.strip())
        except ValueError:
            reader.error(node, f"`{written}` is not a time: write ISO 8601 with a zone, e.g. 2026-01-05T10:00:00Z")
            return None
        if moment.tzinfo is None:
            reader.error(node, f"`{written}` has no zone: end it with Z (UTC) or an offset such as +01:00")
            return None
        seconds = moment.timestamp()
    if not (math.isfinite(seconds) and 0 <= seconds < _LATEST):
        reader.error(node, f"`{written}` is outside the years 1970 to 9998")
        return None
    return seconds
