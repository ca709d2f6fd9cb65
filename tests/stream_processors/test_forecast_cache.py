"""The stream's forecast cache: points on the meter's grid, kept per feeder, joined reading by reading.

The forecaster fits sub-hourly meters on hourly sums but must emit each horizon at the meter's
own interval, aligned to its readings, or ``MeterForecast.at`` finds no point and the join is
silently empty: the first test checks the two sides agree, reading by reading.
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from forecaster.fitting import PROPHET, FitOptions, forecast_meter
from forecaster.publish import forecast_record
from forecaster.series import series_from_readings
from models.training import train_and_save
from readings.columns import ReadingColumns, decode_into
from schemas.reading_encoder import feeder_batches
from schemas.serde import FORECAST, METER_READING_BATCH, SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet
from stream_processors.forecast_cache import ForecastCache, MeterForecast
from stream_processors.scoring import StreamScorer
from tests.stream_processors.scoring_fleet import WorkerTable, fresh_tables


def process(engine: StreamScorer, serde: SingleObjectSerde, frame: pd.DataFrame) -> list[dict]:
    messages = [serde.encode(METER_READING_BATCH, b) for b in feeder_batches(frame)]
    anomalies = []
    for s in range(0, len(messages), 40):
        columns = ReadingColumns()
        for m in messages[s:s + 40]:
            assert decode_into(columns, serde, m, "test") == []
        result = engine.process(columns)
        engine.persist(result.touched_feeders)
        anomalies += result.anomalies
    return anomalies


def test_forecaster_output_joins_every_later_reading_of_a_15_minute_meter(tmp_path):
    quarter = timedelta(minutes=15)
    train_and_save(simulate_fleet(FleetConfig(meters=30, days=4, interval=quarter, seed=51)).readings, tmp_path,
                   n_estimators=30)
    fleet = simulate_fleet(FleetConfig(meters=20, days=7, interval=quarter, seed=52, meters_per_feeder=10,
                                       anomaly_rate=0.6))
    readings = fleet.readings
    cut = readings["timestamp"].min() + pd.Timedelta(days=6) - quarter
    history, future = readings[readings["timestamp"] <= cut], readings[readings["timestamp"] > cut]

    serde = SingleObjectSerde()
    engine = StreamScorer(tmp_path, serde)
    engine.attach_tables(*fresh_tables())
    process(engine, serde, history)

    points = {}
    for series in series_from_readings(history, 6 * 86400):
        result = forecast_meter(series, FitOptions(horizon_seconds=86400))
        assert result.outcome == PROPHET, result.reason
        engine.accept_forecasts([serde.encode(FORECAST, forecast_record(result, 0))])
        points.update({(series.meter_id, int(t)): (e, lo, hi) for t, e, lo, hi in
                       zip(result.end_ms, result.expected, result.lower, result.upper)})
    assert engine.forecasts_tracked == 20

    # every reading of the next day falls on a forecast point of its meter
    future_ms = future["timestamp"].astype("datetime64[ms, UTC]").astype("int64")
    assert all((m, t) in points for m, t in zip(future["meter_id"], future_ms))

    anomalies = process(engine, serde, future)
    assert len(anomalies) >= 3
    for a in anomalies:
        expected, lower, upper = points[(a["meter_id"], a["timestamp"])]
        assert (a["expected"], a["lower"], a["upper"]) == pytest.approx((expected, lower, upper), rel=1e-12)
        assert a["residual"] == pytest.approx(a["observed"] - expected)


def forecast_value(serde: SingleObjectSerde, meter: str, feeder: str, start_ms: int, points: int = 3) -> bytes:
    horizon = [{"timestamp": start_ms + i * 3_600_000, "expected": 1.0 + i, "lower": 0.5 + i, "upper": 1.5 + i}
               for i in range(points)]
    return serde.encode(FORECAST, {"meter_id": meter, "feeder_id": feeder, "generated_at": start_ms,
                                   "model_version": "test", "interval_seconds": 3600, "horizon": horizon})


def test_a_forecast_point_is_found_only_on_the_meters_grid():
    fc = MeterForecast(start_ms=1000, step_ms=100, expected=np.array([1.0, 2.0]), lower=np.array([0.0, 1.0]),
                       upper=np.array([2.0, 3.0]), model_version="v")
    assert fc.at(1100) == (2.0, 1.0, 3.0)
    assert fc.at(1050) is None and fc.at(900) is None and fc.at(1200) is None


def test_a_feeders_forecasts_survive_a_trip_through_the_table():
    serde = SingleObjectSerde()
    table: dict[bytes, bytes] = {}
    first = ForecastCache(serde)
    first.table = table
    first.accept([forecast_value(serde, "M1", "F1", 3_600_000), forecast_value(serde, "M2", "F1", 3_600_000),
                  b"not avro"])
    assert len(first) == 2 and set(table) == {b"F1|forecasts"}
    restored = ForecastCache(serde)
    restored.table = dict(table)
    assert restored.columns(["M1"], np.array([7_200_000])) == (None, None, None)  # nothing loaded yet
    restored.load_feeder("F1")
    expected, lower, upper = restored.columns(["M1", "M2", "M3"], np.array([7_200_000, 3_600_000, 3_600_000]))
    assert expected[0] == 2.0 and lower[0] == 1.5 and upper[1] == 1.5 and np.isnan(expected[2])


def test_a_forecast_for_a_feeder_taken_over_keeps_its_other_meters_forecasts_in_the_record():
    serde = SingleObjectSerde()
    changelog: dict[bytes, bytes] = {}
    before = ForecastCache(serde)
    before.table = WorkerTable(changelog)
    before.accept([forecast_value(serde, "M1", "F1", 3_600_000), forecast_value(serde, "M2", "F1", 3_600_000)])
    successor = ForecastCache(serde)
    successor.table = WorkerTable(changelog, recover=True)  # it took the partition over
    successor.accept([forecast_value(serde, "M2", "F1", 7_200_000)])  # before any reading of F1
    assert sorted(json.loads(changelog[b"F1|forecasts"])) == ["M1", "M2"]
    assert successor.by_meter["M2"].start_ms == 7_200_000  # the newer forecast kept
