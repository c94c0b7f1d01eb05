"""The Kafka adapter: listens where clients connect (plain or TLS), opens one upstream connection
per authenticated client connection with the gateway's own credentials, and keeps what its
connections share: the broker directory, the topic id map and the broker's API versions.

Ports: the bootstrap port, plus one port per broker (node id N on broker_ports.first + N), so
every connection a client makes after bootstrap still goes through the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from brokerguard.config import KafkaConfig, KafkaUpstream, ListenTls
from brokerguard.errors import ProtocolError, UpstreamAuthenticationError, UpstreamError
from brokerguard.pipeline import Pipeline

from . import apis, authorize, sasl
from .connection import ClientConnection, UpstreamConnection
from .directory import BrokerDirectory
from .protocol import codec
from .rewrite import Rewriter, Versions, api_versions_answer

log = logging.getLogger("brokerguard.kafka")

CLIENT_ID = "brokerguard"
SASL_HANDSHAKE_VERSION = 1
SASL_AUTHENTICATE_VERSION = 2
API_VERSIONS_VERSION = 3  # every broker since Kafka 2.4


def _tls_context(upstream: KafkaUpstream) -> ssl.SSLContext | None:
    if not upstream.uses_tls:
        return None
    tls = upstream.tls
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.check_hostname = tls.check_hostname
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def _listen_tls_context(tls: ListenTls | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(tls.client_ca_file)
    context.verify_mode = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[tls.client_auth]
    return context


class KafkaAdapter:
    name = "kafka"

    def __init__(self, config: KafkaConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.versions = Versions(authorize.SUPPORTED)
        self.directory = BrokerDirectory(self)
        self.topic_names = authorize.TopicNames()
        self.rewriter = Rewriter(config.listen, self.directory, self.topic_names)
        self.decoded_responses = self.rewriter.decoded
        self.connections: set[ClientConnection] = set()
        self.broker_api_versions: dict[str, Any] | None = None  # the broker's last ApiVersions answer
        self._learning: asyncio.Task | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tls = _tls_context(config.upstream)
        self._listen_tls = _listen_tls_context(config.listen.tls)
        sasl_config = config.upstream.sasl
        self._password = sasl_config.secret() if sasl_config else None

    # -- listening -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listen = self.config.listen
        ports: list[tuple[int, int | None]] = [(listen.port, None)]
        ports += [(listen.broker_ports.first + n, n) for n in range(listen.broker_ports.count)]
        for port, node_id in ports:
            server = await loop.create_server(
                lambda n=node_id: ClientConnection(self, n),
                listen.host, port, reuse_port=True, backlog=1024, ssl=self._listen_tls,
            )
            self._servers.append(server)
        log.info("kafka listening on %s:%d%s (brokers on ports %d-%d), upstream %s",
                 listen.host, listen.port, " with TLS" if self._listen_tls else "", ports[1][0],
                 ports[-1][0], ",".join(self.config.upstream.bootstrap_servers))
        self._learning = loop.create_task(self._learn_quietly())

    async def drain(self, timeout: float) -> None:
        """Stop accepting; give requests already read up to `timeout` s to be answered."""
        for server in self._servers:
            server.close()
        if self.connections:
            log.info("draining %d kafka connections", len(self.connections))
            waiting = [asyncio.ensure_future(c.drain()) for c in list(self.connections)]
            done, pending = await asyncio.wait(waiting, timeout=timeout)
            for task in pending:
                task.cancel()
        for connection in list(self.connections):
            connection.close("drain timeout", level=logging.WARNING)

    # -- what connections ask of the adapter ---------------------------------------------------

    def api_versions_answer(self, version: int, correlation_id: int) -> bytes:
        return api_versions_answer(correlation_id, version, self.broker_api_versions, self.versions)

    async def learn_broker_versions(self) -> None:
        """Make sure the broker's API versions are known (every upstream login refreshes them)."""
        if self.broker_api_versions is not None:
            return
        if self._learning is None or self._learning.done():
            self._learning = asyncio.get_running_loop().create_task(self._learn())
        await asyncio.shield(self._learning)

    async def _learn(self) -> None:
        upstream = await self.open_upstream(None)
        upstream.close()

    async def _learn_quietly(self) -> None:
        try:
            await self._learn()
        except UpstreamError as err:
            log.warning("cannot reach the broker yet (%s); will try again when a client connects", err)

    async def open_upstream(self, node_id: int | None) -> UpstreamConnection:
        if node_id is None:
            addresses = self.config.upstream.addresses
        else:
            addresses = [await self.directory.address(node_id)]
        error: UpstreamError | None = None
        for host, port in addresses:
            try:
                return await self._connect(host, port)
            except UpstreamAuthenticationError:
                raise
            except UpstreamError as err:
                error = err
        assert error is not None
        raise error

    async def _connect(self, host: str, port: int) -> UpstreamConnection:
        upstream = self.config.upstream
        peer = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self), host, port, ssl=self._tls,
                    server_hostname=(upstream.tls.server_hostname or host) if self._tls else None,
                ),
                upstream.connect_timeout_s,
            )
        except (OSError, asyncio.TimeoutError) as err:
            raise UpstreamError(peer, f"cannot connect: {err or 'timed out'}") from err
        try:
            await asyncio.wait_for(self._greet(connection, peer), upstream.connect_timeout_s)
        except BaseException as err:
            connection.close()
            if isinstance(err, asyncio.TimeoutError):
                raise UpstreamError(peer, "ApiVersions and SASL login timed out") from err
            raise
        return connection

    async def _greet(self, connection: UpstreamConnection, peer: str) -> None:
        versions = await self.request(connection, apis.API_VERSIONS, API_VERSIONS_VERSION,
                                      {"client_software_name": "brokerguard", "client_software_version": "1"})
        if versions["error_code"]:
            raise UpstreamError(peer, f"ApiVersions failed with error {versions['error_code']}")
        self.broker_api_versions = versions
        if self.config.upstream.sasl is not None:
            await self._login(connection, peer)

    async def _login(self, connection: UpstreamConnection, peer: str) -> None:
        config = self.config.upstream.sasl
        assert config is not None and self._password is not None
        handshake = await self.request(connection, apis.SASL_HANDSHAKE, SASL_HANDSHAKE_VERSION,
                                       {"mechanism": config.mechanism})
        if handshake["error_code"]:
            raise UpstreamAuthenticationError(
                peer, f"the broker does not enable {config.mechanism} on this listener "
                      f"(enabled: {', '.join(handshake['mechanisms']) or 'none'})")
        mechanism = sasl.mechanism(config.mechanism, config.username, self._password)
        token: bytes | None = mechanism.first()
        while token is not None:
            reply = await self.request(connection, apis.SASL_AUTHENTICATE, SASL_AUTHENTICATE_VERSION,
                                       {"auth_bytes": token})
            if reply["error_code"]:
                raise UpstreamAuthenticationError(
                    peer, f"login as {config.username!r} refused: {reply.get('error_message') or reply['error_code']}")
            try:
                token = mechanism.respond(bytes(reply["auth_bytes"]))
            except sasl.SaslError as err:
                raise UpstreamAuthenticationError(peer, str(err)) from err
        lifetime = reply.get("session_lifetime_ms", 0)
        if lifetime:
            log.debug("upstream %s: session lifetime %d ms (the broker closes it then)", peer, lifetime)

    async def request(self, connection: UpstreamConnection, api_key: int, version: int,
                      body: dict[str, Any]) -> dict[str, Any]:
        """Send one request of the gateway's own and decode its response."""
        correlation_id = connection.next_correlation_id()
        request = (codec.encode_request_header(api_key, version, correlation_id, CLIENT_ID)
                   + codec.encode_request(api_key, version, body))
        payload = await connection.call(request)
        try:
            _, offset = codec.decode_response_header(payload, 0, codec.response_header_version(api_key, version))
            return codec.decode_response(api_key, version, payload, offset)
        except codec.DecodeError as err:
            raise ProtocolError(connection.peer, str(err)) from err
