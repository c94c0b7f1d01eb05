"""Gateway configuration: YAML validated into typed structs when the gateway starts.

A mistake fails at start with the path of the bad key and why, e.g.
``Expected `int`, got `str` - at `$.kafka.listen.port```.
Secrets are read from the environment or a file and kept in ``Secret`` so they never reach a log.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

import msgspec

from brokerguard.errors import ConfigError
from brokerguard.secret import Secret

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


def _check_port(name: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"`{name}` must be a TCP port from 1 to 65535, got {port}")


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"`{address}` is not HOST:PORT")
    _check_port("port", int(port))
    return host.strip("[]"), int(port)


class BrokerPorts(_Strict):
    """Broker with node id N is reached through port ``first + N``."""

    first: int = 19093
    count: int = 8

    def __post_init__(self) -> None:
        _check_port("first", self.first)
        if self.count < 1 or self.first + self.count - 1 > 65535:
            raise ValueError(f"`count` {self.count} does not fit in the ports after {self.first}")

    def port_for(self, node_id: int) -> int | None:
        return self.first + node_id if 0 <= node_id < self.count else None

    def node_for(self, port: int) -> int:
        return port - self.first


class KafkaListen(_Strict):
    host: str = "127.0.0.1"
    port: int = 19092
    advertised_host: str | None = None
    broker_ports: BrokerPorts = BrokerPorts()

    def __post_init__(self) -> None:
        _check_port("port", self.port)
        if self.broker_ports.first <= self.port < self.broker_ports.first + self.broker_ports.count:
            raise ValueError(f"`port` {self.port} overlaps `broker_ports`")
        if not self.advertised_host and _is_wildcard(self.host):
            raise ValueError(f"set `advertised_host`: clients cannot connect to {self.host}")

    @property
    def public_host(self) -> str:
        """The host clients are told to connect to."""
        return self.advertised_host or self.host


class TlsClient(_Strict):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True
    server_hostname: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"`{name}` {path} is not a readable file")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("`cert_file` and `key_file` go together (mutual TLS)")


class SaslClient(_Strict):
    """The gateway's own credentials at the broker. Give the password by env or file."""

    mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str = ""
    password_env: str | None = None
    password_file: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if not self.username:
            raise ValueError("`username` is required")
        given = [n for n in ("password_env", "password_file", "password") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of `password_env`, `password_file`, `password`")
        if self.password_env and self.password_env not in os.environ:
            raise ValueError(f"`password_env`: environment variable {self.password_env} is not set")
        if self.password_file and not Path(self.password_file).is_file():
            raise ValueError(f"`password_file` {self.password_file} is not a readable file")

    def secret(self) -> Secret:
        if self.password_env:
            return Secret(os.environ[self.password_env])
        if self.password_file:
            return Secret(Path(self.password_file).read_text().rstrip("\r\n"))
        return Secret(self.password or "")


class KafkaUpstream(_Strict):
    bootstrap_servers: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:9092"])
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl: SaslClient | None = None
    tls: TlsClient = TlsClient()
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("`bootstrap_servers` needs at least one HOST:PORT")
        for address in self.bootstrap_servers:
            _split_host_port(address)
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_sasl and self.sasl is None:
            raise ValueError(f"`sasl` is required with security_protocol {self.security_protocol}")
        if not uses_sasl and self.sasl is not None:
            raise ValueError(f"`sasl` is set but security_protocol {self.security_protocol} does not use it")
        if self.connect_timeout_s <= 0:
            raise ValueError("`connect_timeout_s` must be positive")

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [_split_host_port(a) for a in self.bootstrap_servers]

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


class KafkaConfig(_Strict):
    listen: KafkaListen = KafkaListen()
    upstream: KafkaUpstream = KafkaUpstream()
    # A client request larger than this closes that client's connection (the broker's own
    # socket.request.max.bytes default); responses from the broker are trusted up to
    # max_response_bytes.
    max_frame_bytes: int = 100 * 1024 * 1024
    max_response_bytes: int = 1024 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_frame_bytes < 1024:
            raise ValueError("`max_frame_bytes` must be at least 1024")
        if self.max_response_bytes < 1024:
            raise ValueError("`max_response_bytes` must be at least 1024")


class Config(_Strict):
    workers: int = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # On SIGTERM, requests already received get this long to be answered before connections close.
    drain_timeout_s: float = 30.0
    kafka: KafkaConfig | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("`workers` must be at least 1")
        if self.drain_timeout_s < 0:
            raise ValueError("`drain_timeout_s` cannot be negative")
        if self.kafka is None:
            raise ValueError("no adapter is configured: add a `kafka` section")


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file; raise ConfigError naming the file and the bad key."""
    try:
        text = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from err
    return parse(text, source=str(path))


def parse(text: bytes | str, source: str = "<config>") -> Config:
    try:
        return msgspec.yaml.decode(text or b"{}", type=Config)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{source}: {err}") from None
    except msgspec.DecodeError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None


def replace(config: Config, **changes: object) -> Config:
    return msgspec.structs.replace(config, **changes)
