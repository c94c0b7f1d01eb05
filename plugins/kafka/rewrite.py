"""The responses the gateway must change: API versions it offers, and broker addresses.

Clients must only ever learn gateway addresses, so every response whose schema carries a broker
host and port is decoded, each endpoint is replaced by the gateway's port for that node id, and
the response is encoded again. ApiVersions is answered with the intersection of the broker's
versions and the ones the gateway can parse.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from brokerguard.config import KafkaListen
from brokerguard.errors import ProtocolError

from . import apis
from .protocol import codec

if TYPE_CHECKING:
    from .directory import BrokerDirectory

log = logging.getLogger("brokerguard.kafka")

UNSUPPORTED_VERSION = 35
UNSUPPORTED_SASL_MECHANISM = 33

# Produce v10+ and Fetch v16+ responses may carry broker endpoints (KIP-951 leader discovery) in
# a tagged field; the gateway would have to decode every one of them on the hot path to rewrite
# those, so it offers the versions before, where leaders are found through Metadata instead.
VERSION_CAPS = {apis.PRODUCE: 9, apis.FETCH: 15}
# The gateway authenticates to the broker itself; client SASL is the gateway's own to offer.
HIDDEN = frozenset({apis.SASL_HANDSHAKE, apis.SASL_AUTHENTICATE})
# Responses from which the gateway learns where each broker really is.
DIRECTORY_SOURCES = frozenset({apis.METADATA, apis.FIND_COORDINATOR, apis.DESCRIBE_CLUSTER})
CONTROLLER_ENDPOINTS = 2  # DescribeCluster endpoint_type for controllers


class Versions:
    """The API versions the gateway offers clients."""

    def __init__(self) -> None:
        self.supported: dict[int, tuple[int, int]] = {}
        for key, spec in codec.API_KEYS.items():
            if key not in HIDDEN:
                self.supported[key] = (spec.min_version, min(spec.max_version, VERSION_CAPS.get(key, spec.max_version)))
        size = max(codec.API_KEYS) + 1
        self.flexible_from = [-1] * size
        for key, spec in codec.API_KEYS.items():
            if spec.request_flexible_from is not None:
                self.flexible_from[key] = spec.request_flexible_from

    def intersect(self, offered: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for entry in offered:
            ours = self.supported.get(entry["api_key"])
            if ours is None:
                continue
            low, high = max(ours[0], entry["min_version"]), min(ours[1], entry["max_version"])
            if low <= high:
                kept.append({**entry, "min_version": low, "max_version": high})
        return kept

    def table(self) -> list[dict[str, Any]]:
        return [{"api_key": k, "min_version": lo, "max_version": hi} for k, (lo, hi) in sorted(self.supported.items())]


def _address_apis() -> frozenset[int]:
    return frozenset(key for key, spec in codec.API_KEYS.items() if spec.response_has_field("host"))


def frame(correlation_id: int, api_key: int, api_version: int, body: dict[str, Any]) -> bytes:
    header = codec.encode_response_header(correlation_id, codec.response_header_version(api_key, api_version))
    payload = header + codec.encode_response(api_key, api_version, body)
    return len(payload).to_bytes(4, "big") + payload


class Rewriter:
    def __init__(self, listen: KafkaListen, directory: BrokerDirectory, versions: Versions) -> None:
        self._host = listen.public_host
        self._ports = listen.broker_ports
        self._bootstrap_port = listen.port
        self._directory = directory
        self._versions = versions
        self._unmapped: set[int] = set()
        self.apis = _address_apis() | {apis.API_VERSIONS}

    def response(self, api_key: int, api_version: int, data: memoryview) -> bytes:
        """Rewrite one whole response frame (size prefix included)."""
        header_version = codec.response_header_version(api_key, api_version)
        try:
            correlation_id, offset = codec.decode_response_header(data, 4, header_version)
            if api_key == apis.API_VERSIONS:
                return self._api_versions(correlation_id, api_version, data, offset)
            body = codec.decode_response(api_key, api_version, data, offset)
        except codec.DecodeError as err:
            raise ProtocolError("upstream", str(err)) from err
        learn = api_key in DIRECTORY_SOURCES and body.get("endpoint_type") != CONTROLLER_ENDPOINTS
        self._endpoints(body, None, learn)
        return frame(correlation_id, api_key, api_version, body)

    def _api_versions(self, correlation_id: int, version: int, data: memoryview, offset: int) -> bytes:
        # A broker that does not know the requested version answers in v0 (KIP-511).
        if int.from_bytes(data[offset : offset + 2], "big", signed=True) == UNSUPPORTED_VERSION:
            version = 0
        body = codec.decode_response(apis.API_VERSIONS, version, data, offset)
        body["api_keys"] = self._versions.intersect(body["api_keys"])
        return frame(correlation_id, apis.API_VERSIONS, version, body)

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

    def unsupported_api_versions(self, correlation_id: int) -> bytes:
        """Answer to an ApiVersions request newer than the gateway parses (KIP-511: v0 body)."""
        body = {"error_code": UNSUPPORTED_VERSION, "api_keys": self._versions.table()}
        payload = correlation_id.to_bytes(4, "big", signed=True) + codec.encode_response(apis.API_VERSIONS, 0, body)
        return len(payload).to_bytes(4, "big") + payload

    def no_client_sasl(self, correlation_id: int, api_version: int) -> bytes:
        body = {"error_code": UNSUPPORTED_SASL_MECHANISM, "mechanisms": []}
        return frame(correlation_id, apis.SASL_HANDSHAKE, api_version, body)
