"""Shared fixtures: a real Apache Kafka broker (KRaft) on a free port in a temp dir.

No mock broker: the jars come from Maven Central (cached in .cache/), exactly as
`wattsup broker start` runs them.

`make test` runs the tests in pytest-xdist worker processes (``-n 3``): each worker has its own
session fixtures (broker, trained model, PostgreSQL, registry), a module's tests go to one worker
together (so its module fixtures start once), the slowest modules are handed out first, and a test
marked ``timing`` (it bounds a wall-clock duration) runs while the other workers wait.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from xdist.scheduler import LoadScheduling

from deploy.kafka.launcher import LocalKafkaNode, free_port
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topics import ensure_topics
from tests.waiting import stop_process


# -- pytest-xdist workers ----------------------------------------------------------------------
SLOWEST_FIRST = (
    "tests/wattsup/test_broker_outage_integration.py",
    "tests/wattsup/test_power_cut_integration.py",
    "tests/wattsup/test_demo_smoke.py",
)
"""Modules of two minutes or more, handed out first; every other integration module follows, then the
rest. Longest first keeps one worker from starting a long module while the others have nothing left."""

RUN_LOCK = "WATTSUP_TEST_RUN_LOCK"
"""Environment variable naming the lock file the workers of one run share (set by the controller)."""


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        # the controller of an xdist run: one lock file for its workers, who inherit the environment
        handle, path = tempfile.mkstemp(prefix="wattsup-test-run-", suffix=".lock")
        os.close(handle)
        os.environ[RUN_LOCK] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and os.environ.get(RUN_LOCK):
        for suffix in ("", ".turnstile"):
            Path(os.environ[RUN_LOCK] + suffix).unlink(missing_ok=True)
        del os.environ[RUN_LOCK]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: the slowest modules first, then integration modules, then the others, and
    last the modules with a ``timing`` test (by then the other workers run short tests, so a ``timing``
    test waits little for them). Stable within each, so a module's tests keep their order; every worker
    sorts the same way."""
    if not hasattr(config, "workerinput"):
        return
    timed = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("timing")}

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::")[0]
        if module in SLOWEST_FIRST:
            return SLOWEST_FIRST.index(module)
        if module in timed:
            return len(SLOWEST_FIRST) + 2
        return len(SLOWEST_FIRST) + (0 if item.get_closest_marker("integration") else 1)

    items.sort(key=rank)


class ModuleScheduling(LoadScheduling):
    """xdist's ``load`` distribution in whole modules: a worker is handed the next module (all its
    tests) when it is down to its last pending test, so a module's fixtures start in one worker only.

    xdist's own ``loadfile`` cannot be used: it keys tests by node id, and schemathesis gives every
    operation's test in tests/dashboard/test_fuzz.py the same node id, so all but one were dropped.
    This keeps xdist's indices."""

    def _module(self, index: int) -> str:
        assert self.collection is not None
        return self.collection[index].split("::")[0]

    def check_schedule(self, node, duration: float = 0) -> None:
        if node.shutting_down:
            return
        if not self.pending:
            node.shutdown()  # it runs what it holds, then stops
            return
        while self.pending and len(self.node2pending[node]) < 2:  # a worker runs a test once it knows the next
            module = self._module(self.pending[0])
            count = 1
            while count < len(self.pending) and self._module(self.pending[count]) == module:
                count += 1
            self._send_tests(node, count)

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is None:
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")
                return
            self.collection = next(iter(self.node2collection.values()))
            self.pending[:] = range(len(self.collection))
            if not self.collection:
                return
        for node in self.nodes:
            self.check_schedule(node)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``-n N`` (``--dist load``) hands out whole modules; the other ``--dist`` modes are xdist's."""
    if config.getvalue("dist") == "load":
        return ModuleScheduling(config, log)
    return None


@contextmanager
def _run_lock(exclusive: bool) -> Iterator[None]:
    """A fair readers-writer lock over the run's workers: every test holds it shared, a ``timing`` test
    exclusively. The turnstile makes a waiting ``timing`` test go before the other workers' next tests."""
    path = os.environ.get(RUN_LOCK)
    if not path:  # one process: nothing runs beside any test
        yield
        return
    with open(path + ".turnstile", "a") as turnstile, open(path, "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Around a test's set-up (module and session fixtures included), call and tear-down."""
    if not hasattr(item.config, "workerinput"):
        yield
        return
    with _run_lock(exclusive=item.get_closest_marker("timing") is not None):
        yield


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
