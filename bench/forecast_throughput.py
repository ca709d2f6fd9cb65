"""Forecast throughput: the WattsUp forecaster against a plain Prophet loop, on the same meters.

Prints, from one run on one machine:

* the WattsUp worker's fits per second over ``--meters`` simulated meters x ``--days`` of hourly
  history (48 h horizon): a pool of ``--workers`` processes, cheap Prophet settings, analytic band,
  fast Stan data path; once cold (no previous parameters) and once warm-started from the first
  run's parameters on the history window moved ``--shift-hours`` later, as the next scheduled
  run sees it (re-fitting the very same window would overstate what a warm start saves);
* the baseline: a plain sequential loop of default ``Prophet().fit(df)`` and
  ``predict(make_future_dataframe(48, freq="h"))`` on the same series (by default on the first
  ``--baseline-meters`` of them, since it is several times slower; ``--baseline-meters 0`` for all);
* the ratio, the outcomes (Prophet, fallbacks, failures) and the load average, because the
  figures depend on what else the machine's cores are doing; and the CPU time per fit (the
  fitting process and its Stan child), which does not, with the rate it implies on idle cores.

The worker's pool is started (processes up, Prophet imported) before timing, as it stays up
between scheduled runs. Usage:

    .venv/bin/python bench/forecast_throughput.py [--meters 1000] [--days 28] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd

from forecaster.fast_backend import quiet_stan_logging
from forecaster.runner import FitPool, forecast_series
from forecaster.series import MeterSeries, series_from_readings
from forecaster.settings import ForecastSettings
from simulation.fleet import FleetConfig, simulate_fleet


def window(s: MeterSeries, start: int, steps: int) -> MeterSeries:
    return MeterSeries(s.meter_id, s.feeder_id, s.interval_seconds, s.end_ms[start:start + steps],
                       s.kwh[start:start + steps])


def _cpu() -> float:
    children = os.times()
    return time.process_time() + children.children_user + children.children_system


def plain_prophet_loop(series: list[MeterSeries], horizon_hours: int) -> tuple[float, float]:
    """(fits per second, CPU seconds per fit) of default Prophet, sequentially, fit + predict, same data."""
    from prophet import Prophet

    cpu_started = _cpu()
    started = time.perf_counter()
    for s in series:
        df = pd.DataFrame({"ds": pd.Series(s.end_ms.astype("datetime64[ms]")).astype("datetime64[ns]"), "y": s.kwh})
        model = Prophet()
        model.fit(df)
        model.predict(model.make_future_dataframe(periods=horizon_hours, freq="h"))
    return len(series) / (time.perf_counter() - started), (_cpu() - cpu_started) / len(series)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=float, default=28.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shift-hours", type=int, default=6, help="the schedule step between the two runs")
    parser.add_argument("--baseline-meters", type=int, default=100,
                        help="meters for the plain Prophet loop (0: all of them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quiet_stan_logging()

    print(f"simulating {args.meters:,} meters x {args.days:g} days of hourly history ...", flush=True)
    readings = simulate_fleet(FleetConfig(meters=args.meters, days=args.days + args.shift_hours / 24,
                                          interval=timedelta(hours=1), seed=2024)).readings
    steps = int(args.days * 24)
    full = series_from_readings(readings, (args.days + args.shift_hours / 24) * 86400)
    series = [window(s, 0, steps) for s in full]
    later = [window(s, args.shift_hours, steps) for s in full]
    horizon_hours = 48

    with tempfile.TemporaryDirectory(prefix="wattsup-forecast-bench-") as tmp:
        settings = ForecastSettings(data_dir=Path(tmp), workers=args.workers, horizon_seconds=horizon_hours * 3600,
                                    history_seconds=args.days * 86400)
        pool = FitPool(args.workers)
        try:
            warm_up = ForecastSettings(data_dir=Path(tmp) / "warm-up", workers=args.workers, warm_start=False)
            forecast_series(series[: args.workers * 2], warm_up, pool)  # processes up, Prophet imported
            load_before = os.getloadavg()[0]
            cold = forecast_series(series, settings, pool)
            warm = forecast_series(later, settings, pool)
            load_after = os.getloadavg()[0]
        finally:
            pool.close()

    baseline_series = series if args.baseline_meters <= 0 else series[: args.baseline_meters]
    print(f"plain Prophet loop on {len(baseline_series):,} of the same meters ...", flush=True)
    baseline, baseline_cpu = plain_prophet_loop(baseline_series, horizon_hours)

    print()
    print(f"{'WattsUp forecaster, ' + str(args.workers) + ' processes, cold (no previous parameters)':<66}"
          f"{cold.fits_per_second:>8.1f} fits/s  ({cold.meters} meters in {cold.fit_seconds:.1f} s)")
    print(f"{'WattsUp forecaster, ' + str(args.workers) + f' processes, warm start, {args.shift_hours} h later':<66}"
          f"{warm.fits_per_second:>8.1f} fits/s  ({warm.meters} meters in {warm.fit_seconds:.1f} s)")
    print(f"{'plain sequential Prophet().fit().predict(), default settings':<66}"
          f"{baseline:>8.1f} fits/s  ({len(baseline_series)} meters)")
    print(f"{'ratio, cold / plain':<66}{cold.fits_per_second / baseline:>8.1f} x")
    print(f"{'ratio, warm / plain':<66}{warm.fits_per_second / baseline:>8.1f} x")
    for name, run in (("cold", cold), ("warm", warm)):
        per_fit = run.cpu_seconds / max(run.meters, 1)
        print(f"{'CPU per fit, ' + name + ' (fitting process + Stan), ms':<66}{per_fit * 1000:>8.1f}    "
              f"-> {os.cpu_count() / per_fit:.0f} fits/s if all {os.cpu_count()} cores were free for it")
    print(f"{'CPU per fit, plain Prophet loop, ms':<66}{baseline_cpu * 1000:>8.1f}    "
          f"-> {os.cpu_count() / baseline_cpu:.0f} fits/s if all {os.cpu_count()} cores ran such loops")
    print(f"{'CPU ratio, plain / WattsUp cold, warm':<66}{baseline_cpu / (cold.cpu_seconds / max(cold.meters, 1)):>8.1f} x, "
          f"{baseline_cpu / (warm.cpu_seconds / max(warm.meters, 1)):.1f} x")
    print(f"outcomes (warm run): prophet={warm.prophet} fallbacks={warm.fallbacks} failures={warm.failures}")
    print(f"100,000 meters at the warm rate: {100_000 / warm.fits_per_second / 60:.0f} min")
    print(f"load average (1 min) before / after the worker runs: {load_before:.2f} / {load_after:.2f} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
