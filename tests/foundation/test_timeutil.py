"""Time helpers: epoch milliseconds from any timestamp column, intervals from text and from data."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from foundation.timeutil import (DEFAULT_INTERVAL_SECONDS, datetime_ms, epoch_ms, infer_interval_seconds,
                                 local_weekday, parse_interval, utc_index)


def test_epoch_ms_takes_naive_as_utc_and_converts_zones():
    aware = pd.Series(pd.to_datetime(["2026-03-02T01:00:00+03:00"], format="ISO8601"))
    naive = pd.Series(pd.to_datetime(["2026-03-01T22:00:00"]))
    text = pd.Series(["2026-03-01T22:00:00Z"])
    assert epoch_ms(aware)[0] == epoch_ms(naive)[0] == epoch_ms(text)[0] == 1_772_402_400_000
    assert epoch_ms(utc_index(np.array([1_772_402_400_000]))).tolist() == [1_772_402_400_000]
    assert datetime_ms(datetime(2026, 3, 1, 22)) == datetime_ms(datetime(2026, 3, 1, 22, tzinfo=timezone.utc))


@pytest.mark.parametrize("text, seconds", [("5m", 300), ("15m", 900), ("1h", 3600), ("1d", 86400), ("30s", 30),
                                           ("15min", 900)])
def test_intervals_parse(text, seconds):
    assert parse_interval(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["15", "m", "0m", "1.5s", "15 minutes"])
def test_bad_intervals_are_refused(text):
    with pytest.raises(ValueError, match="interval|whole number"):
        parse_interval(text)


def test_interval_inference_takes_the_most_common_spacing_per_meter():
    ts = pd.Series(pd.to_datetime(["2026-01-01T00:00Z", "2026-01-01T01:00Z", "2026-01-01T03:00Z",
                                   "2026-01-01T04:00Z", "2026-01-01T00:00Z"]))
    meters = pd.Series(["a", "a", "a", "a", "single"])
    assert infer_interval_seconds(ts, meters).tolist() == [3600] * 4 + [DEFAULT_INTERVAL_SECONDS]


def test_local_weekdays_follow_the_zone_and_daylight_saving():
    # 2026-03-06 is a Friday; 21:30 UTC is already Saturday in Nairobi (UTC+3)
    friday_late = epoch_ms(pd.Series(["2026-03-06T21:30:00Z"]))
    assert local_weekday(friday_late).tolist() == [4]
    assert local_weekday(friday_late, "Africa/Nairobi").tolist() == [5]
    # Sunday 2026-03-29 23:30 in Berlin is 21:30 UTC after the spring change (UTC+2), 22:30 before it
    assert local_weekday(epoch_ms(pd.Series(["2026-03-29T21:30:00Z"])), "Europe/Berlin").tolist() == [6]
    assert local_weekday(epoch_ms(pd.Series(["2026-03-29T22:30:00Z"])), "Europe/Berlin").tolist() == [0]
