"""``wattsup model train|list``."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from foundation.timeutil import parse_interval
from models.artifacts import list_versions
from models.settings import ModelSettings

app = typer.Typer(no_args_is_help=True)
console = Console(width=160)


@app.command()
def train(
    csv: Path | None = typer.Option(None, exists=True, dir_okay=False, help="History as timestamp,meter_id,kwh CSV."),
    simulate_meters: int = typer.Option(0, help="Train on a simulated fleet of this many meters instead."),
    simulate_days: float = typer.Option(14.0, help="Days of simulated history."),
    interval: timedelta = typer.Option("1h", parser=parse_interval, help="Interval of simulated history."),
    seed: int = typer.Option(1001, help="Seed of the simulated history (keep it apart from evaluation seeds)."),
    archetypes: str = typer.Option("original", help="Archetypes of the simulated history (see wattsup produce "
                                                    "simulate --help): original, mixed or name[:share],..."),
    from_kafka: bool = typer.Option(False, "--from-kafka", help="Replay history from the readings topic."),
    produced_days: float = typer.Option(28.0, help="With --from-kafka: records produced in the last N days."),
    since: datetime | None = typer.Option(None, help="With --from-kafka: readings at or after this time (UTC)."),
    until: datetime | None = typer.Option(None, help="With --from-kafka: readings before this time (UTC)."),
    model_dir: Path | None = typer.Option(None, help="Where versions are kept (WATTSUP_MODEL_DIR)."),
    feedback: bool | None = typer.Option(None, "--feedback/--no-feedback",
                                         help="Leave readings of incidents operators confirmed (the feedback topic) "
                                              "out of the history; default: with --from-kafka."),
    forecasts: bool = typer.Option(True, "--forecasts/--no-forecasts",
                                   help="Replay the forecaster over the history (WATTSUP_FORECAST_* settings) so the "
                                        "detector learns forecast residuals; --no-forecasts is quicker."),
) -> None:
    """Fit the detector on history and save a new version; running workers pick it up."""
    from models.training import replay_forecasts, train_and_save

    settings = ModelSettings()
    target = model_dir or settings.dir
    if from_kafka:
        from foundation.kafka_settings import KafkaConnection, TopicNames
        from readings.history import days_ago, read_readings

        topic = TopicNames().readings
        frame = read_readings(KafkaConnection(), topic, produced_since=days_ago(produced_days), since=since,
                              until=until)
        source = f"kafka:{topic} produced in the last {produced_days:g} days"
        console.print(f"replayed {len(frame)} readings of {frame['meter_id'].nunique()} meters from {topic}")
    elif csv is not None:
        from readings.csv_parser import parse_readings_csv

        parsed = parse_readings_csv(csv)
        for row in parsed.rejected[:10]:
            console.print(f"skipping row {row.row_number}: {row.reason}")
        frame, source = parsed.readings, f"csv:{csv}"
    elif simulate_meters > 0:
        from simulation.archetypes import parse_archetypes
        from simulation.fleet import FleetConfig, simulate_fleet

        try:
            cfg = FleetConfig(meters=simulate_meters, days=simulate_days, interval=interval, seed=seed,
                              archetypes=parse_archetypes(archetypes))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        frame, source = (simulate_fleet(cfg).readings,
                         f"simulated:{simulate_meters}x{simulate_days}d@{interval},seed={seed},archetypes={archetypes}")
    else:
        raise typer.BadParameter("give --from-kafka, --csv FILE or --simulate-meters N")
    if feedback if feedback is not None else from_kafka:
        frame = _without_confirmed_anomalies(frame)
    replayed = None
    if forecasts:
        with console.status("replaying the forecaster over the history"):
            replayed = replay_forecasts(frame)
        console.print(f"replayed {replayed.runs} forecast runs ({replayed.fallbacks} seasonal-naive): "
                      f"{replayed.covered} of {len(frame)} readings covered")
    from detection.calendar import FleetCalendar
    from foundation.fleet_clock import FleetClock

    model = train_and_save(frame, target, contamination=settings.contamination, n_estimators=settings.n_estimators,
                           source=source, forecasts=replayed, calendar=FleetCalendar.from_clock(FleetClock()))
    console.print(f"trained model [bold]{model.version}[/bold] on {model.metadata.rows} readings of "
                  f"{model.metadata.meters} meters ({model.metadata.forecast_coverage:.0%} with a forecast) -> {model.path}")


def _without_confirmed_anomalies(frame):
    """The history less the readings of incidents operators confirmed: real anomalies are not usage to learn."""
    from detection.feedback import confirmed_readings
    from feedback.topic import read_marks
    from foundation.kafka_settings import KafkaConnection, TopicNames
    from schemas.serde import make_serde

    connection = KafkaConnection()
    marks = read_marks(connection, TopicNames(), make_serde(connection.schema_registry_url,
                                                            **connection.registry_config()))
    from foundation.timeutil import epoch_ms

    inside = confirmed_readings(frame["meter_id"].to_numpy(), epoch_ms(frame["timestamp"]), marks)
    console.print(f"left out {int(inside.sum())} readings of {sum(m.verdict == 'confirmed' and not m.revoked for m in marks)} "
                  "confirmed incidents (operator feedback)")
    return frame.loc[~inside].reset_index(drop=True)


@app.command("list")
def list_models(model_dir: Path | None = typer.Option(None, help="Where versions are kept.")) -> None:
    """Show the trained versions, newest last."""
    versions = list_versions(model_dir or ModelSettings().dir)
    if not versions:
        console.print("no trained models yet: run `wattsup model train`")
        raise typer.Exit(1)
    table = Table("version", "rows", "meters", "training window", "source", "scikit-learn")
    for m in versions:
        table.add_row(m.version, str(m.rows), str(m.meters), f"{m.training_window['start']} .. {m.training_window['end']}",
                      m.source, m.sklearn_version)
    console.print(table)
