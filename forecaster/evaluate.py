"""Backtest: Prophet against the seasonal-naive baseline on the same meters and horizon.

Each meter's last ``horizon`` of history is held out; both methods are fitted on what precedes
it and scored on it with sMAPE (0..2, averaged over all held-out points of all meters) and MAE
(kWh per interval). Prophet is the forecaster's own fit (same settings, no warm start); a meter
Prophet cannot take (too little history, flat) gets the fallback, as in a real run, and is counted.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forecaster.accuracy import smape_terms
from forecaster.fitting import FAILED, PROPHET, FitOptions, forecast_meter, seasonal_naive
from forecaster.series import MeterSeries


@dataclass
class MethodScore:
    method: str
    meters: int
    points: int
    smape: float
    mae: float


@dataclass
class BacktestReport:
    scores: list[MethodScore]
    prophet_fallbacks: int
    """Meters for which the forecaster used the seasonal-naive forecast instead of Prophet."""
    skipped: int
    """Meters whose history is shorter than the holdout plus the minimum history."""


def split(series: MeterSeries, horizon_seconds: float) -> tuple[MeterSeries, np.ndarray, np.ndarray] | None:
    steps = int(horizon_seconds * 1000 // series.step_ms)
    if steps < 1 or len(series.kwh) <= steps:
        return None
    train = MeterSeries(series.meter_id, series.feeder_id, series.interval_seconds, series.end_ms[:-steps],
                        series.kwh[:-steps])
    return train, series.end_ms[-steps:], series.kwh[-steps:]


def backtest_chunk(chunk: Sequence[MeterSeries], options: FitOptions) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, bool]]:
    """(meter, actual, prophet forecast, seasonal-naive forecast, prophet used) per meter that can be split."""
    out = []
    for series in chunk:
        parts = split(series, options.horizon_seconds)
        if parts is None:
            continue
        train, _, actual = parts
        used = forecast_meter(train, options)
        naive = seasonal_naive(train, options, "baseline")
        if FAILED in (used.outcome, naive.outcome):
            continue
        out.append((series.meter_id, actual, used.expected, naive.expected, used.outcome == PROPHET))
    return out


def summarise(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, bool]], total: int) -> BacktestReport:
    scores = []
    for name, column in (("prophet (WattsUp forecaster)", 2), ("seasonal naive", 3)):
        terms, errors, points = [], [], 0
        for row in rows:
            actual, forecast = row[1], row[column]
            ok = np.isfinite(actual)
            terms.append(smape_terms(actual[ok], forecast[ok]))
            errors.append(np.abs(actual[ok] - forecast[ok]))
            points += int(ok.sum())
        t = np.concatenate(terms) if terms else np.zeros(0)
        e = np.concatenate(errors) if errors else np.zeros(0)
        scores.append(MethodScore(name, len(rows), points, float(t.mean()) if len(t) else float("nan"),
                                  float(e.mean()) if len(e) else float("nan")))
    return BacktestReport(scores, prophet_fallbacks=sum(1 for r in rows if not r[4]), skipped=total - len(rows))


def backtest(series: list[MeterSeries], options: FitOptions, pool, stop: threading.Event | None = None) -> BacktestReport:
    rows: list = []
    for chunk in pool.map(series, options, stop or threading.Event(), task=backtest_chunk,
                          on_error=lambda _chunk, _exc: []):  # a lost chunk counts as skipped meters
        rows.extend(chunk)
    return summarise(rows, len(series))

