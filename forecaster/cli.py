"""``wattsup forecast run|schedule|evaluate``.

``run`` and each scheduled run end with one summary line on stdout
(``meters=… prophet=… fallbacks=… failures=… published=… seconds=… fits_per_second=…``; a scheduled
run, which forecasts its instance's share of the fleet, starts it with ``partitions=…`` and adds
``handed_over=…``); ``run`` exits 1 if a forecast was not acknowledged by Kafka or every meter failed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from forecaster.settings import ForecastSettings
from foundation.timeutil import parse_interval

if TYPE_CHECKING:  # imported where used: Prophet and Kafka load only for the commands that need them
    from forecaster.group import RunShare
    from forecaster.runner import FitPool, RunSummary

app = typer.Typer(no_args_is_help=True)
console = Console(stderr=True)
log = logging.getLogger(__name__)

_METERS = typer.Option(None, "--meters", help="Only these meter ids (repeat the option, or comma-separated).")
_HISTORY = typer.Option(None, "--history", parser=parse_interval,
                        help="History per meter, e.g. 28d (WATTSUP_FORECAST_HISTORY_SECONDS).")
_HORIZON = typer.Option(None, "--horizon", parser=parse_interval,
                        help="How far ahead, e.g. 48h (WATTSUP_FORECAST_HORIZON_SECONDS).")
_CSV = typer.Option(None, "--csv", exists=True, dir_okay=False, help="Read history from this CSV instead of Kafka.")
_WORKERS = typer.Option(None, "--workers", min=1, help="Fitting processes (WATTSUP_FORECAST_WORKERS).")
_HOLIDAYS = typer.Option(None, "--country-holidays",
                         help="ISO country code whose public holidays Prophet models (WATTSUP_FORECAST_COUNTRY_HOLIDAYS).")


def _settings(history: timedelta | None, horizon: timedelta | None, workers: int | None,
              **extra: object) -> ForecastSettings:
    settings = ForecastSettings()
    update: dict[str, object] = {k: v for k, v in extra.items() if v is not None}
    if history:
        update["history_seconds"] = history.total_seconds()
    if horizon:
        update["horizon_seconds"] = horizon.total_seconds()
    if workers:
        update["workers"] = workers
    return settings.model_copy(update=update)


def _meter_list(meters: list[str] | None) -> list[str] | None:
    if not meters:
        return None
    return [m.strip() for item in meters for m in item.split(",") if m.strip()]


def _progress() -> Progress:
    return Progress(TextColumn("forecasting"), BarColumn(), MofNCompleteColumn(), TextColumn("meters"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                    disable=not console.is_terminal)  # in a log file the summary line says it all


def _run_with_progress(settings: ForecastSettings, pool: FitPool, *, csv: Path | None, meters: list[str] | None,
                       stop: threading.Event, share: RunShare | None = None) -> RunSummary:
    from forecaster.runner import run_once

    with _progress() as bar:
        task = bar.add_task("forecast", total=None)
        return run_once(settings, pool, csv=csv, meters=meters, stop=stop, share=share,
                        on_series=lambda n: bar.update(task, total=n),
                        progress=lambda done, total: bar.update(task, completed=done, total=total))


def _stop_on_signals(stop: threading.Event) -> None:
    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the chunks in progress, then stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


@app.command()
def run(
    meters: list[str] | None = _METERS,
    history: timedelta | None = _HISTORY,
    horizon: timedelta | None = _HORIZON,
    csv: Path | None = _CSV,
    workers: int | None = _WORKERS,
    country_holidays: str | None = _HOLIDAYS,
) -> None:
    """Fit every meter once and write its forecast to the compacted forecasts topic."""
    from forecaster.runner import FitPool

    settings = _settings(history, horizon, workers, country_holidays=country_holidays)
    stop = threading.Event()
    _stop_on_signals(stop)
    pool = FitPool(settings.workers)
    try:
        summary = _run_with_progress(settings, pool, csv=csv, meters=_meter_list(meters), stop=stop)
    finally:
        pool.close()
    typer.echo(summary.line())
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def schedule(
    every: timedelta = typer.Option("6h", "--every", parser=parse_interval,
                                    help="Time between runs, e.g. 6h, 30m, 60s."),
    meters: list[str] | None = _METERS,
    history: timedelta | None = _HISTORY,
    horizon: timedelta | None = _HORIZON,
    workers: int | None = _WORKERS,
    metrics_port: int | None = typer.Option(None, help="Prometheus port (WATTSUP_FORECAST_METRICS_PORT, 0: none)."),
    runs: int = typer.Option(0, help="Stop after this many runs (0: until SIGTERM / Ctrl-C)."),
    country_holidays: str | None = _HOLIDAYS,
    group: str | None = typer.Option(None, "--group", help="Forecaster group to share the fleet with "
                                                           "(WATTSUP_FORECAST_GROUP_ID)."),
) -> None:
    """Forecast this instance's share of the fleet now and then every ``--every``; a failed run is logged and
    retried next time.

    The instance joins the forecaster group (``--group``, WATTSUP_FORECAST_GROUP_ID): instances with the same
    group share the fleet by the readings partitions Kafka assigns them; one instance alone has them all.
    """
    from forecaster import metrics
    from forecaster.group import ForecastGroup
    from forecaster.runner import FitPool

    settings = _settings(history, horizon, workers, every_seconds=every.total_seconds(),
                         metrics_port=metrics_port, country_holidays=country_holidays, group_id=group)
    stop = threading.Event()
    _stop_on_signals(stop)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.metrics_port)
        except OSError as exc:
            console.print(f"cannot serve metrics on port {settings.metrics_port}: {exc}; "
                          "set WATTSUP_FORECAST_METRICS_PORT (or --metrics-port, 0 for none)")
            raise typer.Exit(2) from exc
        log.info("metrics on http://127.0.0.1:%d/metrics", settings.metrics_port)
    pool = FitPool(settings.workers)
    membership = ForecastGroup(settings.kafka, settings.topics.readings, settings.group_id,
                               session_timeout_ms=settings.group_session_timeout_ms)
    membership.start()
    done = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                share = membership.begin_run(settings.group_join_timeout_seconds)
            except Exception as exc:  # noqa: BLE001 - Kafka away or the group forming: retried next time
                metrics.RUNS.labels("failed").inc()
                log.error("forecast run not started: %s: %s", type(exc).__name__, exc)
            else:
                try:
                    summary = _run_with_progress(settings, pool, csv=None, meters=_meter_list(meters), stop=stop,
                                                 share=share)
                    typer.echo(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {summary.line()}")
                except Exception as exc:  # noqa: BLE001 - the schedule outlives one bad run
                    log.error("forecast run failed: %s: %s", type(exc).__name__, exc)
                finally:
                    membership.end_run(share)
            done += 1
            if runs and done >= runs:
                break
            stop.wait(max(0.0, settings.every_seconds - (time.monotonic() - started)))
    finally:
        membership.stop()  # leave the group now: the others take this instance's partitions at their next run
        pool.close()
    log.info("forecast schedule stopped after %d runs", done)


@app.command()
def evaluate(
    csv: Path | None = _CSV,
    simulate_meters: int = typer.Option(0, help="Backtest on a simulated fleet of this many meters instead."),
    simulate_days: float = typer.Option(28.0, help="Days of simulated history."),
    interval: timedelta = typer.Option("1h", parser=parse_interval, help="Interval of simulated history."),
    seed: int = typer.Option(7, help="Seed of the simulated fleet."),
    with_anomalies: bool = typer.Option(False, help="Keep the simulated anomalies in history and holdout."),
    meters: list[str] | None = _METERS,
    history: timedelta | None = _HISTORY,
    horizon: timedelta | None = _HORIZON,
    workers: int | None = _WORKERS,
    country_holidays: str | None = _HOLIDAYS,
) -> None:
    """Backtest: sMAPE and MAE of Prophet and of the seasonal-naive baseline on held-out history."""
    from forecaster.evaluate import backtest
    from forecaster.runner import FitPool, fit_options, read_history
    from forecaster.series import series_from_readings

    settings = _settings(history, horizon, workers, country_holidays=country_holidays)
    if simulate_meters > 0:
        from simulation.fleet import FleetConfig, simulate_fleet

        frame = simulate_fleet(FleetConfig(meters=simulate_meters, days=simulate_days,
                                           interval=interval, seed=seed)).readings
        if not with_anomalies:
            frame = frame[frame["label"] == 0]  # judged on normal usage unless asked otherwise
    else:
        frame = read_history(settings, csv)
    # the holdout comes out of the history window, so read the window plus the horizon
    series = series_from_readings(frame, settings.history_seconds + settings.horizon_seconds, _meter_list(meters))
    if not series:
        console.print("no history to backtest on")
        raise typer.Exit(2)
    pool = FitPool(settings.workers)
    try:
        report = backtest(series, fit_options(settings), pool)
    finally:
        pool.close()
    table = Table("method", "meters", "points", "sMAPE", "MAE (kWh)",
                  title=f"Backtest: last {settings.horizon_seconds / 3600:g} h held out of "
                        f"{settings.history_seconds / 86400:g} days per meter")
    for s in report.scores:
        table.add_row(s.method, str(s.meters), str(s.points), f"{s.smape:.4f}", f"{s.mae:.4f}")
    Console().print(table)
    if report.prophet_fallbacks or report.skipped:
        Console().print(f"{report.prophet_fallbacks} meters used the seasonal-naive fallback in the forecaster's row; "
                        f"{report.skipped} meters had too little history to hold out the horizon")
