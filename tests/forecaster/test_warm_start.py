"""Warm start: a meter's Prophet parameters round-trip and start its next fit."""

from __future__ import annotations

import numpy as np
import pytest

from forecaster.fitting import PROPHET, FitOptions, forecast_meter
from forecaster.series import series_from_readings
from forecaster.warm_start import load_params, save_params


def test_warm_start_parameters_round_trip_and_start_the_next_fit(tmp_path, hourly_fleet):
    series = series_from_readings(hourly_fleet, 28 * 86400)[:2]
    options = FitOptions(horizon_seconds=24 * 3600)
    cold = [forecast_meter(s, options) for s in series]
    save_params(tmp_path, {r.meter_id: r.params for r in cold})
    loaded = load_params(tmp_path)
    assert set(loaded) == {s.meter_id for s in series}
    for r in cold:
        for name, value in r.params.items():
            np.testing.assert_allclose(loaded[r.meter_id][name], value)
    warm = [forecast_meter(s, options, init=loaded[s.meter_id]) for s in series]
    for c, w in zip(cold, warm):
        assert w.outcome == PROPHET
        # the same optimum, reached from the previous run's parameters
        np.testing.assert_allclose(w.expected, c.expected, rtol=0.05, atol=0.02 * np.abs(c.expected).mean())
    (tmp_path / "prophet_params.npz").write_bytes(b"not a zip")
    assert load_params(tmp_path) == {}


def test_warm_start_is_used_not_silently_replaced_by_defaults(hourly_fleet, monkeypatch):
    from prophet.models import CmdStanPyBackend

    (s,) = series_from_readings(hourly_fleet, 28 * 86400)[:1]
    options = FitOptions(horizon_seconds=24 * 3600)
    cold = forecast_meter(s, options)
    seen = {}
    original = CmdStanPyBackend.sanitize_custom_inits

    def spy(default_inits, custom_inits):
        seen.update(original(default_inits, custom_inits))
        return seen

    monkeypatch.setattr(CmdStanPyBackend, "sanitize_custom_inits", staticmethod(spy))
    forecast_meter(s, options, init=cold.params)
    assert seen["k"] == pytest.approx(float(cold.params["k"]))
    np.testing.assert_allclose(seen["beta"], cold.params["beta"])
    np.testing.assert_allclose(seen["delta"], cold.params["delta"])
