"""Small hand-made meter series for the detection tests: a daily shape, readings fed one batch at a time."""

from __future__ import annotations

import numpy as np

from detection.features import FeatureBatch, FeatureExtractor
from detection.readings import ReadingBatch
from foundation.timeutil import HOUR_MS

T0 = 1_772_409_600_000
"""Monday 2026-03-02 00:00 UTC."""


def batch(meters: list[str], ts, kwh, interval_s, **kwargs) -> ReadingBatch:
    """A batch whose meters are their own feeders unless ``feeder_ids`` says otherwise."""
    feeders = kwargs.pop("feeder_ids", meters)
    return ReadingBatch(list(meters), list(feeders), np.asarray(ts), np.asarray(kwh, dtype=float),
                        np.asarray(interval_s), **kwargs)


def run(series: list[float], meter: str = "m", start: int = T0, step_ms: int = HOUR_MS,
        extractor: FeatureExtractor | None = None, interval_s: int = 3600) -> tuple[FeatureExtractor, FeatureBatch]:
    """Feed one meter's ``series`` (one reading per ``step_ms`` after ``start``) in one batch."""
    ex = extractor or FeatureExtractor()
    ts = start + step_ms * (1 + np.arange(len(series)))
    fb = ex.transform(batch([meter] * len(series), ts, series, np.full(len(series), interval_s)))
    return ex, fb


def daily_pattern(days: int, scale: float = 1.0) -> list[float]:
    """A household's day, hour by hour: low nights, a morning and a larger evening peak."""
    shape = [0.3] * 6 + [0.8, 1.0, 0.6] + [0.4] * 8 + [1.2, 1.6, 1.5, 1.0, 0.6, 0.4, 0.3]
    return [scale * v for _ in range(days) for v in shape]


def noisy_pattern(days: int, seed: int = 0) -> list[float]:
    """:func:`daily_pattern` with a few percent of noise, as a real register reads it (no exact repeats)."""
    rng = np.random.default_rng(seed)
    return [round(v * (1 + 0.05 * rng.standard_normal()), 4) for v in daily_pattern(days)]
