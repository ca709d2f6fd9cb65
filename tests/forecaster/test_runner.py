"""A run over many meters: parallel fitting, one bad meter, accuracy as forecasts come due, records, backtest."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np
import pytest

from forecaster.accuracy import due_accuracy, save_horizons, smape
from forecaster.evaluate import backtest
from forecaster.fitting import FAILED, PROPHET, SEASONAL_NAIVE, ForecastResult
from forecaster.publish import forecast_record
from forecaster.runner import FitPool, fit_options, forecast_series
from forecaster.series import MeterSeries, series_from_readings
from forecaster.settings import ForecastSettings
from producers.simulator import FleetConfig, simulate_fleet
from schemas.serde import FORECAST, SingleObjectSerde


@pytest.fixture(scope="module")
def fleet_series() -> list[MeterSeries]:
    readings = simulate_fleet(FleetConfig(meters=8, days=21, interval=timedelta(hours=1), seed=21)).readings
    return series_from_readings(readings[readings["label"] == 0], 21 * 86400)  # normal usage only


def _settings(tmp_path, **kw) -> ForecastSettings:
    return ForecastSettings(data_dir=tmp_path, horizon_seconds=24 * 3600, **kw)


def test_run_in_worker_processes_survives_a_bad_meter_and_keeps_warm_start_state(tmp_path, fleet_series):
    bad = MeterSeries("BAD", "F9", 3600, fleet_series[0].end_ms.copy(), np.full(len(fleet_series[0].end_ms), np.nan))
    short = MeterSeries("SHORT", "F9", 3600, fleet_series[0].end_ms[-30:], fleet_series[0].kwh[-30:])
    series = [*fleet_series, bad, short]
    published: list[ForecastResult] = []
    progress: list[tuple[int, int]] = []
    pool = FitPool(2)
    pool.warm_up()  # few meters: without a running pool they would be fitted in this process
    try:
        summary = forecast_series(series, _settings(tmp_path, workers=2), pool, publish=published.append,
                                  progress=lambda d, t: progress.append((d, t)))
    finally:
        pool.close()
    assert (summary.meters, summary.prophet, summary.fallbacks, summary.failures) == (10, 8, 1, 1)
    assert summary.fallback_reasons == {"too little history": 1}
    assert sorted(r.meter_id for r in published) == sorted(s.meter_id for s in fleet_series) + ["SHORT"]
    assert progress[-1] == (10, 10)
    assert summary.fits_per_second > 0
    assert (tmp_path / "prophet_params.npz").exists() and (tmp_path / "last_horizons.npz").exists()


def test_run_can_be_stopped_between_chunks(tmp_path, fleet_series):
    stop = threading.Event()
    stop.set()
    summary = forecast_series(fleet_series, _settings(tmp_path, workers=1), FitPool(1), stop=stop)
    assert summary.meters == 0 and summary.stopped and not summary.ok


def test_accuracy_of_the_previous_horizon_as_it_comes_due(tmp_path):
    step = 3_600_000
    end_ms = np.arange(10, dtype=np.int64) * step + step
    previous = ForecastResult("M1", "F1", 3600, PROPHET, "prophet-test", end_ms=end_ms[6:] + 4 * step,
                              expected=np.array([1.0, 2.0, 3.0, 4.0]), lower=np.zeros(4), upper=np.ones(4) * 9)
    save_horizons(tmp_path, [previous])
    # new history covers the first two points of that horizon (timestamps 11 and 12 h); one is missing
    kwh = np.full(12, 1.0)
    kwh[10], kwh[11] = 3.0, np.nan
    new = MeterSeries("M1", "F1", 3600, np.arange(12, dtype=np.int64) * step + step, kwh)
    due = due_accuracy(tmp_path, [new])
    assert due is not None and (due.points, due.meters) == (1, 1)
    assert due.smape == pytest.approx(2 * abs(3.0 - 1.0) / (3.0 + 1.0))
    assert due_accuracy(tmp_path / "nothing-yet", [new]) is None
    assert smape(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0


def test_forecast_record_round_trips_through_the_shared_serde():
    result = ForecastResult("M000001", "F0001", 900, SEASONAL_NAIVE, "seasonal-naive-7d",
                            end_ms=np.array([900_000, 1_800_000]), expected=np.array([0.5, 0.6]),
                            lower=np.array([0.4, 0.5]), upper=np.array([0.7, 0.8]))
    serde = SingleObjectSerde()
    name, decoded = serde.decode(serde.encode(FORECAST, forecast_record(result, 123)), raw_timestamps=True)
    assert name == FORECAST
    assert decoded["meter_id"] == "M000001" and decoded["interval_seconds"] == 900 and decoded["generated_at"] == 123
    assert decoded["horizon"][1] == {"timestamp": 1_800_000, "expected": 0.6, "lower": 0.5, "upper": 0.8}


def test_backtest_scores_prophet_and_the_seasonal_naive_baseline_on_the_same_points(tmp_path, fleet_series):
    settings = _settings(tmp_path)
    report = backtest(fleet_series, fit_options(settings), FitPool(1))
    prophet, naive = report.scores
    assert prophet.meters == naive.meters == len(fleet_series) and prophet.points == naive.points > 0
    assert report.prophet_fallbacks == 0
    # on regular daily/weekly load shapes with noise, the smoothed model beats last week's noisy value
    assert prophet.smape < naive.smape
    assert prophet.mae < naive.mae
    assert FAILED not in {s.method for s in report.scores}


def test_every_forecast_reports_its_time_and_cpu(fleet_series):
    from forecaster.fitting import FitOptions, forecast_meter

    for series in (fleet_series[0], MeterSeries("S", "F", 3600, fleet_series[0].end_ms[-30:], fleet_series[0].kwh[-30:])):
        result = forecast_meter(series, FitOptions(horizon_seconds=24 * 3600))
        assert result.seconds > 0 and result.cpu_seconds > 0, result.outcome
        assert result.cpu_seconds < 10 * result.seconds + 0.05  # its own process and Stan, not the machine


def test_history_from_a_csv_becomes_per_meter_series(tmp_path):
    from forecaster.runner import read_history

    fleet = simulate_fleet(FleetConfig(meters=3, days=2, interval=timedelta(minutes=15), seed=5))
    path = tmp_path / "history.csv"
    fleet.write_readings_csv(path)
    with path.open("a") as fh:
        fh.write("2026-03-03T00:00:00Z,M000001,lots,0,F0001,900,,,\n")  # rejected, the rest is kept
    series = series_from_readings(read_history(ForecastSettings(), csv=path), 2 * 86400)
    assert [s.meter_id for s in series] == ["M000001", "M000002", "M000003"]
    assert all(s.interval_seconds == 900 and len(s.end_ms) == 192 for s in series)
    assert sum(s.observed for s in series) == fleet.readings.drop_duplicates(["meter_id", "timestamp"]).shape[0]


def test_a_forecast_the_schema_refuses_is_counted_not_raised(kafka_free_publisher):
    publisher = kafka_free_publisher
    no_feeder = ForecastResult("M1", None, 3600, PROPHET, "prophet-test", end_ms=np.array([3_600_000]),
                               expected=np.ones(1), lower=np.zeros(1), upper=np.ones(1))
    not_numbers = ForecastResult("M2", "F1", 3600, PROPHET, "prophet-test", end_ms=np.array([3_600_000]),
                                 expected=np.array(["n/a"], dtype=object), lower=np.zeros(1), upper=np.ones(1))
    assert publisher.send(no_feeder, 0) is False
    assert publisher.send(not_numbers, 0) is False
    assert publisher.summary.failed == 2


@pytest.fixture
def kafka_free_publisher():
    """A publisher whose producer is never reached: encoding fails before anything is sent."""
    from forecaster.publish import ForecastPublisher, PublishSummary

    publisher = ForecastPublisher.__new__(ForecastPublisher)
    publisher.serde, publisher.summary, publisher.partitions, publisher.topic = SingleObjectSerde(), PublishSummary(), 4, "t"
    return publisher


def test_horizons_of_meters_left_out_of_a_run_are_kept(tmp_path):
    from forecaster.accuracy import HORIZONS_FILE

    def result(meter: str, value: float) -> ForecastResult:
        return ForecastResult(meter, "F1", 3600, PROPHET, "p", end_ms=np.array([3_600_000]), expected=np.array([value]),
                              lower=np.zeros(1), upper=np.ones(1))

    save_horizons(tmp_path, [result("A", 1.0), result("B", 2.0)])
    save_horizons(tmp_path, [result("B", 3.0)])  # e.g. `wattsup forecast run --meters B`
    with np.load(tmp_path / HORIZONS_FILE, allow_pickle=True) as data:
        kept = {str(m): float(x[0]) for m, x in zip(data["meters"], data["expected"])}
    assert kept == {"A": 1.0, "B": 3.0}


def test_a_meter_that_kills_its_fitting_process_fails_alone(tmp_path, fleet_series, monkeypatch):
    import shutil
    import sys

    helper = tmp_path / "helpers"
    helper.mkdir()
    (helper / "crash_helper.py").write_text(
        "import os\n"
        "from forecaster.runner import fit_chunk\n\n"
        "def fit_or_die(chunk, options):\n"
        "    if any(series.meter_id == 'KILLER' for series, _ in chunk):\n"
        "        os._exit(9)  # as the kernel's OOM killer would end it\n"
        "    return fit_chunk(chunk, options)\n")
    monkeypatch.syspath_prepend(str(helper))  # the worker processes import the task from here
    import crash_helper

    killer = MeterSeries("KILLER", "F9", 3600, fleet_series[0].end_ms, fleet_series[0].kwh)
    items = [(s, None) for s in [*fleet_series[:4], killer, *fleet_series[4:]]]
    pool = FitPool(2)
    pool.warm_up()  # a pool, not this process: few meters would otherwise be fitted here
    try:
        results = [r for chunk in pool.map(items, fit_options(_settings(tmp_path)), threading.Event(),
                                           task=crash_helper.fit_or_die) for r in chunk]
    finally:
        pool.close()
        sys.modules.pop("crash_helper", None)
        shutil.rmtree(helper, ignore_errors=True)
    outcomes = {r.meter_id: r.outcome for r in results}
    assert len(results) == len(items) and outcomes.pop("KILLER") == FAILED
    assert set(outcomes.values()) == {PROPHET}
    assert "fitting process" in next(r.reason for r in results if r.meter_id == "KILLER")
