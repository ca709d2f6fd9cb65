"""Prometheus metrics of the forecaster (served by ``wattsup forecast schedule``).

Base units, ``_total`` on counters, ``_seconds`` for durations; no meter id is ever a label.
Fit durations are measured in the worker processes and observed here by the parent, so one
registry in one process holds everything.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FITS = Counter("wattsup_forecast_fits_total", "Meters forecast, by outcome (prophet, seasonal_naive, failed).",
               ["outcome"])
FIT_SECONDS = Histogram(
    "wattsup_forecast_fit_duration_seconds", "Time to forecast one meter (fit, predict, band), in its worker process.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RUNS = Counter("wattsup_forecast_runs_total", "Forecast runs, by result (ok, failed).", ["result"])
RUN_SECONDS = Gauge("wattsup_forecast_last_run_duration_seconds", "Wall-clock duration of the last run.")
LAST_SUCCESS = Gauge("wattsup_forecast_last_success_timestamp_seconds", "Unix time the last successful run finished.")
PUBLISHED = Counter("wattsup_forecast_forecasts_published_total", "Forecast records acknowledged by Kafka.")
PUBLISH_FAILED = Counter("wattsup_forecast_forecasts_failed_total", "Forecast records Kafka did not acknowledge.")
SMAPE = Gauge(
    "wattsup_forecast_smape_ratio",
    "Symmetric mean absolute percentage error (0..2) of the previous run's forecasts over the points that have "
    "come due, over all meters.",
)
SMAPE_POINTS = Gauge("wattsup_forecast_smape_points", "Forecast points behind wattsup_forecast_smape_ratio.")
PARTITIONS_OWNED = Gauge(
    "wattsup_forecast_partitions_owned",
    "Readings partitions this instance owns in its forecaster group (its share of the fleet; summed over the "
    "instances, the topic's partition count once the group is settled).",
)
LAST_RUN_METERS = Gauge(
    "wattsup_forecast_last_run_meters",
    "Meters forecast by this instance's last run (summed over a group's instances: the fleet, once per run).",
)
RUN_PROGRESS_METERS = Gauge(
    "wattsup_forecast_run_progress_meters", "Meters forecast so far by the run in progress (0 between runs).")
HANDED_OVER = Counter(
    "wattsup_forecast_meters_handed_over_total",
    "Meters a run left to another instance because Kafka moved their readings partition to it during the run.",
)
