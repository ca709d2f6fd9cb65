"""``wattsup stream`` and ``wattsup sensitivity``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(width=160)
app = typer.Typer(no_args_is_help=True)


def stream(
    bootstrap_servers: str | None = typer.Option(None, help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS."),
    metrics_port: int | None = typer.Option(None, help="Prometheus endpoint port (WATTSUP_STREAM_METRICS_PORT)."),
    web_port: int | None = typer.Option(None, help="Faust web port (WATTSUP_STREAM_WEB_PORT)."),
    model_dir: Path | None = typer.Option(None, help="Detector versions (WATTSUP_MODEL_DIR)."),
) -> None:
    """Run a stream worker: score readings, emit explained anomalies. Start several to share partitions."""
    from stream_processors.settings import StreamSettings
    from stream_processors.worker import run_worker

    settings = StreamSettings()
    updates = {k: v for k, v in (("metrics_port", metrics_port), ("web_port", web_port)) if v is not None}
    settings = settings.model_copy(update=updates)
    if model_dir:
        settings.models = settings.models.model_copy(update={"dir": model_dir})
    if bootstrap_servers:
        settings.kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    run_worker(settings)


def sensitivity(
    value: float | None = typer.Argument(None, help="0.1-10; 1 is the calibrated default; omit with --clear."),
    meter: str | None = typer.Option(None, help="Only this meter (default: the whole fleet)."),
    clear: bool = typer.Option(False, help="Remove the meter's override (or reset the fleet to 1)."),
    bootstrap_servers: str | None = typer.Option(None, help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS."),
) -> None:
    """Change detection sensitivity in the running stream workers, without a restart."""
    from foundation.sensitivity import publish_sensitivity
    from stream_processors.settings import StreamSettings

    settings = StreamSettings()
    if bootstrap_servers:
        settings.kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    if value is None and not clear:
        raise typer.BadParameter("give a value, or --clear")
    try:
        publish_sensitivity(settings.kafka, settings.topics, None if clear else value, meter)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"sensitivity for {meter or 'the fleet'}: {'cleared' if clear else value}")
