"""``wattsup broker fetch|start|stop|status``: the local single-node Kafka (KRaft, no Docker)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from deploy.kafka.launcher import BrokerError, LocalKafkaNode, fetch_kafka_jars
from deploy.kafka.settings import BrokerSettings
from deploy.kafka.topics import ensure_topics, topic_offsets

app = typer.Typer(no_args_is_help=True)
console = Console()

PortOpt = typer.Option(None, "--port", help="Broker port on 127.0.0.1 (default WATTSUP_BROKER_PORT or 9092).")
DataDirOpt = typer.Option(None, "--data-dir", help="KRaft data dir (default WATTSUP_BROKER_DATA_DIR or var/kafka).")


def _node(settings: BrokerSettings, port: int | None, data_dir: Path | None) -> LocalKafkaNode:
    return LocalKafkaNode(
        data_dir=data_dir or settings.data_dir,
        port=port or settings.port,
        controller_port=settings.controller_port if not port else None,
        cache_dir=settings.cache_dir,
        heap=settings.heap,
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
def start(port: int = PortOpt, data_dir: Path = DataDirOpt, topics: bool = typer.Option(True, help="Create the project's topics.")) -> None:
    """Format storage once, start the broker in the background, wait for it, create topics."""
    settings = BrokerSettings()
    node = _node(settings, port, data_dir)
    try:
        node.start(timeout=settings.startup_timeout_seconds)
        if topics:
            connection = settings.kafka.model_copy(update={"bootstrap_servers": node.bootstrap_servers})
            created = ensure_topics(connection, settings.topics)
            console.print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    except BrokerError as exc:
        _fail(exc)
    console.print(f"Kafka broker running on [bold]{node.bootstrap_servers}[/bold] (pid {node.pid()}, data {node.data_dir})")


@app.command()
def stop(port: int = PortOpt, data_dir: Path = DataDirOpt) -> None:
    """Stop the broker (SIGTERM, then SIGKILL after 30 s). Data stays in the data dir."""
    node = _node(BrokerSettings(), port, data_dir)
    console.print("broker stopped" if node.stop() else "broker was not running")


@app.command()
def status(port: int = PortOpt, data_dir: Path = DataDirOpt) -> None:
    """Whether the broker runs, and the end offset of every partition of the project's topics."""
    settings = BrokerSettings()
    node = _node(settings, port, data_dir)
    pid = node.pid()
    if pid is None:
        console.print(f"broker is [red]not running[/red] (data dir {node.data_dir})")
        raise typer.Exit(3)
    console.print(f"broker [green]running[/green], pid {pid}, {node.bootstrap_servers}, data {node.data_dir}")
    connection = settings.kafka.model_copy(update={"bootstrap_servers": node.bootstrap_servers})
    t = settings.topics
    offsets = topic_offsets(connection, [t.readings, t.forecasts, t.anomalies, t.dead_letters, t.control])
    table = Table("topic", "partitions", "records (sum of end offsets)", "end offsets")
    for name, ends in offsets.items():
        table.add_row(name, str(len(ends)), str(sum(ends)), " ".join(map(str, ends)))
    console.print(table)
