"""A run over many meters: parallel fitting, one bad meter, accuracy as forecasts come due, records, backtest."""

from __future__ import annotations

import threading
from datetime import timedelta

import numpy as np

from forecaster.fitting import FAILED, PROPHET, ForecastResult
from forecaster.runner import FitPool, fit_options, forecast_series
from forecaster.series import MeterSeries, series_from_readings
from forecaster.settings import ForecastSettings
from simulation.fleet import FleetConfig, simulate_fleet


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


def test_a_partition_revoked_mid_run_is_fenced_and_its_meters_are_handed_over(tmp_path, fleet_series):
    """What a forecaster group instance does when Kafka moves one of its partitions during a run."""
    from forecaster.group import RunShare
    from forecaster.partition_state import load_partition_horizons, load_partition_params, partition_dir

    partition_of = {s.meter_id: i % 2 for i, s in enumerate(fleet_series)}  # alternating: 0, 1, 0, 1, ...
    share = RunShare({0, 1})
    flushed: list[frozenset[int]] = []
    share.on_handover(lambda: flushed.append(share.revoked))
    published: list[ForecastResult] = []

    def publish(result: ForecastResult) -> None:
        published.append(result)
        if len(published) == 2:  # Kafka revokes partition 1 while the run is under way
            assert share.revoke([1, 5]) == frozenset({1})

    summary = forecast_series(fleet_series, _settings(tmp_path, workers=1), FitPool(1), publish=publish, share=share,
                              partition_of=partition_of)
    p0 = sorted(m for m, p in partition_of.items() if p == 0)
    assert [partition_of[r.meter_id] for r in published[:2]] == [0, 1]
    assert sorted(r.meter_id for r in published if partition_of[r.meter_id] == 0) == p0
    assert len(published) == len(p0) + 1  # nothing more of partition 1 after the fence
    assert (summary.meters, summary.handed_over, summary.partitions) == (len(p0) + 1, len(fleet_series) - len(p0) - 1,
                                                                         frozenset({0, 1}))
    assert not summary.stopped and summary.ok
    assert flushed == [frozenset({1})]  # what was published for the moved partition was flushed at once
    assert "partitions=0-1 meters=5 " in summary.line() and "handed_over=3" in summary.line()
    # state is kept per partition, and only for the partition the run still owns
    assert sorted(load_partition_params(tmp_path, [0])) == p0
    assert sorted(load_partition_horizons(tmp_path, [0])) == p0
    assert not (partition_dir(tmp_path, 1)).exists()
    assert not (tmp_path / "prophet_params.npz").exists()


def test_a_group_run_warm_starts_from_its_partitions_and_the_whole_fleet_files(tmp_path, fleet_series, monkeypatch):
    from forecaster import runner
    from forecaster.group import RunShare
    from forecaster.warm_start import save_params

    first = forecast_series(fleet_series[:4], _settings(tmp_path, workers=1), FitPool(1), keep_results=True)
    save_params(tmp_path, {r.meter_id: r.params for r in first.results})  # e.g. written by `forecast run`
    partition_of = {s.meter_id: 3 for s in fleet_series}
    warm: dict[str, bool] = {}
    real = runner.forecast_meter

    def spy(series, options, init=None):  # one process (workers=1): the run fits here
        warm[series.meter_id] = init is not None
        return real(series, options, init)

    monkeypatch.setattr(runner, "forecast_meter", spy)
    second = forecast_series(fleet_series, _settings(tmp_path, workers=1), FitPool(1), share=RunShare({3}),
                             partition_of=partition_of)
    assert second.meters == len(fleet_series) and second.handed_over == 0
    assert warm == {s.meter_id: i < 4 for i, s in enumerate(fleet_series)}  # the whole-fleet file filled in
    warm.clear()
    forecast_series(fleet_series, _settings(tmp_path, workers=1), FitPool(1), share=RunShare({3}),
                    partition_of=partition_of)
    assert warm == {s.meter_id: True for s in fleet_series}  # the partition's own files now hold every meter


def test_fitting_skips_items_refused_just_before_their_chunk_goes_out(tmp_path, fleet_series):
    refused = {fleet_series[1].meter_id, fleet_series[6].meter_id}
    pool = FitPool(2)
    pool.warm_up()
    try:
        results = [r for chunk in pool.map([(s, None) for s in fleet_series], fit_options(_settings(tmp_path)),
                                           threading.Event(), wanted=lambda item: item[0].meter_id not in refused)
                   for r in chunk]
    finally:
        pool.close()
    assert sorted(r.meter_id for r in results) == sorted(s.meter_id for s in fleet_series if s.meter_id not in refused)
