"""``wattsup produce simulate|csv``: put readings on the readings topic."""

from __future__ import annotations

import re
import signal
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from producers.csv_source import CsvFormatError, parse_readings_csv
from producers.kafka_producer import DeliverySummary, ReadingProducer
from producers.pacing import paced_chunks
from producers.settings import ProducerSettings
from producers.simulator import FleetConfig, iter_fleet_blocks

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> timedelta:
    """``5m``, ``15m``, ``1h``, ``1d`` -> timedelta."""
    match = _INTERVAL.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not an interval like 5m, 15m, 1h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class BatchBy(str, Enum):
    none = "none"
    feeder = "feeder"


def _stop_on_sigterm() -> None:
    """Treat SIGTERM (how the demo and service managers stop us) like Ctrl-C: flush, then report."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _settings(bootstrap_servers: str | None) -> ProducerSettings:
    _stop_on_sigterm()
    settings = ProducerSettings()
    if bootstrap_servers:
        settings.kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    if settings.create_topics:
        from deploy.kafka.topics import ensure_topics

        ensure_topics(settings.kafka, settings.topics)
    return settings


def _speed(speedup: float | None, as_fast_as_possible: bool) -> float | None:
    if as_fast_as_possible and speedup is not None:
        raise typer.BadParameter("give either --speedup or --as-fast-as-possible, not both")
    if as_fast_as_possible:
        return None
    return speedup if speedup is not None else 1.0


def _progress(total: int | None) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)


def _finish(summary: DeliverySummary) -> None:
    typer.echo(summary.line())
    if summary.errors:
        typer.echo(f"delivery errors: {summary.errors}")
    if summary.failed:
        raise typer.Exit(1)


BootstrapOpt = typer.Option(None, "--bootstrap-servers", help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS.")


@app.command()
def simulate(
    meters: int = typer.Option(100, help="Number of meters in the fleet."),
    interval: str = typer.Option("15m", help="Metering interval: 5m, 15m, 1h, 1d."),
    days: float = typer.Option(1.0, help="Simulated days; 0 runs until stopped."),
    speedup: float | None = typer.Option(None, help="Simulated seconds per wall second (900: one 15-min interval/s)."),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible", help="Send without pacing."),
    labels: Path | None = typer.Option(None, help="Write ground-truth anomaly events to this CSV."),
    readings_csv: Path | None = typer.Option(None, help="Also write the readings with point labels to this CSV."),
    seed: int = typer.Option(42, help="Seed: the same seed gives the same fleet and anomalies."),
    anomaly_rate: float = typer.Option(0.05, help="Injected anomaly events per meter-day."),
    meters_per_feeder: int = typer.Option(50, help="Meters behind one feeder / concentrator."),
    start: datetime | None = typer.Option(None, help="First interval (UTC); default: a fixed date, or now when paced."),
    batch_by: BatchBy = typer.Option(BatchBy.none, help="feeder: send head-end batches, one record per feeder and interval."),
    bootstrap_servers: str | None = BootstrapOpt,
) -> None:
    """Simulate a fleet with labelled anomalies and send its readings to Kafka."""
    pace = _speed(speedup, as_fast_as_possible)
    step = parse_interval(interval)
    cfg = FleetConfig(meters=meters, interval=step, days=days, seed=seed, anomaly_rate=anomaly_rate,
                      meters_per_feeder=meters_per_feeder)
    if start is not None:
        cfg = replace(cfg, start=start if start.tzinfo else start.replace(tzinfo=timezone.utc))
    elif pace is not None:
        now = datetime.now(timezone.utc)
        cfg = replace(cfg, start=datetime.fromtimestamp(now.timestamp() // step.total_seconds() * step.total_seconds(),
                                                     timezone.utc))
    settings = _settings(bootstrap_servers)
    total = cfg.meters * cfg.steps if days > 0 else None
    label_frames, reading_frames = [], []
    with ReadingProducer(settings.kafka, settings.topics) as producer, _progress(total) as progress:
        task = progress.add_task("sending readings", total=total)
        try:
            for block in iter_fleet_blocks(cfg, block_days=7.0 if days > 0 else 1.0):
                label_frames.append(block.labels)
                if readings_csv is not None:
                    reading_frames.append(block.readings)
                for chunk in paced_chunks(block.readings, pace):
                    producer.send_frame(chunk, batch_by_feeder=batch_by is BatchBy.feeder,
                                        head_end_id=settings.head_end_id)
                    progress.update(task, advance=len(chunk))
        except KeyboardInterrupt:
            console.print("interrupted; flushing what was sent")
    if labels is not None:
        pd.concat(label_frames).to_csv(labels, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    if readings_csv is not None and reading_frames:
        from producers.simulator import SimulatedFleet

        SimulatedFleet(readings=pd.concat(reading_frames, ignore_index=True)).write_readings_csv(readings_csv)
    _finish(producer.summary)


@app.command()
def csv(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="timestamp,meter_id,kwh or timestamp,consumption CSV."),
    meter_id: str | None = typer.Option(None, help="Meter id for a single-meter timestamp,consumption file."),
    feeder_id: str | None = typer.Option(None, help="Feeder for rows without one (default: the meter is its own feeder)."),
    speedup: float | None = typer.Option(None, help="Replay faster than recorded (60: an hour per minute)."),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible", help="Send without pacing."),
    batch_by: BatchBy = typer.Option(BatchBy.none, help="feeder: group rows into head-end batches."),
    bootstrap_servers: str | None = BootstrapOpt,
) -> None:
    """Replay a CSV of readings; bad rows go to the dead-letter topic with row number and reason."""
    pace = _speed(speedup, as_fast_as_possible)
    try:
        parsed = parse_readings_csv(file, meter_id=meter_id, feeder_id=feeder_id)
    except CsvFormatError as exc:
        console.print(f"[red]error:[/red] {file}: {exc}")
        raise typer.Exit(2) from exc
    settings = _settings(bootstrap_servers)
    frame = parsed.readings.sort_values(["timestamp", "meter_id"], kind="stable")
    source = f"csv:{file.name}"
    with ReadingProducer(settings.kafka, settings.topics) as producer, _progress(len(frame)) as progress:
        for row in parsed.rejected:
            producer.send_dead_letter(source, row.reason, raw_text=row.raw_text, row_number=row.row_number)
            console.print(f"row {row.row_number}: {row.reason}")
        task = progress.add_task("replaying", total=len(frame))
        try:
            for chunk in paced_chunks(frame, pace):
                producer.send_frame(chunk, batch_by_feeder=batch_by is BatchBy.feeder)
                progress.update(task, advance=len(chunk))
        except KeyboardInterrupt:
            console.print("interrupted; flushing what was sent")
    _finish(producer.summary)
