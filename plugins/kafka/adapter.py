"""The Kafka adapter: listens where clients connect, opens one upstream connection per client
connection with the gateway's own credentials, and keeps what its connections share.

Ports: the bootstrap port, plus one port per broker (node id N on broker_ports.first + N), so
every connection a client makes after bootstrap still goes through the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from brokerguard.config import KafkaConfig, KafkaUpstream
from brokerguard.errors import ProtocolError, UpstreamAuthenticationError, UpstreamError
from brokerguard.pipeline import Pipeline

from . import apis, sasl
from .connection import ClientConnection, UpstreamConnection
from .directory import BrokerDirectory
from .protocol import codec
from .rewrite import Rewriter, Versions

log = logging.getLogger("brokerguard.kafka")

CLIENT_ID = "brokerguard"
SASL_HANDSHAKE_VERSION = 1
SASL_AUTHENTICATE_VERSION = 2


def _tls_context(upstream: KafkaUpstream) -> ssl.SSLContext | None:
    if not upstream.uses_tls:
        return None
    tls = upstream.tls
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.check_hostname = tls.check_hostname
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


class KafkaAdapter:
    name = "kafka"

    def __init__(self, config: KafkaConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.versions = Versions()
        self.directory = BrokerDirectory(self)
        self.rewriter = Rewriter(config.listen, self.directory, self.versions)
        self.connections: set[ClientConnection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._tls = _tls_context(config.upstream)
        sasl_config = config.upstream.sasl
        self._password = sasl_config.secret() if sasl_config else None
        self._api_versions_max = self.versions.supported[apis.API_VERSIONS][1]

    # -- listening -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listen = self.config.listen
        ports: list[tuple[int, int | None]] = [(listen.port, None)]
        ports += [(listen.broker_ports.first + n, n) for n in range(listen.broker_ports.count)]
        for port, node_id in ports:
            server = await loop.create_server(
                lambda n=node_id: ClientConnection(self, n),
                listen.host, port, reuse_port=True, backlog=1024,
            )
            self._servers.append(server)
        log.info("kafka listening on %s:%d (brokers on ports %d-%d), upstream %s",
                 listen.host, listen.port, ports[1][0], ports[-1][0],
                 ",".join(self.config.upstream.bootstrap_servers))

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

    def answer_locally(self, api_key: int, api_version: int, correlation_id: int) -> bytes | None:
        if api_key == apis.API_VERSIONS and api_version > self._api_versions_max:
            return self.rewriter.unsupported_api_versions(correlation_id)
        if api_key == apis.SASL_HANDSHAKE:
            return self.rewriter.no_client_sasl(correlation_id, api_version)
        return None

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
        if upstream.sasl is not None:
            try:
                await asyncio.wait_for(self._login(connection, peer), upstream.connect_timeout_s)
            except BaseException as err:
                connection.close()
                if isinstance(err, asyncio.TimeoutError):
                    raise UpstreamError(peer, "SASL login timed out") from err
                raise
        return connection

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
