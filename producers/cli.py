"""``wattsup produce simulate|csv``: put readings on the readings topic.

Both commands end with one summary line on stdout,
``sent=… failed=… rejected=… records=… seconds=… rate=… readings/s``, and exit 1 if any reading
(or dead letter) was not acknowledged by the broker, 2 if the input could not be used at all.
"""

from __future__ import annotations

import signal
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from foundation.timeutil import parse_interval
from producers.pacing import Pacer, paced_chunks
from producers.settings import ProducerSettings
from readings.csv_parser import CsvFormatError, parse_readings_csv
from readings.producer import DeliverySummary
from simulation.archetypes import parse_archetypes
from simulation.fleet import FleetConfig, iter_fleet_blocks

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)

_BLOCK_DAYS = 1.0
_SHOWN_REJECTS = 20
"""Simulated days generated at a time: bounds memory; anomalies and late readings carry over."""


class BatchBy(str, Enum):
    none = "none"
    feeder = "feeder"


def _stop_on_sigterm() -> None:
    """Treat SIGTERM (how the demo and service managers stop us) like Ctrl-C: flush, then report."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _settings(bootstrap_servers: str | None) -> ProducerSettings:
    settings = ProducerSettings()
    if bootstrap_servers:
        settings.kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    if settings.create_topics:
        from foundation.topics import ensure_topics

        ensure_topics(settings.kafka, settings.topics)
    return settings


def _speed(speedup: float | None, as_fast_as_possible: bool) -> float | None:
    """Simulated seconds per wall second, or None for no pacing; recorded speed by default."""
    if as_fast_as_possible and speedup is not None:
        raise typer.BadParameter("give either --speedup or --as-fast-as-possible, not both")
    if speedup is not None and speedup <= 0:
        raise typer.BadParameter(f"--speedup must be positive, got {speedup}")
    if as_fast_as_possible:
        return None
    return speedup if speedup is not None else 1.0


def _progress() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


def _finish(summary: DeliverySummary) -> None:
    typer.echo(summary.line())
    if summary.errors:
        typer.echo(f"delivery errors: {summary.errors}")
    if not summary.ok:
        raise typer.Exit(1)


BootstrapOpt = typer.Option(None, "--bootstrap-servers", help="Overrides WATTSUP_KAFKA_BOOTSTRAP_SERVERS.")
SpeedupOpt = typer.Option(None, "--speedup", help="Simulated seconds per wall second (900: one 15-min interval a "
                                                   "second). Default: recorded speed.")
FastOpt = typer.Option(False, "--as-fast-as-possible", help="Send without pacing.")


@app.command()
def simulate(
    meters: int = typer.Option(100, help="Number of meters in the fleet."),
    interval: timedelta = typer.Option("15m", parser=parse_interval, help="Metering interval: 5m, 15m, 1h, 1d."),
    days: float | None = typer.Option(None, help="Simulated days; 0 runs until stopped. Default: until stopped "
                                                 "when paced, 1 with --as-fast-as-possible."),
    speedup: float | None = SpeedupOpt,
    as_fast_as_possible: bool = FastOpt,
    labels: Path | None = typer.Option(None, help="Write the ground-truth anomaly events to this CSV."),
    readings_csv: Path | None = typer.Option(None, help="Also write the readings with point labels to this CSV."),
    seed: int = typer.Option(42, help="Seed: the same seed gives the same fleet and anomalies."),
    anomaly_rate: float = typer.Option(0.05, help="Injected anomaly events per meter-day."),
    meters_per_feeder: int = typer.Option(50, help="Meters behind one feeder / concentrator."),
    archetypes: str = typer.Option("original", help="Meter archetypes: original (households and institutions), "
                                                    "mixed (all), or name[:share],... of household, institution, "
                                                    "heating_gas, irrigation, commercial, household_ev, "
                                                    "solar_prosumer, headend_gaps."),
    missing_rate: float = typer.Option(0.002, help="Share of readings never delivered."),
    late_rate: float = typer.Option(0.002, help="Share of readings delivered 1-6 intervals late (flag LATE)."),
    start: datetime | None = typer.Option(None, help="Start of the first interval (UTC). Default: a fixed date "
                                                     "(2026-03-02), or now when paced."),
    batch_by: BatchBy = typer.Option(BatchBy.none, help="feeder: send head-end batches, one record per feeder "
                                                        "and interval."),
    resume_from: datetime | None = typer.Option(None, help="Send only what is delivered at or after this time (UTC): "
                                                           "the same fleet (seed, start) continued after a restart."),
    behind_wall_clock: bool = typer.Option(False, help="Never send a reading before its time has come on the wall "
                                                       "clock: a run started in the past replays it at --speedup, "
                                                       "then goes on in real time."),
    bootstrap_servers: str | None = BootstrapOpt,
) -> None:
    """Simulate a fleet with labelled anomalies and send its readings to Kafka."""
    pace = _speed(speedup, as_fast_as_possible)
    step = interval
    if days is None:
        days = 0.0 if pace is not None else 1.0
    try:
        cfg = FleetConfig(meters=meters, interval=step, days=days, seed=seed, anomaly_rate=anomaly_rate,
                          meters_per_feeder=meters_per_feeder, missing_rate=missing_rate, late_rate=late_rate,
                          archetypes=parse_archetypes(archetypes))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if start is not None:
        cfg = replace(cfg, start=start if start.tzinfo else start.replace(tzinfo=UTC))
    elif pace is not None:  # a paced run is live data: it starts at the current interval
        now = datetime.now(UTC).timestamp()
        cfg = replace(cfg, start=datetime.fromtimestamp(now // cfg.interval_seconds * cfg.interval_seconds,
                                                        UTC))
    _stop_on_sigterm()
    settings = _settings(bootstrap_servers)
    total = None if cfg.endless else cfg.meters * cfg.steps
    blocks_written = 0
    with settings.reading_producer() as producer, _progress() as progress:
        pacer = Pacer(pace, wait=producer.poll, behind_wall_clock=behind_wall_clock)
        skip_before = None if resume_from is None else int(
            (resume_from if resume_from.tzinfo else resume_from.replace(tzinfo=UTC)).timestamp() * 1000)
        task = progress.add_task("sending readings", total=total)
        try:
            for block in iter_fleet_blocks(cfg, block_days=_BLOCK_DAYS):
                # Written before sending, so an evaluator can follow an endless run as it goes.
                if labels is not None:
                    block.write_labels(labels, append=blocks_written > 0)
                if readings_csv is not None:
                    block.write_readings_csv(readings_csv, append=blocks_written > 0)
                blocks_written += 1
                for chunk in paced_chunks(block.readings, pacer, skip_before_ms=skip_before):
                    producer.send_frame(chunk, batch_by_feeder=batch_by is BatchBy.feeder,
                                        head_end_id=settings.head_end_id)
                    progress.update(task, advance=len(chunk))
        except KeyboardInterrupt:
            console.print("interrupted; flushing what was sent")
    _finish(producer.summary)


@app.command()
def csv(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="timestamp,meter_id,kwh or timestamp,consumption CSV."),
    meter_id: str | None = typer.Option(None, help="Meter id for a single-meter timestamp,consumption file "
                                                   "(default: the file name without extension)."),
    feeder_id: str | None = typer.Option(None, help="Feeder for rows without one (default: the meter is its own feeder)."),
    speedup: float | None = typer.Option(None, "--speedup", help="Replay faster than recorded (60: an hour a minute). "
                                                                 "Default: recorded speed."),
    as_fast_as_possible: bool = FastOpt,
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
    _stop_on_sigterm()
    settings = _settings(bootstrap_servers)
    frame = parsed.readings.sort_values(["timestamp", "meter_id"], kind="stable")
    source = f"csv:{file}"
    with settings.reading_producer() as producer, _progress() as progress:
        for row in parsed.rejected:
            producer.send_dead_letter(source, row.reason, raw_text=row.raw_text, row_number=row.row_number)
        for row in parsed.rejected[:_SHOWN_REJECTS]:
            console.print(f"row {row.row_number}: {row.reason}")
        if len(parsed.rejected) > _SHOWN_REJECTS:
            console.print(f"... and {len(parsed.rejected) - _SHOWN_REJECTS} more rows rejected (all in the dead-letter topic)")
        task = progress.add_task("replaying", total=len(frame))
        try:
            for chunk in paced_chunks(frame, Pacer(pace, wait=producer.poll)):
                producer.send_frame(chunk, batch_by_feeder=batch_by is BatchBy.feeder)
                progress.update(task, advance=len(chunk))
        except KeyboardInterrupt:
            console.print("interrupted; flushing what was sent")
    _finish(producer.summary)
