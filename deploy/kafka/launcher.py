"""Fetch, format, start and stop a real Apache Kafka broker (KRaft) without Docker.

The broker jars come from Maven Central through ``deploy/kafka/pom.xml`` into a git-ignored
cache; each node runs as a plain ``java`` process bound to 127.0.0.1, as a combined
broker+controller. Storage is formatted once per data directory, so stopping (or ``kill -9``)
and starting again keeps every record. The same class runs one node of a local multi-node
cluster when given the full controller quorum.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from deploy.background_process import BackgroundProcess, free_port, port_is_free
from foundation.kafka_settings import PROJECT_ROOT

__all__ = ["BrokerError", "LocalKafkaCluster", "LocalKafkaNode", "fetch_kafka_jars", "free_port", "port_is_free"]

log = logging.getLogger(__name__)

KAFKA_DIR = Path(__file__).resolve().parent
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.yaml"
DEFAULT_CACHE_DIR = PROJECT_ROOT / ".cache"


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or reached; the message says what to do."""


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"`{name}` is not on PATH: {hint}")
    return path


def fetch_kafka_jars(cache_dir: Path = DEFAULT_CACHE_DIR, *, quiet: bool = True) -> Path:
    """Resolve the Kafka broker and its runtime dependencies into ``cache_dir/kafka/libs``.

    Idempotent: a marker file records the pom it was resolved from, so a changed Kafka
    version in the pom triggers a fresh copy and an unchanged one costs nothing.
    """
    libs = cache_dir / "kafka" / "libs"
    marker = libs / ".resolved-from"
    pom_text = POM.read_text()
    if marker.exists() and marker.read_text() == pom_text and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    require_tool("java", "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless).")
    mvn = require_tool("mvn", "install Apache Maven (Debian: apt-get install maven) to fetch the Kafka jars.")
    if libs.exists():
        shutil.rmtree(libs)
    libs.mkdir(parents=True)
    cmd = [
        mvn, "-B", "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    log.info("fetching Apache Kafka jars with Maven into %s", libs)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerError(
            "Maven could not resolve the Kafka broker jars "
            f"(exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
        )
    marker.write_text(pom_text)
    return libs


@dataclass
class LocalKafkaNode:
    """One KRaft node (broker + controller) on 127.0.0.1.

    ``quorum`` maps node id to controller port for every controller of the cluster; a
    single-node broker is its own quorum.
    """

    data_dir: Path
    port: int = 9092
    controller_port: int | None = None
    node_id: int = 1
    host: str = "127.0.0.1"
    quorum: dict[int, int] | None = None
    cluster_id: str | None = None
    heap: str = "512m"
    cache_dir: Path = DEFAULT_CACHE_DIR
    extra_listeners: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Extra listener name -> (port, security protocol), e.g. {"SSL": (9094, "SSL")}."""
    extra_properties: dict[str, str] = field(default_factory=dict)
    default_replication_factor: int = 1
    _log_offset: int = field(default=0, init=False, repr=False)
    """Size of broker.log when the current start began (the log is appended to across restarts)."""
    process: BackgroundProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if self.controller_port is None:
            self.controller_port = self.port + 1
        if self.quorum is None:
            self.quorum = {self.node_id: self.controller_port}
        self.process = BackgroundProcess("the Kafka broker", self.log_file, self.pid_file, BrokerError)

    # -- files -------------------------------------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def server_properties(self) -> dict[str, str]:
        assert self.quorum is not None
        voters = ",".join(f"{nid}@{self.host}:{cport}" for nid, cport in sorted(self.quorum.items()))
        listeners = {"PLAINTEXT": self.port, "CONTROLLER": self.controller_port}
        protocol_map = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT"}
        for name, (port, protocol) in self.extra_listeners.items():
            listeners[name] = port
            protocol_map[name] = protocol
        rf = str(self.default_replication_factor)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": ",".join(f"{name}://{self.host}:{p}" for name, p in listeners.items()),
            "advertised.listeners": ",".join(
                f"{name}://{self.host}:{p}" for name, p in listeners.items() if name != "CONTROLLER"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocol_map.items()),
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "default.replication.factor": rf,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": "1" if rf == "1" else "2",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": "1" if rf == "1" else "2",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # Small segments and fast log-cleaner checks suit a one-box deployment and let
            # compaction of the forecasts topic be observed within minutes.
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.cleaner.backoff.ms": "5000",
        }
        props.update(self.extra_properties)
        return props

    def write_properties(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{k}={v}" for k, v in self.server_properties().items()]
        self.properties_file.write_text("\n".join(lines) + "\n")

    # -- lifecycle ---------------------------------------------------------------------
    def _java_cmd(self, main_class: str, *args: str) -> list[str]:
        java = require_tool("java", "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless).")
        libs = fetch_kafka_jars(self.cache_dir)
        return [
            java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp", f"{libs}/*", main_class, *args,
        ]

    @property
    def formatted(self) -> bool:
        return (self.log_dir / "meta.properties").exists()

    def format_storage(self) -> None:
        """Format KRaft storage once; an existing data dir is left as it is (data survives)."""
        self.write_properties()
        if self.formatted:
            return
        cluster_id = self.cluster_id or self._random_cluster_id()
        result = subprocess.run(
            # `--cluster-id=ID`, not `-t ID`: a random id may start with "-", which argparse takes for an option.
            self._java_cmd("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.properties_file)),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage in {self.log_dir} failed:\n{result.stderr[-2000:]}")
        log.info("formatted KRaft storage in %s (cluster id %s)", self.log_dir, cluster_id)

    @staticmethod
    def _random_cluster_id() -> str:
        import base64

        return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

    def pid(self) -> int | None:
        return self.process.pid()

    def is_running(self) -> bool:
        return self.process.is_running()

    def start(self, timeout: float = 60.0) -> None:
        """Start the node in the background and wait until it answers metadata requests."""
        if self.is_running():
            log.info("broker already running (pid %s) on %s", self.pid(), self.bootstrap_servers)
            return
        ports = [("broker", self.port), ("controller", self.controller_port)]
        ports += [(name, port) for name, (port, _) in self.extra_listeners.items()]
        for name, port in ports:
            # A node killed a moment ago may still hold its sockets while its threads exit.
            deadline = time.monotonic() + 10.0
            while not port_is_free(port, self.host) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not port_is_free(port, self.host):
                raise BrokerError(
                    f"{name} port {port} on {self.host} is already in use: stop whatever listens there "
                    f"or choose another port (e.g. `wattsup broker start --port {free_port()}`)."
                )
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Format storage if needed and spawn the process without waiting for it.

        A node of a multi-node quorum cannot become ready until a majority of controllers runs,
        so a cluster launches every node first and waits afterwards.
        """
        self.format_storage()
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        pid = self.process.spawn(self._java_cmd("kafka.Kafka", str(self.properties_file)), cwd=self.data_dir)
        log.info("started Kafka node %s (pid %s), log %s", self.node_id, pid, self.log_file)

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.process.wait_until(lambda: self._log_says_started() and self._answers_metadata(), timeout,
                                where=f"on {self.bootstrap_servers}", poll=0.25)

    def _log_says_started(self) -> bool:
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(self._log_offset)
                return b"Kafka Server started" in fh.read()
        except OSError:
            return False

    def _answers_metadata(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            # log_level 0: a probe of a broker still starting must not print connection errors
            admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 2000,
                                 "log_level": 0})
            md = admin.list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
        return self.node_id in md.brokers

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop gracefully (SIGTERM), then force; returns whether a process was running."""
        return self.process.stop(timeout)

    def kill(self) -> None:
        """``kill -9`` the node, as a crash would (used by resilience tests)."""
        self.process.kill()


@dataclass
class LocalKafkaCluster:
    """Several combined broker+controller nodes on 127.0.0.1: one process, one broker port and one
    controller port per node, one cluster id, every node a voter of the KRaft quorum.

    With three nodes the quorum and every topic with replication factor 3 and
    ``min.insync.replicas=2`` survive losing any one node; that is what the project's
    ``WATTSUP_KAFKA_REPLICATION_FACTOR`` / ``WATTSUP_KAFKA_MIN_INSYNC_REPLICAS`` are for. The
    internal topics (consumer offsets, transactions) get the same replication. Node ``i`` keeps
    its data in ``data_dir/node-i``, so a stopped cluster starts again with its records.
    """

    data_dir: Path
    nodes: int = 3
    ports: list[int] | None = None
    """Broker ports, one per node (default: free ports)."""
    controller_ports: list[int] | None = None
    heap: str = "384m"
    cache_dir: Path = DEFAULT_CACHE_DIR
    cluster_id: str | None = None
    extra_properties: dict[str, str] = field(default_factory=dict)
    members: list[LocalKafkaNode] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, got {self.nodes}")
        self.data_dir = Path(self.data_dir).resolve()
        self.ports = self.ports or [free_port() for _ in range(self.nodes)]
        self.controller_ports = self.controller_ports or [free_port() for _ in range(self.nodes)]
        if len(self.ports) != self.nodes or len(self.controller_ports) != self.nodes:
            raise BrokerError(f"give one broker port and one controller port per node ({self.nodes} nodes)")
        self.cluster_id = self.cluster_id or self._stored_cluster_id() or LocalKafkaNode._random_cluster_id()
        quorum = {i + 1: cport for i, cport in enumerate(self.controller_ports)}
        replication = min(self.nodes, 3)
        self.members = [
            LocalKafkaNode(
                data_dir=self.data_dir / f"node-{i + 1}", port=port, controller_port=cport, node_id=i + 1,
                quorum=quorum, cluster_id=self.cluster_id, heap=self.heap, cache_dir=self.cache_dir,
                default_replication_factor=replication, extra_properties=dict(self.extra_properties),
            )
            for i, (port, cport) in enumerate(zip(self.ports, self.controller_ports))
        ]

    def _stored_cluster_id(self) -> str | None:
        """The id a previous start formatted node 1 with, so a restarted cluster is the same cluster."""
        meta = self.data_dir / "node-1" / "kraft-logs" / "meta.properties"
        if not meta.exists():
            return None
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return None

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.members)

    def node(self, node_id: int) -> LocalKafkaNode:
        return self.members[node_id - 1]

    def start(self, timeout: float = 120.0) -> None:
        """Launch every node that is not running, then wait until each answers metadata requests."""
        try:
            for node in self.members:
                if not node.is_running():
                    node.launch()
            for node in self.members:
                node.wait_ready(timeout)
        except BrokerError:
            self.stop()
            raise

    def running(self) -> list[LocalKafkaNode]:
        return [node for node in self.members if node.is_running()]

    def stop(self, timeout: float = 30.0) -> None:
        """Signal every node at once, then wait for each: stopped one by one, the last nodes lose
        their controller quorum and wait out the timeout in a controlled shutdown that cannot finish."""
        for node in self.members:
            pid = node.pid()
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for node in self.members:
            node.stop(timeout)
