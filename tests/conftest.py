"""Shared fixtures: a real Apache Kafka broker (KRaft) on a free port in a temp dir.

No mock broker: the jars come from Maven Central (cached in .cache/), exactly as
`wattsup broker start` runs them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from deploy.kafka.launcher import LocalKafkaNode, free_port
from deploy.kafka.topics import ensure_topics
from wattsup.kafka_settings import KafkaConnection, TopicNames


@dataclass
class KafkaFixture:
    node: LocalKafkaNode
    connection: KafkaConnection
    topics: TopicNames

    @property
    def bootstrap_servers(self) -> str:
        return self.node.bootstrap_servers

    def fresh_topics(self, partitions: int | None = None) -> TopicNames:
        """A new, isolated set of the project's topics (unique names), created on the broker."""
        suffix = uuid.uuid4().hex[:8]
        topics = TopicNames(
            readings=f"readings-{suffix}", forecasts=f"forecasts-{suffix}", anomalies=f"anomalies-{suffix}",
            dead_letters=f"dead-letters-{suffix}", control=f"control-{suffix}",
            partitions=partitions or self.topics.partitions,
        )
        ensure_topics(self.connection, topics)
        return topics


def start_test_broker(data_dir, **kwargs) -> LocalKafkaNode:
    node = LocalKafkaNode(data_dir=data_dir, port=free_port(), controller_port=free_port(), heap="384m", **kwargs)
    node.start(timeout=120)
    return node


@pytest.fixture(scope="session")
def broker_factory():
    """Start extra brokers (each its own process, ports and data dir); they stop at session end."""
    started: list[LocalKafkaNode] = []

    def start(data_dir, **kwargs) -> LocalKafkaNode:
        node = start_test_broker(data_dir, **kwargs)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory):
    """One broker for the whole session, with the project's topics created."""
    node = start_test_broker(tmp_path_factory.mktemp("kafka"))
    connection = KafkaConnection(bootstrap_servers=node.bootstrap_servers)
    topics = TopicNames(
        readings="wattsup.readings", forecasts="wattsup.forecasts", anomalies="wattsup.anomalies",
        dead_letters="wattsup.dead-letters", control="wattsup.control", partitions=4,
    )
    ensure_topics(connection, topics)
    try:
        yield KafkaFixture(node=node, connection=connection, topics=topics)
    finally:
        node.stop()
