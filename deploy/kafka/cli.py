"""``wattsup broker fetch|start|stop|status``: the local Kafka (KRaft, no Docker), one node or a small cluster."""

from __future__ import annotations

from pathlib import Path

import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table

from deploy.kafka.launcher import BrokerError, LocalKafkaCluster, LocalKafkaNode, fetch_kafka_jars
from deploy.kafka.settings import BrokerSettings
from foundation.topics import ensure_topics, topic_offsets

app = typer.Typer(no_args_is_help=True)
console = Console()

PortOpt = typer.Option(None, "--port", help="Broker port on 127.0.0.1 (default WATTSUP_BROKER_PORT or 9092).")
DataDirOpt = typer.Option(None, "--data-dir", help="KRaft data dir (default WATTSUP_BROKER_DATA_DIR or var/kafka).")
NodesOpt = typer.Option(None, "--nodes", min=1,
                        help="Nodes of a local cluster (default WATTSUP_BROKER_NODES or 1); node i uses port+2(i-1).")


def _node(settings: BrokerSettings, port: int | None, data_dir: Path | None) -> LocalKafkaNode:
    return LocalKafkaNode(
        data_dir=data_dir or settings.data_dir,
        port=port or settings.port,
        controller_port=settings.controller_port if not port else None,
        cache_dir=settings.cache_dir,
        heap=settings.heap,
    )


def cluster_for(settings: BrokerSettings, port: int | None, data_dir: Path | None, nodes: int) -> LocalKafkaCluster:
    """Node i listens on base port + 2(i-1) and its controller on the port after it: 9092/9093, 9094/9095, ..."""
    base = port or settings.port
    return LocalKafkaCluster(
        data_dir=data_dir or settings.data_dir, nodes=nodes,
        ports=[base + 2 * i for i in range(nodes)], controller_ports=[base + 2 * i + 1 for i in range(nodes)],
        heap=settings.heap, cache_dir=settings.cache_dir,
    )


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@app.command()
def fetch() -> None:
    """Resolve the Apache Kafka jars from Maven Central into the cache (idempotent)."""
    settings = BrokerSettings()
    try:
        libs = fetch_kafka_jars(settings.cache_dir)
    except BrokerError as exc:
        _fail(exc)
    console.print(f"Kafka jars in {libs} ({len(list(libs.glob('*.jar')))} jars)")


@app.command()
def start(port: int = PortOpt, data_dir: Path = DataDirOpt, nodes: int = NodesOpt,
          topics: bool = typer.Option(True, help="Create the project's topics.")) -> None:
    """Format storage once, start the broker (or a local cluster) in the background, wait, create topics.

    With --nodes 3 the topics are created with replication factor 3 and min.insync.replicas 2
    unless WATTSUP_KAFKA_REPLICATION_FACTOR / WATTSUP_KAFKA_MIN_INSYNC_REPLICAS say otherwise.
    """
    settings = BrokerSettings()
    nodes = nodes or settings.nodes
    try:
        if nodes == 1:
            node = _node(settings, port, data_dir)
            node.start(timeout=settings.startup_timeout_seconds)
            bootstrap, where = node.bootstrap_servers, f"pid {node.pid()}, data {node.data_dir}"
        else:
            cluster = cluster_for(settings, port, data_dir, nodes)
            cluster.start(timeout=settings.startup_timeout_seconds)
            bootstrap = cluster.bootstrap_servers
            where = f"{nodes} nodes, pids {' '.join(str(n.pid()) for n in cluster.members)}, data {cluster.data_dir}"
        if topics:
            update: dict[str, object] = {"bootstrap_servers": bootstrap}
            env_set = settings.kafka.model_fields_set
            if nodes > 1 and "replication_factor" not in env_set:
                update["replication_factor"] = min(nodes, 3)
            if nodes > 1 and "min_insync_replicas" not in env_set:
                update["min_insync_replicas"] = min(nodes, 3) - 1
            connection = settings.kafka.model_copy(update=update)
            created = ensure_topics(connection, settings.topics)
            console.print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    except BrokerError as exc:
        _fail(exc)
    console.print(f"Kafka running on [bold]{bootstrap}[/bold] ({where})")


@app.command("create-topics")
def create_topics() -> None:
    """Create the project's topics on the cluster WATTSUP_KAFKA_* points at (idempotent).

    For a cluster WattsUp does not start itself (docker compose, a managed Kafka): replication
    factor and min.insync.replicas come from WATTSUP_KAFKA_REPLICATION_FACTOR / _MIN_INSYNC_REPLICAS.
    """
    settings = BrokerSettings()
    try:
        created = ensure_topics(settings.kafka, settings.topics)
    except Exception as exc:  # noqa: BLE001 - any client error is reported the same way, exit 1
        _fail(exc)
    console.print(f"topics created on {settings.kafka.bootstrap_servers}: {', '.join(created) or 'none (all exist)'}")


@app.command()
def stop(port: int = PortOpt, data_dir: Path = DataDirOpt, nodes: int = NodesOpt) -> None:
    """Stop the broker or every node of the local cluster (SIGTERM, then SIGKILL after 30 s). Data stays."""
    settings = BrokerSettings()
    nodes = nodes or settings.nodes
    if nodes > 1:
        cluster = cluster_for(settings, port, data_dir, nodes)
        running = len(cluster.running())
        cluster.stop()
        console.print(f"{running} of {nodes} nodes were running; stopped" if running else "cluster was not running")
        return
    node = _node(settings, port, data_dir)
    console.print("broker stopped" if node.stop() else "broker was not running")


@app.command()
def status(port: int = PortOpt, data_dir: Path = DataDirOpt, nodes: int = NodesOpt) -> None:
    """Whether the broker (or each node) runs, and the end offset of every partition of the project's topics."""
    settings = BrokerSettings()
    nodes = nodes or settings.nodes
    if nodes > 1:
        cluster = cluster_for(settings, port, data_dir, nodes)
        running = cluster.running()
        for node in cluster.members:
            state = f"[green]running[/green], pid {node.pid()}" if node in running else "[red]not running[/red]"
            console.print(f"node {node.node_id} {state}, {node.bootstrap_servers}, data {node.data_dir}")
        if not running:
            raise typer.Exit(3)
        bootstrap = ",".join(node.bootstrap_servers for node in running)
    else:
        node = _node(settings, port, data_dir)
        pid = node.pid()
        if pid is None:
            console.print(f"broker is [red]not running[/red] (data dir {node.data_dir})")
            raise typer.Exit(3)
        console.print(f"broker [green]running[/green], pid {pid}, {node.bootstrap_servers}, data {node.data_dir}")
        bootstrap = node.bootstrap_servers
    connection = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
    t = settings.topics
    try:
        offsets = topic_offsets(connection, [t.readings, t.forecasts, t.anomalies, t.dead_letters, t.control])
    except KafkaException as exc:
        console.print(f"[red]cannot read end offsets:[/red] {exc.args[0].str()} (right after a node stops, "
                      "its partitions' leadership moves within about 10 s: try again)")
        raise typer.Exit(4) from exc
    table = Table("topic", "partitions", "records (sum of end offsets)", "end offsets")
    for name, ends in offsets.items():
        table.add_row(name, str(len(ends)), str(sum(ends)), " ".join(map(str, ends)))
    console.print(table)
