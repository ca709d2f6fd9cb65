"""``wattsup lag-exporter``: serve consumer-group lag per partition for Prometheus."""

from __future__ import annotations

import logging
import signal
import threading

import typer
from rich.console import Console

console = Console()
log = logging.getLogger(__name__)


def lag_exporter(
    port: int | None = typer.Option(None, help="Metrics port (WATTSUP_LAG_EXPORTER_PORT, default 9103)."),
    host: str | None = typer.Option(None, help="Bind address (WATTSUP_LAG_EXPORTER_HOST, default 127.0.0.1)."),
    group: list[str] = typer.Option([], "--group", help="Consumer group to report (repeat); default: every group."),
) -> None:
    """Export consumer-group lag per partition (wattsup_kafka_consumer_lag_messages) until stopped."""
    from prometheus_client import CollectorRegistry, start_http_server

    from deploy.lag_exporter.collector import ConsumerLagCollector
    from deploy.lag_exporter.lag import LagReader
    from deploy.lag_exporter.settings import LagExporterSettings

    settings = LagExporterSettings()
    updates = {k: v for k, v in (("port", port), ("host", host), ("groups", group or None)) if v is not None}
    settings = settings.model_copy(update=updates)
    topics = settings.topics
    reader = LagReader(
        settings.kafka.confluent_config(),
        groups=settings.groups,
        topics=[topics.readings, topics.forecasts, topics.anomalies, topics.dead_letters, topics.control],
        timeout=settings.request_timeout_seconds,
    )
    registry = CollectorRegistry()
    registry.register(ConsumerLagCollector(reader))
    server, thread = start_http_server(settings.port, addr=settings.host, registry=registry)
    console.print(f"consumer lag on http://{settings.host}:{settings.port}/metrics "
                  f"(groups: {', '.join(settings.groups) or 'all'}; Kafka {settings.kafka.bootstrap_servers})")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        reader.close()
