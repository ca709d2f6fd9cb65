"""Forecasts as the scheduled forecaster would have made them over past history.

The detector can only learn what a forecast residual looks like from history joined with
forecasts that were made *before* each reading, as the stream joins them. Past forecasts are not
kept (the forecasts topic is compacted to each meter's latest), so training re-runs the
forecaster over the history: at every run time (a day apart by default, starting once a meter
has a day of history, when the detector starts scoring it), each meter is fitted on what precedes
that moment, at most ``history`` of it, with the forecaster's own settings, warm-started from its
previous fit, and the forecast covers the meter's readings up to the next run time. The first
runs fall back to the seasonal-naive forecast as a new deployment's would.

Runs a day apart cover each reading with a forecast made up to a day earlier, where the
scheduled forecaster (every 6 hours) is at most 6 hours old: the hindcast residuals are, if
anything, a little wider, which makes the detector slower rather than quicker to call a residual
abnormal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forecaster.fitting import FAILED, FitOptions, forecast_meter
from forecaster.series import MeterSeries, series_from_readings
from foundation.timeutil import epoch_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HindcastPlan:
    every_seconds: float = 86400.0
    """Time between the replayed runs."""
    history_seconds: float = 28 * 86400.0
    """History each replayed fit sees at most (the forecaster's ``--history``)."""
    first_run_after_seconds: float = 86400.0
    """A meter's first run comes this long after its first reading."""


@dataclass
class MeterHindcast:
    meter_id: str
    end_ms: np.ndarray
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    runs: int
    fallbacks: int


def hindcast_meter(series: MeterSeries, options: FitOptions, plan: HindcastPlan) -> MeterHindcast:
    """Replay the runs over one meter's history; never raises (a failed run leaves its readings uncovered)."""
    every_ms = int(plan.every_seconds * 1000)
    history_ms = int(plan.history_seconds * 1000)
    step = series.step_ms
    run_options = replace(options, horizon_seconds=plan.every_seconds)
    parts: list[tuple[np.ndarray, ...]] = []
    init = None
    runs = fallbacks = 0
    run_at = int(series.end_ms[0]) + int(plan.first_run_after_seconds * 1000)
    last = int(series.end_ms[-1])
    while run_at <= last:
        # readings up to and including run_at are history; the forecast covers (run_at, run_at + every]
        upto = int(np.searchsorted(series.end_ms, run_at, side="right"))
        since = int(np.searchsorted(series.end_ms, run_at - history_ms, side="right"))
        past = MeterSeries(series.meter_id, series.feeder_id, series.interval_seconds,
                           series.end_ms[since:upto], series.kwh[since:upto])
        run_at += every_ms
        if past.observed < 1:
            continue
        result = forecast_meter(past, run_options, init)
        runs += 1
        if result.outcome == FAILED:
            continue
        if result.params is not None:
            init = result.params
        else:
            fallbacks += 1
        # the horizon starts after the newest reading of ``past``, which a gap may put before run_at
        covered = (result.end_ms > past.end_ms[-1]) & (result.end_ms <= min(run_at, last + step))
        parts.append((result.end_ms[covered], result.expected[covered], result.lower[covered], result.upper[covered]))
    if not parts:
        empty = np.zeros(0)
        return MeterHindcast(series.meter_id, np.zeros(0, dtype=np.int64), empty, empty, empty, runs, fallbacks)
    end_ms, expected, lower, upper = (np.concatenate(column) for column in zip(*parts))
    return MeterHindcast(series.meter_id, end_ms, expected, lower, upper, runs, fallbacks)


def hindcast_chunk(chunk: Sequence[tuple[MeterSeries, HindcastPlan]], options: FitOptions) -> list[MeterHindcast]:
    return [hindcast_meter(series, options, plan) for series, plan in chunk]


def _uncovered(_chunk: Sequence, exc: BaseException) -> list[MeterHindcast]:
    """A chunk whose replay failed leaves its meters' readings without forecasts; training goes on."""
    log.warning("hindcast of a chunk failed: %s", exc)
    return []


@dataclass
class HindcastColumns:
    """Forecast expected value and band per reading of the frame (NaN where no run covered it)."""

    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    runs: int
    fallbacks: int

    @property
    def covered(self) -> int:
        return int(np.isfinite(self.expected).sum())


def hindcast_readings(frame: pd.DataFrame, options: FitOptions, pool, plan: HindcastPlan | None = None,
                      stop: threading.Event | None = None) -> HindcastColumns:
    """Replayed forecasts joined to every row of ``frame`` (timestamp, meter_id, kwh[, feeder_id, interval_seconds]).

    ``pool`` is a :class:`forecaster.runner.FitPool`: meters are replayed in parallel, each meter's
    runs in order (so each run warm-starts from the one before).
    """
    plan = plan or HindcastPlan()
    n = len(frame)
    columns = HindcastColumns(np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), 0, 0)
    stamps_ms = epoch_ms(frame["timestamp"])
    span_seconds = (int(stamps_ms.max()) - int(stamps_ms.min())) / 1000 if n else 0.0
    series = series_from_readings(frame, history_seconds=span_seconds + 86400)
    if not series:
        return columns
    results: list[MeterHindcast] = []
    for chunk in pool.map([(s, plan) for s in series], options, stop or threading.Event(), task=hindcast_chunk,
                          on_error=_uncovered):
        results.extend(chunk)
    if not results:
        return columns
    columns.runs = sum(r.runs for r in results)
    columns.fallbacks = sum(r.fallbacks for r in results)
    points = pd.DataFrame({
        "meter_id": np.concatenate([np.full(len(r.end_ms), r.meter_id, dtype=object) for r in results]),
        "ts": np.concatenate([r.end_ms for r in results]).astype(np.int64),
        "expected": np.concatenate([r.expected for r in results]),
        "lower": np.concatenate([r.lower for r in results]),
        "upper": np.concatenate([r.upper for r in results]),
    })
    rows = pd.DataFrame({
        "meter_id": frame["meter_id"].astype(str).to_numpy(dtype=object),
        "ts": stamps_ms,
    })
    joined = rows.merge(points, on=["meter_id", "ts"], how="left", sort=False)
    columns.expected = joined["expected"].to_numpy(dtype=float)
    columns.lower = joined["lower"].to_numpy(dtype=float)
    columns.upper = joined["upper"].to_numpy(dtype=float)
    log.info("hindcast: %d runs (%d seasonal-naive) cover %d of %d readings",
             columns.runs, columns.fallbacks, columns.covered, n)
    return columns

