"""Forecast records: through the shared serde, and a record the schema refuses is counted, not raised."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.fitting import PROPHET, SEASONAL_NAIVE, ForecastResult
from forecaster.publish import forecast_record
from schemas.serde import FORECAST, SingleObjectSerde


def test_forecast_record_round_trips_through_the_shared_serde():
    result = ForecastResult("M000001", "F0001", 900, SEASONAL_NAIVE, "seasonal-naive-7d",
                            end_ms=np.array([900_000, 1_800_000]), expected=np.array([0.5, 0.6]),
                            lower=np.array([0.4, 0.5]), upper=np.array([0.7, 0.8]))
    serde = SingleObjectSerde()
    name, decoded = serde.decode(serde.encode(FORECAST, forecast_record(result, 123)), raw_timestamps=True)
    assert name == FORECAST
    assert decoded["meter_id"] == "M000001" and decoded["interval_seconds"] == 900 and decoded["generated_at"] == 123
    assert decoded["horizon"][1] == {"timestamp": 1_800_000, "expected": 0.6, "lower": 0.5, "upper": 0.8}


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
