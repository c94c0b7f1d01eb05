"""The Kafka sink: each event one record of an audit topic, the way a fleet of gateways shares a trail.

Every worker of every gateway produces to the same topic, each its own stream (chain.py), so
one topic holds the whole fleet's trail and any host can verify it. A record is:

    key      the event's session, or its stream for events outside a session (stream_start,
             stream_end, dropped): a session's events share a partition and keep their order
    value    the sealed JSON line, exactly as hashed
    headers  brokerguard.stream, brokerguard.index (for tools that route without parsing)

The producer is idempotent with acks=all: a write returns only when every record of the batch
is on all in-sync replicas, and raises otherwise so the bus retries the batch. A retried batch
may leave a record twice in the topic; readers return it once.

Reading (AuditReader) consumes every partition from its start to the end offsets taken when
the call begins, with a fresh consumer outside any group (no committed offsets, nothing left
behind). AuditReader is synchronous and aiokafka is not, so each call runs its own event loop:
in the calling thread, or, when that thread already runs a loop, in a helper thread the call
waits for (the calling loop is blocked meanwhile: call it from a thread in a server).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_lz4, has_zstd
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from brokerguard.audit import sessions
from brokerguard.audit.sinks import Sealed, SessionFilter, SinkContext, check_options, option
from brokerguard.errors import BrokerGuardError, ConfigError

__all__ = ["AuditTopicError", "KafkaSink"]

log = logging.getLogger("brokerguard.audit")

MIB = 1024 * 1024
OPTIONS = ("bootstrap_servers", "topic", "security_protocol", "sasl_mechanism", "username", "password_env",
           "ssl_cafile", "create_topic", "partitions", "replication_factor", "max_event_bytes")
PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_ADDRESS = re.compile(r"[^\s:]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}")
# lz4 first: aiokafka compresses on the event loop, which is also the data path's.
COMPRESSION = "lz4" if has_lz4() else "zstd" if has_zstd() else "gzip"
READ_STALL_S = 30.0  # a read that makes no progress for this long fails instead of hanging
FETCH_WAIT_MS = 500


class AuditTopicError(BrokerGuardError):
    """The audit topic could not be written or read; a failed write is retried by the bus."""

    retriable = True

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"audit sink kafka at {peer}: {message}")
        self.peer = peer


class KafkaSink:
    """Produces sealed events to the audit topic; reads the whole topic back."""

    def __init__(self, bootstrap_servers: list[str], *, topic: str = "brokerguard.audit",
                 security_protocol: str = "PLAINTEXT", sasl_mechanism: str | None = None,
                 username: str | None = None, password: str | None = None, ssl_cafile: str | None = None,
                 create_topic: bool = True, partitions: int = 6, replication_factor: int = -1,
                 max_event_bytes: int = 8 * MIB) -> None:
        self.bootstrap_servers = list(bootstrap_servers)
        self.topic = topic
        self.security_protocol = security_protocol
        self.sasl_mechanism = sasl_mechanism
        self.username = username
        self._password = password  # only ever handed to aiokafka
        self.ssl_cafile = ssl_cafile
        self.create_topic = create_topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.max_event_bytes = max_event_bytes
        self.peer = ",".join(self.bootstrap_servers)
        self.name = f"kafka {topic} at {self.peer}"
        self._producer: AIOKafkaProducer | None = None

    def __repr__(self) -> str:
        return f"<KafkaSink {self.name}>"

    @classmethod
    def from_config(cls, options: Mapping[str, Any], context: SinkContext) -> KafkaSink:
        check_options(options, OPTIONS, sink="kafka")
        servers = option(options, "bootstrap_servers", list, sink="kafka")
        if not servers:
            raise ConfigError("audit sink kafka: `bootstrap_servers` must list at least one HOST:PORT")
        for server in servers:
            if not isinstance(server, str) or not _ADDRESS.fullmatch(server):
                raise ConfigError(f"audit sink kafka: `bootstrap_servers` entry {server!r} is not HOST:PORT")
        topic = option(options, "topic", str, "brokerguard.audit", sink="kafka")
        if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
            raise ConfigError(f"audit sink kafka: `topic` {topic!r} is not a valid Kafka topic name "
                              "(letters, digits, `.`, `_`, `-`; at most 249)")
        protocol = option(options, "security_protocol", str, "PLAINTEXT", sink="kafka")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"audit sink kafka: `security_protocol` must be one of {', '.join(PROTOCOLS)}, "
                              f"not {protocol!r}")
        mechanism = option(options, "sasl_mechanism", str, None, sink="kafka")
        username = option(options, "username", str, None, sink="kafka")
        password_env = option(options, "password_env", str, None, sink="kafka")
        password = None
        if protocol.startswith("SASL_"):
            for name, value in (("sasl_mechanism", mechanism), ("username", username),
                                ("password_env", password_env)):
                if not value:
                    raise ConfigError(f"audit sink kafka: `{name}` is required with security_protocol {protocol}")
            if mechanism not in MECHANISMS:
                raise ConfigError(f"audit sink kafka: `sasl_mechanism` must be one of {', '.join(MECHANISMS)}, "
                                  f"not {mechanism!r}")
            password = os.environ.get(password_env)
            if password is None:
                raise ConfigError(f"audit sink kafka: environment variable {password_env} (`password_env`) "
                                  "is not set")
        else:
            given = [name for name, value in (("sasl_mechanism", mechanism), ("username", username),
                                              ("password_env", password_env)) if value is not None]
            if given:
                raise ConfigError(f"audit sink kafka: `{given[0]}` needs security_protocol SASL_PLAINTEXT or "
                                  f"SASL_SSL (it is {protocol})")
        cafile = option(options, "ssl_cafile", str, None, sink="kafka")
        if cafile is not None:
            if not protocol.endswith("SSL"):
                raise ConfigError(f"audit sink kafka: `ssl_cafile` needs security_protocol SSL or SASL_SSL "
                                  f"(it is {protocol})")
            if not Path(cafile).is_file():
                raise ConfigError(f"audit sink kafka: `ssl_cafile` {cafile} is not a file")
        partitions = option(options, "partitions", int, 6, sink="kafka")
        if partitions < 1:
            raise ConfigError(f"audit sink kafka: `partitions` must be at least 1, not {partitions}")
        replication = option(options, "replication_factor", int, -1, sink="kafka")
        if replication != -1 and replication < 1:
            raise ConfigError(f"audit sink kafka: `replication_factor` must be at least 1, or -1 for the "
                              f"broker's default, not {replication}")
        max_event_bytes = option(options, "max_event_bytes", int, 8 * MIB, sink="kafka")
        if max_event_bytes < 64 * 1024:
            raise ConfigError(f"audit sink kafka: `max_event_bytes` must be at least 65536, not {max_event_bytes}")
        return cls(servers, topic=topic, security_protocol=protocol, sasl_mechanism=mechanism, username=username,
                   password=password, ssl_cafile=cafile,
                   create_topic=option(options, "create_topic", bool, True, sink="kafka"),
                   partitions=partitions, replication_factor=replication, max_event_bytes=max_event_bytes)

    def _client_options(self) -> dict[str, Any]:
        """What every aiokafka client of this sink needs to reach and log in to the cluster."""
        context: ssl.SSLContext | None = None
        if self.security_protocol.endswith("SSL"):
            context = create_ssl_context(cafile=self.ssl_cafile)
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers, "client_id": "brokerguard-audit",
                                   "security_protocol": self.security_protocol, "ssl_context": context}
        if self.security_protocol.startswith("SASL_"):
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self._password)
        return options

    def _failure(self, doing: str, err: KafkaError) -> AuditTopicError:
        if isinstance(err, KafkaConnectionError):
            # aiokafka reports a refused login or TLS handshake only in its log.
            return AuditTopicError(self.peer, f"{doing}: cannot connect ({err}); the cluster is unreachable or "
                                              "refused the TLS or SASL settings (aiokafka's log says which)")
        return AuditTopicError(self.peer, f"{doing}: {err!r}")

    # -- writing -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._ensure_topic()
        producer = AIOKafkaProducer(**self._client_options(), acks="all", enable_idempotence=True,
                                    compression_type=COMPRESSION, linger_ms=5, max_batch_size=256 * 1024,
                                    max_request_size=self.max_event_bytes + 64 * 1024)
        try:
            await producer.start()
        except KafkaError as err:
            await producer.stop()
            raise self._failure("cannot start the producer", err) from err
        self._producer = producer

    async def write(self, batch: Sequence[Sealed]) -> None:
        producer = self._producer
        if producer is None:
            raise AuditTopicError(self.peer, "write before start")
        deliveries = []
        refused: KafkaError | None = None
        try:
            for sealed in batch:
                event = sealed.event
                key = event.get("session") or event["stream"]
                headers = [("brokerguard.stream", event["stream"].encode()),
                           ("brokerguard.index", str(event["index"]).encode())]
                deliveries.append(await producer.send(self.topic, sealed.line, key=key.encode(), headers=headers))
        except KafkaError as err:  # e.g. an event above max_event_bytes, or the buffer timed out
            refused = err
        # Await what was handed over even if a send failed, so no delivery is left unobserved.
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        failed = [result for result in results if isinstance(result, BaseException)]
        if refused is not None or failed:
            cause = refused or failed[0]
            missing = len(batch) - (len(results) - len(failed))
            raise AuditTopicError(self.peer, f"{missing} of {len(batch)} events not stored in {self.topic}: "
                                             f"{cause!r}") from cause

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # sends what is pending first

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(**self._client_options())
        try:
            await admin.start()
            if self.topic in await admin.list_topics():
                return  # used as it is: its partitions and retention are the operator's
            if not self.create_topic:
                raise AuditTopicError(self.peer, f"topic {self.topic} does not exist and `create_topic` is false")
            # -1 replicas asks for the broker's default; aiokafka wants an (empty) assignment then.
            topic = NewTopic(self.topic, self.partitions, self.replication_factor,
                             replica_assignments={} if self.replication_factor == -1 else None,
                             topic_configs={"retention.ms": "-1",
                                            "max.message.bytes": str(self.max_event_bytes + 64 * 1024)})
            response = await admin.create_topics([topic])
            for _, code, *message in response.topic_errors:
                if code and for_code(code) is not TopicAlreadyExistsError:  # another gateway was first
                    detail = message[0] if message and message[0] else for_code(code).__name__
                    raise AuditTopicError(self.peer, f"cannot create topic {self.topic}: {detail}")
            log.info("audit sink kafka: created topic %s (%d partitions, kept forever)", self.topic, self.partitions)
        except KafkaError as err:
            raise self._failure(f"cannot check or create topic {self.topic}", err) from err
        finally:
            await admin.close()

    # -- reading (AuditReader) -----------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        return iter(sessions.in_stream_order(self._run(self._read_topic)))

    def sessions(self, where: SessionFilter) -> list[dict[str, Any]]:
        return sessions.summarize(self.events(), where)

    def session_events(self, session: str) -> list[dict[str, Any]]:
        return sessions.session_events(self.events(), session)

    @staticmethod
    def _run(read: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(read())
        with ThreadPoolExecutor(1, thread_name_prefix="audit-read") as pool:
            return pool.submit(lambda: asyncio.run(read())).result()

    async def _partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(**self._client_options())
        try:
            await admin.start()
            for topic in await admin.describe_topics():  # all topics: naming one would auto-create it
                if topic["topic"] == self.topic:
                    return [TopicPartition(self.topic, p["partition"]) for p in topic["partitions"]]
        except KafkaError as err:
            raise self._failure(f"cannot describe topic {self.topic}", err) from err
        finally:
            await admin.close()
        raise AuditTopicError(self.peer, f"topic {self.topic} does not exist")

    async def _read_topic(self) -> list[dict[str, Any]]:
        partitions = await self._partitions()
        consumer = AIOKafkaConsumer(**self._client_options(), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_WAIT_MS)
        out: list[dict[str, Any]] = []
        try:
            await consumer.start()
            consumer.assign(partitions)
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            todo = {tp for tp in partitions if ends[tp] > starts[tp]}
            for tp in todo:
                consumer.seek(tp, starts[tp])
            loop = asyncio.get_running_loop()
            stalled_at = loop.time() + READ_STALL_S
            positions = dict(starts)
            while todo:
                fetched = await consumer.getmany(*todo, timeout_ms=FETCH_WAIT_MS)
                for tp, records in fetched.items():
                    for record in records:
                        if record.offset < ends[tp]:
                            event = _event(record.value)
                            if event is None:
                                log.warning("audit topic %s partition %d offset %d is not an event; skipped",
                                            tp.topic, tp.partition, record.offset)
                            else:
                                out.append(event)
                moved = False
                for tp in list(todo):
                    position = await consumer.position(tp)  # past transaction markers too
                    moved |= position > positions[tp]
                    positions[tp] = position
                    if position >= ends[tp]:
                        todo.discard(tp)
                if moved:
                    stalled_at = loop.time() + READ_STALL_S
                elif loop.time() > stalled_at:
                    raise AuditTopicError(self.peer, f"reading {self.topic} made no progress for {READ_STALL_S:.0f} s "
                                                     f"({len(todo)} partitions not read to their end)")
        except KafkaError as err:
            raise self._failure(f"cannot read topic {self.topic}", err) from err
        finally:
            await consumer.stop()
        return out


def _event(value: bytes | None) -> dict[str, Any] | None:
    try:
        event = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None
