"""Where each broker really is, by node id: learned from the Metadata, FindCoordinator and
DescribeCluster responses that pass through, and asked of the cluster when a client reaches a
broker port this worker has not seen yet, or names a topic id it has not seen yet."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from brokerguard.errors import UpstreamError

from . import apis

if TYPE_CHECKING:
    from .adapter import KafkaAdapter

METADATA_VERSION = 12  # every Kafka 3.x and 4.x broker speaks it


class BrokerDirectory:
    def __init__(self, adapter: KafkaAdapter) -> None:
        self._adapter = adapter
        self._nodes: dict[int, tuple[str, int]] = {}
        self._refreshing: asyncio.Task | None = None

    def learn(self, node_id: int, host: str, port: int) -> None:
        self._nodes[node_id] = (host, port)

    async def address(self, node_id: int) -> tuple[str, int]:
        if node_id not in self._nodes:
            await self.refresh()
        try:
            return self._nodes[node_id]
        except KeyError:
            raise UpstreamError(f"node {node_id}", "no such broker in the cluster metadata") from None

    async def refresh(self) -> None:
        """Ask the cluster for its brokers and topics; concurrent callers share one request."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        upstream = await self._adapter.open_upstream(None)
        try:
            body = await self._adapter.request(upstream, apis.METADATA, METADATA_VERSION, {"topics": None})
        finally:
            upstream.close()
        for broker in body["brokers"]:
            self.learn(broker["node_id"], broker["host"], broker["port"])
        self._adapter.topic_names.learn(apis.METADATA, body)
