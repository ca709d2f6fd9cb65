"""The forecaster on the real broker: history in Kafka, one run, forecasts read back, joined by the stream."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from foundation.timeutil import HOUR_MS
from models.training import replay_forecasts, train_and_save
from readings.producer import ReadingProducer
from schemas.partitioning import partition_for
from simulation.fleet import FleetConfig, simulate_fleet
from tests.forecaster.forecast_checks import read_forecasts
from tests.stream_processors.stream_checks import read_anomalies

pytestmark = pytest.mark.integration

HISTORY_DAYS = 14


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models")
    history = simulate_fleet(FleetConfig(meters=60, days=7, interval=timedelta(hours=1), seed=1001)).readings
    model = train_and_save(history, path, n_estimators=50, source="test history", forecasts=replay_forecasts(history))
    assert model.metadata.forecast_coverage > 0.5  # the detector learned forecast residuals
    return path


def test_forecast_run_publishes_per_meter_forecasts_that_the_stream_joins_into_anomalies(
        kafka, stream_workers, model_dir, tmp_path):
    topics = kafka.fresh_topics(partitions=4)
    fleet = simulate_fleet(FleetConfig(meters=50, days=HISTORY_DAYS + 2, interval=timedelta(hours=1), seed=404,
                                       meters_per_feeder=10, anomaly_rate=0.3))
    readings = fleet.readings
    cut = readings["timestamp"].min() + pd.Timedelta(days=HISTORY_DAYS) - pd.Timedelta(hours=1)
    history, future = readings[readings["timestamp"] <= cut], readings[readings["timestamp"] > cut]
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(history, batch_by_feeder=True)

    # one forecast run, as an operator runs it
    env = {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
           "WATTSUP_FORECAST_DATA_DIR": str(tmp_path / "forecaster")}
    run = subprocess.run([sys.executable, "-m", "wattsup.cli", "forecast", "run", "--history", f"{HISTORY_DAYS}d",
                          "--horizon", "48h", "--workers", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = dict(re.findall(r"(\w+)=(\S+)", run.stdout.strip().splitlines()[-1]))
    assert (summary["meters"], summary["prophet"], summary["failures"], summary["published"]) == ("50", "50", "0", "50")

    # forecasts read back from the compacted topic: one per meter, keyed by meter, in its feeder's partition
    forecasts = read_forecasts(kafka, topics.forecasts)
    assert sorted(key for key, _, _ in forecasts) == sorted(readings["meter_id"].unique())
    last_seen = history.groupby("meter_id")["timestamp"].max()
    points: dict[tuple[str, int], float] = {}
    for key, partition, fc in forecasts:
        assert fc["meter_id"] == key and partition == partition_for(fc["feeder_id"], 4)
        assert fc["model_version"].startswith("prophet-") and fc["interval_seconds"] == 3600
        horizon = fc["horizon"]
        assert len(horizon) == 48
        assert horizon[0]["timestamp"] == int(last_seen[key].value // 1_000_000) + HOUR_MS
        for p in horizon:
            assert p["lower"] <= p["expected"] <= p["upper"]
            points[(key, p["timestamp"])] = p["expected"]

    # the stream worker takes the forecasts in, then the next two days of readings arrive
    worker = stream_workers.start(topics, model_dir, app_id=f"forecast-join-{os.urandom(3).hex()}")
    worker.wait_for("wattsup_stream_forecasts_tracked", 50, timeout=120)
    worker.wait_for("wattsup_stream_readings_processed_total", len(history), timeout=120)
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(future, batch_by_feeder=True)
    worker.wait_for("wattsup_stream_readings_processed_total", len(readings), timeout=120)

    anomalies = read_anomalies(kafka, topics.anomalies)
    ts_ms = anomalies["timestamp"].astype("datetime64[ms, UTC]").astype("int64")
    covered = anomalies[[(m, t) in points for m, t in zip(anomalies["meter_id"], ts_ms)]]
    assert len(covered) >= 5, f"only {len(covered)} anomalies in the forecast window"
    for row, t in zip(covered.itertuples(), ts_ms[covered.index]):
        assert row.expected == pytest.approx(points[(row.meter_id, t)], rel=1e-9, abs=1e-12)
        assert row.lower is not None and row.upper is not None and row.lower <= row.expected <= row.upper
        assert row.residual == pytest.approx(row.observed - row.expected)
        assert row.band_residual is not None and np.sign(row.band_residual) == np.sign(row.residual)
        assert row.baseline is not None and row.baseline >= 0
    # readings the forecast does not cover (the history) are still scored: detection works without it,
    # and their forecast fields are empty rather than filled with something else
    uncovered = anomalies[anomalies["timestamp"] <= cut]
    assert len(uncovered) > 0
    for column in ("expected", "lower", "upper", "residual", "band_residual"):
        assert uncovered[column].isna().all(), column
    assert uncovered["baseline"].notna().all()
