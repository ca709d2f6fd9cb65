"""Shared fixtures: a real Apache Kafka broker (KRaft) on a free port in a temp dir.

No mock broker: the jars come from Maven Central (cached in .cache/), exactly as
`wattsup broker start` runs them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.kafka.launcher import LocalKafkaNode, free_port
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topics import ensure_topics
from tests.waiting import stop_process


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
            dead_letters=f"dead-letters-{suffix}", control=f"control-{suffix}", incidents=f"incidents-{suffix}",
            feedback=f"feedback-{suffix}", partitions=partitions or self.topics.partitions,
        )
        ensure_topics(self.connection, topics)
        return topics


def start_test_broker(data_dir, **kwargs) -> LocalKafkaNode:
    """A broker on free ports; retried on new ports if another process took one in between."""
    from deploy.kafka.launcher import BrokerError

    for attempt in range(3):
        where = data_dir if attempt == 0 else Path(data_dir) / f"retry-{attempt}"
        node = LocalKafkaNode(data_dir=where, port=free_port(), controller_port=free_port(), heap="384m", **kwargs)
        try:
            node.start(timeout=120)
            return node
        except BrokerError as exc:
            if "already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory):
    """A detector trained on simulated history (150 meters x 10 days, hourly), shared by the session.

    Its seed (1001) is apart from the fleets the tests stream, so no test is scored by a model
    that saw its data.
    """
    from datetime import timedelta

    from models.training import train_and_save
    from simulation.fleet import FleetConfig, simulate_fleet

    path = tmp_path_factory.mktemp("models")
    history = simulate_fleet(FleetConfig(meters=150, days=10, interval=timedelta(hours=1), seed=1001)).readings
    train_and_save(history, path, n_estimators=100, source="test history")
    return path


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


# -- real `wattsup stream` worker processes against the test broker ----------------------
@dataclass
class WorkerProcess:
    process: subprocess.Popen
    metrics_port: int
    log_path: Path

    def metric(self, name: str) -> float:
        """Sum of a metric's samples (0 if absent or the worker is not answering)."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return 0.0
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def wait_for(self, name: str, at_least: float, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited: {self.log_path.read_text()[-3000:]}"
            value = self.metric(name)
            if value >= at_least:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{name} reached only {value} (wanted {at_least}); log:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.process, 30)

    def kill_9(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class WorkerFactory:
    kafka: object
    tmp: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, topics: TopicNames, model_dir: Path, app_id: str, name: str = "worker",
              env: dict[str, str] | None = None) -> WorkerProcess:
        """A ``wattsup stream`` process on the test broker; ``env`` adds or overrides variables."""
        port = free_port()
        env = {
            **os.environ,
            "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
            "WATTSUP_STREAM_APP_ID": app_id,
            "WATTSUP_STREAM_DATA_DIR": str(self.tmp / f"{app_id}-{name}"),
            "WATTSUP_MODEL_DIR": str(model_dir),
            "WATTSUP_STREAM_METRICS_PORT": str(port),
            "WATTSUP_STREAM_WEB_PORT": str(free_port()),
            "WATTSUP_STREAM_MODEL_POLL_SECONDS": "1",
            **(env or {}),
        }
        log_path = self.tmp / f"{app_id}-{name}-{len(self.started)}.log"
        process = subprocess.Popen([sys.executable, "-m", "wattsup.cli", "stream"], env=env,
                                   stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(process, port, log_path)
        self.started.append(worker)
        return worker


@pytest.fixture
def stream_workers(kafka, tmp_path):
    factory = WorkerFactory(kafka, tmp_path)
    yield factory
    for worker in factory.started:
        worker.stop()
