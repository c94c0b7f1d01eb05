"""Gateway configuration: YAML validated into typed structs when the gateway starts.

A mistake fails at start with the path of the bad key and why, e.g.
``Expected `int`, got `str` - at `$.kafka.listen.port```.
Secrets are read from the environment or a file and kept in ``Secret`` so they never reach a log.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import msgspec

from brokerguard.errors import ConfigError
from brokerguard.secret import Secret

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
ClientSaslMechanism = Literal["OAUTHBEARER", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
# Asymmetric only: an HMAC algorithm would let anyone holding the issuer's public key sign tokens.
JwtAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


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


class ListenTls(_Strict):
    """TLS on the client side. With `client_ca_file`, clients may (`requested`) or must
    (`required`) show a certificate signed by it; a verified certificate is an identity."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_auth: Literal["none", "requested", "required"] = "none"

    def __post_init__(self) -> None:
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"`{name}` {path} is not a readable file")
        if self.client_auth != "none" and self.client_ca_file is None:
            raise ValueError(f"`client_auth: {self.client_auth}` needs `client_ca_file`")


class KafkaListen(_Strict):
    host: str = "127.0.0.1"
    port: int = 19092
    advertised_host: str | None = None
    broker_ports: BrokerPorts = BrokerPorts()
    tls: ListenTls | None = None
    # The SASL mechanisms offered to clients; by default every one the `identity` section can check.
    sasl_mechanisms: list[ClientSaslMechanism] | None = None

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


class Oidc(_Strict):
    """OAUTHBEARER tokens: JWTs from this issuer, checked against its published keys (JWKS)."""

    issuer: str
    audience: list[str]
    # Where the keys are: `jwks_url`, else the issuer's discovery document (`discovery_url`,
    # by default ISSUER/.well-known/openid-configuration).
    jwks_url: str | None = None
    discovery_url: str | None = None
    algorithms: list[JwtAlgorithm] = msgspec.field(default_factory=lambda: ["RS256", "ES256"])
    subject_claim: str = "sub"
    groups_claim: str | None = "groups"
    clock_skew_s: float = 30.0
    # Keys are fetched again this often, and at once (at most every `jwks_min_refresh_s`) when a
    # token names a key id the gateway has not seen: the issuer rotated its keys.
    jwks_refresh_s: float = 300.0
    jwks_min_refresh_s: float = 10.0
    jwks_timeout_s: float = 5.0
    ca_file: str | None = None  # CA bundle for an https JWKS/discovery URL with a private CA

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("`issuer` is required")
        if not self.audience:
            raise ValueError("`audience` needs at least one value")
        if not self.algorithms:
            raise ValueError("`algorithms` needs at least one algorithm")
        if self.jwks_url and self.discovery_url:
            raise ValueError("give `jwks_url` or `discovery_url`, not both")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"`ca_file` {self.ca_file} is not a readable file")

    @property
    def discovery(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class CertificateIdentity(_Strict):
    """How a verified client certificate becomes an identity (mTLS)."""

    subject_from: Literal["cn", "dn", "san_dns", "san_uri", "san_email"] = "cn"
    groups_from: Literal["ou", "none"] = "ou"


class IdentityConfig(_Strict):
    oidc: Oidc | None = None
    # Service accounts for SCRAM and PLAIN: salted hashes only, managed by `brokerguard users`.
    credentials_file: str | None = None
    certificates: CertificateIdentity = CertificateIdentity()
    # Every failed authentication is answered this long after it arrived, whatever failed.
    failed_auth_delay_ms: int = 100
    # Failed authentications allowed per client address per minute; beyond, attempts are refused.
    failed_auth_per_minute: int = 20
    # Sessions not bound by a token's expiry (SCRAM, PLAIN, mTLS) last at most this long before
    # the client must re-authenticate (KIP-368); 0 means no limit.
    max_session_lifetime_s: float = 0.0
    # PLAIN sends the password itself: offered only on TLS listeners unless this is set.
    allow_plain_without_tls: bool = False

    def __post_init__(self) -> None:
        if self.failed_auth_delay_ms < 0 or self.failed_auth_per_minute < 1:
            raise ValueError("`failed_auth_delay_ms` must be >= 0 and `failed_auth_per_minute` >= 1")
        if self.max_session_lifetime_s < 0:
            raise ValueError("`max_session_lifetime_s` cannot be negative")


class RulesConfig(_Strict):
    dir: str = "rules"
    cache_size: int = 100_000  # cached decisions per worker; the cache is emptied when full

    def __post_init__(self) -> None:
        if self.cache_size < 1:
            raise ValueError("`cache_size` must be at least 1")


class ContentConfig(_Strict):
    """How record content is handled under the rules' mask and validate obligations."""

    # The key of the masks' `hash` strategy (stable pseudonyms): give it by env or file, so every
    # worker and every restart makes the same pseudonym of the same value.
    hash_key_env: str | None = None
    hash_key_file: str | None = None
    # A record batch may decompress to at most this much; more is refused as a decompression bomb.
    max_uncompressed_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.hash_key_env and self.hash_key_file:
            raise ValueError("give one of `hash_key_env` and `hash_key_file`")
        if self.hash_key_env and not os.environ.get(self.hash_key_env):
            raise ValueError(f"`hash_key_env`: environment variable {self.hash_key_env} is not set")
        if self.hash_key_file and not Path(self.hash_key_file).is_file():
            raise ValueError(f"`hash_key_file` {self.hash_key_file} is not a readable file")
        if self.max_uncompressed_bytes < 1024:
            raise ValueError("`max_uncompressed_bytes` must be at least 1024")

    def hash_key(self) -> Secret | None:
        if self.hash_key_env:
            return Secret(os.environ[self.hash_key_env])
        if self.hash_key_file:
            return Secret(Path(self.hash_key_file).read_text().rstrip("\r\n"))
        return None


class LimitsConfig(_Strict):
    """Limits that are not per rule. Rates per identity and topic are rules' `limit`."""

    # Live connections one identity may hold in one worker; 0 means no limit.
    connections_per_identity: int = 0

    def __post_init__(self) -> None:
        if self.connections_per_identity < 0:
            raise ValueError("`connections_per_identity` cannot be negative")


class StateConfig(_Strict):
    """Where workers share revocations and reload requests (SQLite on one machine)."""

    sqlite_path: str = ".brokerguard/state.db"
    poll_interval_ms: int = 200

    def __post_init__(self) -> None:
        if not 10 <= self.poll_interval_ms <= 1000:
            raise ValueError("`poll_interval_ms` must be from 10 to 1000: revocation must act within a second")


class AlertsConfig(_Strict):
    """How violations become alerts: repeats merged and alerts limited per window."""

    window_s: float = 60.0
    max_per_window: int = 20  # alerts sent per window; the rest are counted in one summary
    auth_failure_threshold: int = 5  # failed logins from one address in a window that make an alert


class AuditConfig(_Strict):
    """The audit trail: where events go, how much of a payload they keep, what happens when a
    sink cannot keep up. docs/audit.md has the details."""

    enabled: bool = True
    # Each sink: {type: <plugin name>, ...its options}; `events: alerts` sends it alerts only.
    sinks: list[dict[str, Any]] = msgspec.field(default_factory=lambda: [{"type": "sqlite"}])
    # Where sinks keep local files unless told otherwise (the SQLite file, a webhook's outbox).
    dir: str = ".brokerguard"
    # True: traffic stops while the trail cannot keep up. False: it never waits (see max_pending).
    fail_closed: bool = False
    # The key of the hash chain (HMAC): without it the chain cannot tell a careful forger.
    chain_key_env: str | None = None
    chain_key_file: str | None = None
    # Payload kept with each request event when no rule says otherwise: for allowed requests,
    # and for denied or invalid ones (kept masked, so an alert shows what triggered it).
    capture: Literal["none", "digest", "masked", "full"] = "none"
    capture_refused: Literal["none", "digest", "masked", "full"] = "masked"
    # The hash of a captured partition's records. BLAKE3 hashes a 64 KiB batch two to four times
    # faster than SHA-256 here; sha256 is for where only FIPS-approved hashes may be used.
    digest: Literal["blake3", "sha256"] = "blake3"
    batch_max: int = 500
    flush_interval_ms: int = 50
    max_pending: int = 100_000  # events held in memory while sinks lag
    alerts: AlertsConfig = AlertsConfig()

    def __post_init__(self) -> None:
        if self.chain_key_env and self.chain_key_file:
            raise ValueError("give one of `chain_key_env` and `chain_key_file`")
        if self.chain_key_env and not os.environ.get(self.chain_key_env):
            raise ValueError(f"`chain_key_env`: environment variable {self.chain_key_env} is not set")
        if self.chain_key_file and not Path(self.chain_key_file).is_file():
            raise ValueError(f"`chain_key_file` {self.chain_key_file} is not a readable file")
        if self.enabled and not self.sinks:
            raise ValueError("auditing is enabled but no sink is configured")
        for index, sink in enumerate(self.sinks):
            if not isinstance(sink.get("type"), str):
                raise ValueError(f"`sinks[{index}]` needs a `type` (sqlite, jsonl, kafka, webhook or a plugin's)")
            if sink.get("events", "all") not in ("all", "alerts"):
                raise ValueError(f"`sinks[{index}].events` is `all` or `alerts`")
        if not 1 <= self.batch_max <= 100_000:
            raise ValueError("`batch_max` must be from 1 to 100000")
        if not 1 <= self.flush_interval_ms <= 10_000:
            raise ValueError("`flush_interval_ms` must be from 1 to 10000")
        if self.max_pending < self.batch_max:
            raise ValueError("`max_pending` must be at least `batch_max`")

    def chain_key(self) -> Secret | None:
        if self.chain_key_env:
            return Secret(os.environ[self.chain_key_env])
        if self.chain_key_file:
            return Secret(Path(self.chain_key_file).read_text().rstrip("\r\n"))
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


ADMIN_TOKEN_MIN_LENGTH = 16  # shorter bearer tokens can be guessed


class AdminConfig(_Strict):
    """The admin API (docs/admin-api.md): sessions, replay and verification over HTTP, served by
    a process of its own beside the workers."""

    listen: str = "127.0.0.1:19000"
    # The environment variable holding the bearer token every request but /api/health must show.
    token_env: str | None = None
    # Without a token, only a loopback `listen` may serve, and only when this says so.
    allow_unauthenticated_loopback: bool = False
    # The gateway account replays publish as (through the gateway, under its rules).
    replay_username: str | None = None
    replay_password_env: str | None = None
    replay_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"

    def __post_init__(self) -> None:
        try:
            host, _ = _split_host_port(self.listen)
        except ValueError:
            raise ValueError(f"`listen` {self.listen!r} is not HOST:PORT with a port from 1 to 65535 "
                             "(e.g. 127.0.0.1:19000)") from None
        if self.token_env is not None:
            if self.allow_unauthenticated_loopback:
                raise ValueError("give `token_env` or `allow_unauthenticated_loopback`, not both")
            token = os.environ.get(self.token_env)
            if not token:
                raise ValueError(f"`token_env`: environment variable {self.token_env} is not set")
            if len(token) < ADMIN_TOKEN_MIN_LENGTH:
                raise ValueError(f"`token_env`: the token in {self.token_env} is shorter than "
                                 f"{ADMIN_TOKEN_MIN_LENGTH} characters")
        elif not self.allow_unauthenticated_loopback:
            raise ValueError("`token_env` is required: name the environment variable holding the admin "
                             "API's bearer token (or, on a loopback `listen` only, set "
                             "`allow_unauthenticated_loopback: true`)")
        elif not _is_loopback(host):
            raise ValueError(f"`allow_unauthenticated_loopback` needs a loopback `listen` (127.0.0.1, ::1, "
                             f"localhost), not {host}: set `token_env`")
        if (self.replay_username is None) != (self.replay_password_env is None):
            raise ValueError("`replay_username` and `replay_password_env` go together")
        if self.replay_password_env is not None and not os.environ.get(self.replay_password_env):
            raise ValueError(f"`replay_password_env`: environment variable {self.replay_password_env} is not set")

    @property
    def address(self) -> tuple[str, int]:
        return _split_host_port(self.listen)

    def token(self) -> Secret | None:
        return Secret(os.environ[self.token_env]) if self.token_env else None

    def replay_password(self) -> Secret | None:
        return Secret(os.environ[self.replay_password_env]) if self.replay_password_env else None


class Config(_Strict):
    workers: int = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # On SIGTERM, requests already received get this long to be answered before connections close.
    drain_timeout_s: float = 30.0
    identity: IdentityConfig = IdentityConfig()
    rules: RulesConfig = RulesConfig()
    content: ContentConfig = ContentConfig()
    limits: LimitsConfig = LimitsConfig()
    state: StateConfig = StateConfig()
    audit: AuditConfig = AuditConfig()
    kafka: KafkaConfig | None = None
    admin: AdminConfig | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("`workers` must be at least 1")
        if self.drain_timeout_s < 0:
            raise ValueError("`drain_timeout_s` cannot be negative")
        if self.kafka is None:
            raise ValueError("no adapter is configured: add a `kafka` section")
        identity = self.identity
        tls = self.kafka.listen.tls
        certificates = tls is not None and tls.client_auth != "none"
        if identity.oidc is None and identity.credentials_file is None and not certificates:
            raise ValueError("clients have no way to authenticate: configure `identity.oidc`, "
                             "`identity.credentials_file` or `kafka.listen.tls.client_auth`")


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
