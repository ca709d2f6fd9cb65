"""Forecasts as the forecaster writes them, joined by the stream engine, for 15-minute meters.

The forecaster fits sub-hourly meters on hourly sums but must emit each horizon at the meter's
own interval, aligned to its readings, or ``MeterForecast.at`` finds no point and the join is
silently empty. This checks the two sides agree, reading by reading.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from forecaster.fitting import PROPHET, FitOptions, forecast_meter
from forecaster.publish import forecast_record
from forecaster.series import series_from_readings
from models.training import train_and_save
from producers.kafka_producer import feeder_batches
from producers.simulator import FleetConfig, simulate_fleet
from schemas.serde import FORECAST, METER_READING_BATCH, SingleObjectSerde
from stream_processors.reading_columns import ReadingColumns, decode_into
from stream_processors.stream_engine import StreamEngine


def process(engine: StreamEngine, serde: SingleObjectSerde, frame: pd.DataFrame) -> list[dict]:
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
    engine = StreamEngine(tmp_path, serde)
    engine.attach_tables({}, {})
    process(engine, serde, history)

    points = {}
    for series in series_from_readings(history, 6 * 86400):
        result = forecast_meter(series, FitOptions(horizon_seconds=86400))
        assert result.outcome == PROPHET, result.reason
        engine.accept_forecasts([serde.encode(FORECAST, forecast_record(result, 0))], serde)
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
