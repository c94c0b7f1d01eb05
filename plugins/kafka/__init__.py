"""The Kafka adapter plugin (entry point `kafka` in group `brokerguard.adapters`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from brokerguard.config import Config
    from brokerguard.pipeline import Pipeline

    from .adapter import KafkaAdapter


class KafkaAdapterFactory:
    """Builds the adapter from the `kafka` section of the config, once per worker."""

    config_section = "kafka"

    @staticmethod
    def create(config: Config, pipeline: Pipeline) -> KafkaAdapter:
        from .adapter import KafkaAdapter

        assert config.kafka is not None
        return KafkaAdapter(config.kafka, pipeline)
