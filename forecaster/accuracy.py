"""Accuracy of forecasts as they come due, and the error measures the backtest reports.

After each run the horizon of every meter is kept on disk; the next run, whose history now
covers part of that horizon, scores the points that came due against what was observed.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecaster.fitting import FAILED, ForecastResult
from forecaster.series import MeterSeries

log = logging.getLogger(__name__)

HORIZONS_FILE = "last_horizons.npz"


def smape_terms(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Per-point symmetric absolute percentage error, 0..2 (0 where both are 0)."""
    denom = np.abs(actual) + np.abs(forecast)
    return np.where(denom > 0, 2.0 * np.abs(actual - forecast) / np.where(denom > 0, denom, 1.0), 0.0)


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    ok = np.isfinite(actual) & np.isfinite(forecast)
    return float(smape_terms(actual[ok], forecast[ok]).mean()) if ok.any() else float("nan")


def mae(actual: np.ndarray, forecast: np.ndarray) -> float:
    ok = np.isfinite(actual) & np.isfinite(forecast)
    return float(np.abs(actual[ok] - forecast[ok]).mean()) if ok.any() else float("nan")


@dataclass
class DueAccuracy:
    smape: float
    points: int
    meters: int


def load_horizons(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """meter id -> (end_ms, expected) of the last horizons kept in ``data_dir``; empty if none (or unreadable)."""
    path = data_dir / HORIZONS_FILE
    return (_load_horizons(path) or {}) if path.exists() else {}


def _load_horizons(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    try:
        with np.load(path, allow_pickle=True) as data:  # our own file, written by save_horizons
            return {str(m): (e, x) for m, e, x in zip(data["meters"], data["end_ms"], data["expected"])}
    except Exception as exc:  # noqa: BLE001 - a damaged file only costs one accuracy figure
        log.warning("ignoring unreadable horizons file %s: %s", path, exc)
        return None


def save_horizons(data_dir: Path, results: Iterable[ForecastResult]) -> None:
    """Keep this run's horizons (and those of meters it did not forecast, e.g. a ``--meters`` run)."""
    path = data_dir / HORIZONS_FILE
    horizons = load_horizons(data_dir)
    horizons.update({r.meter_id: (r.end_ms, r.expected) for r in results if r.outcome != FAILED and len(r.end_ms)})
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{HORIZONS_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz"  # unique on a shared volume
    meters = sorted(horizons)
    end_ms, expected = np.empty(len(meters), dtype=object), np.empty(len(meters), dtype=object)
    for i, m in enumerate(meters):
        end_ms[i], expected[i] = horizons[m]
    np.savez(tmp, meters=np.array(meters, dtype=str), end_ms=end_ms, expected=expected)
    os.replace(tmp, path)


def due_accuracy(data_dir: Path, series: Iterable[MeterSeries]) -> DueAccuracy | None:
    """sMAPE of the previous run's horizons over the points the new history now covers."""
    path = data_dir / HORIZONS_FILE
    previous = _load_horizons(path) if path.exists() else None
    return None if previous is None else accuracy_against(previous, series)


def accuracy_against(previous: dict[str, tuple[np.ndarray, np.ndarray]], series: Iterable[MeterSeries],
                     ) -> DueAccuracy | None:
    """sMAPE of ``previous`` horizons (meter id -> (end_ms, expected)) over the points ``series`` now cover."""
    terms: list[np.ndarray] = []
    meters = 0
    for s in series:
        prev = previous.get(s.meter_id)
        if prev is None or not len(s.end_ms):
            continue
        end_ms, expected = prev
        idx = (end_ms - s.end_ms[0]) // s.step_ms
        on_grid = (end_ms >= s.end_ms[0]) & (end_ms <= s.end_ms[-1]) & ((end_ms - s.end_ms[0]) % s.step_ms == 0)
        if not on_grid.any():
            continue
        actual = s.kwh[idx[on_grid]]
        ok = np.isfinite(actual)
        if ok.any():
            terms.append(smape_terms(actual[ok], expected[on_grid][ok]))
            meters += 1
    if not terms:
        return None
    allterms = np.concatenate(terms)
    return DueAccuracy(float(allterms.mean()), len(allterms), meters)
