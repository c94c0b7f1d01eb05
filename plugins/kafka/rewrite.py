"""The responses the gateway must change: API versions it offers, and broker addresses.

Clients must only ever learn gateway addresses, so every response whose schema carries a broker
host and port is decoded, each endpoint is replaced by the gateway's port for that node id, and
the response is encoded again; the same pass applies what authorization adds or hides. ApiVersions
is answered by the gateway with the intersection of the broker's versions and the ones it parses
and authorizes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from brokerguard.config import KafkaListen
from brokerguard.errors import ProtocolError

from . import apis
from .protocol import codec

if TYPE_CHECKING:
    from .authorize import TopicNames
    from .directory import BrokerDirectory

log = logging.getLogger("brokerguard.kafka")

UNSUPPORTED_VERSION = 35

# Produce v10+ and Fetch v16+ responses may carry broker endpoints (KIP-951 leader discovery) in
# a tagged field; the gateway would have to decode every one of them on the hot path to rewrite
# those, so it offers the versions before, where leaders are found through Metadata instead.
VERSION_CAPS = {apis.PRODUCE: 9, apis.FETCH: 15}
# Client SASL is the gateway's own. SaslHandshake v0 stays in the offered range because librdkafka
# looks for it to decide the broker speaks SASL at all, but a v0 handshake (raw SASL bytes after
# it, outside Kafka framing) is refused: every supported client uses v1.
LOGIN_VERSIONS = {apis.API_VERSIONS: None, apis.SASL_HANDSHAKE: (0, 1), apis.SASL_AUTHENTICATE: None}
OWN_APIS = frozenset({apis.SASL_HANDSHAKE, apis.SASL_AUTHENTICATE})
# Responses from which the gateway learns where each broker really is.
DIRECTORY_SOURCES = frozenset({apis.METADATA, apis.FIND_COORDINATOR, apis.DESCRIBE_CLUSTER})
CONTROLLER_ENDPOINTS = 2  # DescribeCluster endpoint_type for controllers
# Responses that tell topic ids and names, for requests that name topics by id only.
TOPIC_ID_SOURCES = frozenset(codec.API_BY_NAME[name].key for name in ("Metadata", "CreateTopics", "DescribeTopicPartitions"))


class Versions:
    """The API versions the gateway offers clients."""

    def __init__(self, authorized: frozenset[int]) -> None:
        self.supported: dict[int, tuple[int, int]] = {}
        for key, spec in codec.API_KEYS.items():
            if key in LOGIN_VERSIONS and LOGIN_VERSIONS[key] is not None:
                self.supported[key] = LOGIN_VERSIONS[key]
            elif key in authorized or key in LOGIN_VERSIONS:
                self.supported[key] = (spec.min_version, min(spec.max_version, VERSION_CAPS.get(key, spec.max_version)))
        size = max(codec.API_KEYS) + 1
        self.flexible_from = [-1] * size
        for key, spec in codec.API_KEYS.items():
            if spec.request_flexible_from is not None:
                self.flexible_from[key] = spec.request_flexible_from

    def intersect(self, offered: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The broker's table cut to what the gateway parses and authorizes; the login APIs are
        the gateway's own, whatever the broker's listener offers."""
        kept = []
        for entry in offered:
            ours = self.supported.get(entry["api_key"])
            if ours is None or entry["api_key"] in OWN_APIS:
                continue
            low, high = max(ours[0], entry["min_version"]), min(ours[1], entry["max_version"])
            if low <= high:
                kept.append({**entry, "min_version": low, "max_version": high})
        kept += [{"api_key": key, "min_version": self.supported[key][0], "max_version": self.supported[key][1]}
                 for key in sorted(OWN_APIS)]
        return sorted(kept, key=lambda entry: entry["api_key"])

    def table(self) -> list[dict[str, Any]]:
        return [{"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi) in sorted(self.supported.items())]


def _decoded_responses() -> frozenset[tuple[int, int]]:
    """(api key, version) of the responses decoded whatever authorization did: those that carry
    broker endpoints in that version (a host and a port), and those that tell topic ids."""
    return frozenset((key, version) for key, spec in codec.API_KEYS.items()
                     for version in range(spec.min_version, spec.max_version + 1)
                     if key in TOPIC_ID_SOURCES or (spec.response_has_field("host", version)
                                                    and spec.response_has_field("port", version)))


def response_frame(correlation_id: int, api_key: int, api_version: int, body: dict[str, Any]) -> bytes:
    """A whole response frame (size prefix included) for `body`."""
    header = codec.encode_response_header(correlation_id, codec.response_header_version(api_key, api_version))
    encoded = codec.encode_response(api_key, api_version, body)
    # One copy of a body that may be megabytes of records, not one per concatenation.
    return b"".join(((len(header) + len(encoded)).to_bytes(4, "big"), header, encoded))


def request_frame(header: bytes, body: bytes) -> bytes:
    """A whole request frame from the client's own header bytes and a new body."""
    return (len(header) + len(body)).to_bytes(4, "big") + header + body


class Rewriter:
    def __init__(self, listen: KafkaListen, directory: BrokerDirectory, topic_names: TopicNames) -> None:
        self._host = listen.public_host
        self._ports = listen.broker_ports
        self._bootstrap_port = listen.port
        self._directory = directory
        self._topic_names = topic_names
        self._unmapped: set[int] = set()
        # Responses decoded even when authorization leaves them alone: broker addresses to
        # replace, topic ids to learn. Produce and Fetch, most of the traffic, are not among
        # them in the versions the gateway offers (VERSION_CAPS).
        self.decoded = _decoded_responses()

    def response(self, api_key: int, api_version: int, data: memoryview,
                 merge: Callable[[dict], None] | None, observe: Callable[[dict], None] | None = None) -> bytes:
        """Rewrite one whole response frame (size prefix included): first what authorization
        adds or hides (`merge`), then the broker addresses. `observe` sees the body the client
        gets (the audit trail reads its errors)."""
        header_version = codec.response_header_version(api_key, api_version)
        try:
            correlation_id, offset = codec.decode_response_header(data, 4, header_version)
            body = codec.decode_response(api_key, api_version, data, offset)
        except codec.DecodeError as err:
            raise ProtocolError("upstream", str(err)) from err
        if api_key in TOPIC_ID_SOURCES:
            self._topic_names.learn(api_key, body)
        if merge is not None:
            merge(body)
        if observe is not None:
            observe(body)
        learn = api_key in DIRECTORY_SOURCES and body.get("endpoint_type") != CONTROLLER_ENDPOINTS
        self._endpoints(body, None, learn)
        return response_frame(correlation_id, api_key, api_version, body)

    def _endpoints(self, value: dict[str, Any], node_id: int | None, learn: bool) -> None:
        node_id = value.get("node_id", value.get("broker_id", node_id))
        if "host" in value and "port" in value and value["host"] and value["port"] >= 0:
            if learn and node_id is not None:
                self._directory.learn(node_id, value["host"], value["port"])
            value["host"] = self._host
            value["port"] = self._port_for(node_id)
        for item in value.values():
            if isinstance(item, list):
                for element in item:
                    if isinstance(element, dict):
                        self._endpoints(element, node_id, learn)

    def _port_for(self, node_id: int | None) -> int:
        port = self._ports.port_for(node_id) if node_id is not None else None
        if port is not None:
            return port
        if node_id not in self._unmapped:
            self._unmapped.add(node_id)
            log.error("broker node id %s has no gateway port: raise kafka.listen.broker_ports.count "
                      "above it; clients are sent to the bootstrap port meanwhile", node_id)
        return self._bootstrap_port



def api_versions_answer(correlation_id: int, version: int, broker: dict[str, Any] | None,
                        versions: Versions) -> bytes:
    """The gateway's ApiVersions answer: the broker's answer (features and all) with only the
    versions both sides speak. A version newer than the gateway parses gets UNSUPPORTED_VERSION
    and the gateway's own table in a v0 body, as KIP-511 asks."""
    if broker is None or version > versions.supported[apis.API_VERSIONS][1]:
        body = {"error_code": UNSUPPORTED_VERSION, "api_keys": versions.table()}
        payload = correlation_id.to_bytes(4, "big", signed=True) + codec.encode_response(apis.API_VERSIONS, 0, body)
        return len(payload).to_bytes(4, "big") + payload
    body = {**broker, "error_code": 0, "throttle_time_ms": 0, "api_keys": versions.intersect(broker["api_keys"])}
    body.pop(codec.UNKNOWN_TAGS, None)
    return response_frame(correlation_id, apis.API_VERSIONS, version, body)
