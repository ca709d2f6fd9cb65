"""Accuracy as forecasts come due: sMAPE of the previous horizon, horizons kept per meter."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.accuracy import due_accuracy, save_horizons, smape
from forecaster.fitting import PROPHET, ForecastResult
from forecaster.series import MeterSeries


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
