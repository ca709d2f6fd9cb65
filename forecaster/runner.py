"""One forecast run over many meters, fitted in parallel processes, and the scheduled loop.

A run: read history (readings topic or CSV), cut it into per-meter series, score the previous
run's horizons that came due (sMAPE), fit every meter in a pool of processes (chunks of meters
per task, so pickling and scheduling cost little per meter), publish each forecast as its chunk
comes back, then keep the Prophet parameters for the next run's warm start. One bad meter gets
the seasonal-naive forecast or is counted as failed; it never stops the run.

The pool uses the ``forkserver`` start method: the parent holds librdkafka threads, which a
plain ``fork`` must not copy. Worker processes import Prophet once and keep it (and the Stan
model) between chunks and between scheduled runs.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecaster import metrics
from forecaster.accuracy import DueAccuracy, due_accuracy, save_horizons
from forecaster.fitting import FAILED, PROPHET, SEASONAL_NAIVE, FitOptions, ForecastResult, forecast_meter
from forecaster.series import MeterSeries, series_from_readings
from forecaster.settings import ForecastSettings
from forecaster.warm_start import load_params, save_params

log = logging.getLogger(__name__)

_MIN_METERS_PER_WORKER = 8
"""Fewer meters than this per worker are fitted in this process when no pool runs yet: starting
processes (and importing Prophet in each) costs seconds, more than fitting a handful of meters."""

Progress = Callable[[int, int], None]
"""Called with (meters done, meters in the run) after each chunk."""


def fit_options(settings: ForecastSettings) -> FitOptions:
    return FitOptions(
        horizon_seconds=settings.horizon_seconds, fit_interval_seconds=settings.fit_interval_seconds,
        min_history_days=settings.min_history_days, interval_width=settings.interval_width,
        n_changepoints=settings.n_changepoints, changepoint_prior_scale=settings.changepoint_prior_scale,
        country_holidays=settings.country_holidays, daily_fourier_order=settings.daily_fourier_order,
        seasonality_mode=settings.seasonality_mode, timezone=settings.timezone,
    )


# -- worker processes ----------------------------------------------------------------------
def _init_worker(temp_dir: str) -> None:
    """Ctrl-C and SIGTERM are the parent's to handle; it cancels what is queued and lets chunks finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from forecaster.fitting import _backend

    _backend(temp_dir)  # import Prophet and load the Stan model before the first chunk arrives


def _ready() -> bool:
    return True


def _failed_chunk(chunk: Sequence[tuple[MeterSeries, dict[str, np.ndarray] | None]], exc: BaseException,
                  ) -> list[ForecastResult]:
    reason = f"fitting process failed: {type(exc).__name__}: {exc}"[:300]
    return [ForecastResult(s.meter_id, s.feeder_id, s.interval_seconds, FAILED, "none", reason=reason) for s, _ in chunk]


def fit_chunk(chunk: Sequence[tuple[MeterSeries, dict[str, np.ndarray] | None]], options: FitOptions) -> list[ForecastResult]:
    return [forecast_meter(series, options, init) for series, init in chunk]


class FitPool:
    """``workers`` processes that stay up between runs; 1 worker fits in this process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._temp_dir: str | None = None
        """Stan's temporary files of every worker; removed on close, however the workers ended."""

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        if self._temp_dir is None:
            self._temp_dir = tempfile.mkdtemp(prefix="wattsup-stan-")
        return ProcessPoolExecutor(workers, mp_context=self._context(), initializer=_init_worker,
                                   initargs=(self._temp_dir,))

    @staticmethod
    def _context() -> Any:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["forecaster.fitting", "forecaster.fast_backend"])  # Prophet imported once
        return context

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = self._new_pool(self.workers)
        return self._pool

    def warm_up(self) -> None:
        """Start the processes now (without waiting), so they import Prophet while history is read."""
        if self.workers > 1:
            pool = self._executor()
            for _ in range(self.workers):
                pool.submit(_ready)

    def map(self, items: list, options: FitOptions, stop: threading.Event,
            task: Callable[[Sequence, FitOptions], list] = fit_chunk,
            on_error: Callable[[Sequence, BaseException], list] | None = None) -> Iterator[list]:
        """``task`` over chunks of ``items``, results in completion order; stops handing out work once
        ``stop`` is set. ``task`` must be a module-level function (it is pickled to the workers).

        A chunk whose task raises yields ``on_error(chunk, exc)`` instead (by default: failed
        forecasts for its meters). A worker process that dies (killed, out of memory) breaks the
        whole pool and every chunk not finished with it: those go to a new pool once, and if that
        breaks too, each goes alone to a process of its own, so only the chunk that kills its
        process is lost.
        """
        on_error = on_error or _failed_chunk
        if not items:
            return
        if self.workers <= 1 or (len(items) < _MIN_METERS_PER_WORKER * self.workers and self._pool is None):
            size = max(1, min(64, math.ceil(len(items) / 20)))
            for i in range(0, len(items), size):
                if stop.is_set():
                    return
                yield task(items[i:i + size], options)
            return
        size = max(1, min(64, math.ceil(len(items) / (self.workers * 8))))
        lost = [items[i:i + size] for i in range(0, len(items), size)]
        for _ in range(2):
            lost = yield from self._round(self._executor(), lost, options, stop, task, on_error)
            if not lost:
                return
            log.error("a fitting process died; %d unfinished chunks go to a new pool", len(lost))
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for chunk in lost:  # isolate the chunk that kills its process
            single = self._new_pool(1)
            try:
                if (yield from self._round(single, [chunk], options, stop, task, on_error)):
                    yield on_error(chunk, BrokenProcessPool("its fitting process died"))
            finally:
                single.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _round(pool: ProcessPoolExecutor, chunks: list[Sequence], options: FitOptions, stop: threading.Event,
               task: Callable[[Sequence, FitOptions], list], on_error: Callable[[Sequence, BaseException], list],
               ) -> Generator[list, None, list[Sequence]]:
        """Run ``chunks`` on ``pool``; returns the chunks lost to a broken pool."""
        futures: dict[Future, Sequence] = {pool.submit(task, chunk, options): chunk for chunk in chunks}
        pending, lost = set(futures), []
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                if stop.is_set():
                    for future in pending:
                        future.cancel()
                    done |= {f for f in pending if not f.cancelled()}  # running: seconds at most
                    wait(done)
                    pending = set()
                for future in done:
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        lost.append(futures[future])
                    except Exception as exc:  # noqa: BLE001 - one bad chunk never stops the run
                        log.error("a chunk of %d meters failed: %s: %s", len(futures[future]), type(exc).__name__, exc)
                        yield on_error(futures[future], exc)
        finally:
            for future in pending:
                future.cancel()
        return [] if stop.is_set() else lost

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


# -- one run -------------------------------------------------------------------------------
@dataclass
class RunSummary:
    meters: int = 0
    prophet: int = 0
    fallbacks: int = 0
    failures: int = 0
    published: int = 0
    publish_failed: int = 0
    cpu_seconds: float = 0.0
    """CPU time of all forecasts (fitting processes and Stan), summed over meters."""
    fit_seconds: float = 0.0
    """Wall-clock time of the parallel fitting (and publishing, which overlaps it)."""
    seconds: float = 0.0
    """Wall-clock time of the whole run, history read included."""
    accuracy: DueAccuracy | None = None
    stopped: bool = False
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    results: list[ForecastResult] = field(default_factory=list, repr=False)

    @property
    def fits_per_second(self) -> float:
        return self.meters / self.fit_seconds if self.fit_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.publish_failed == 0 and not self.stopped and (self.meters == 0 or self.failures < self.meters)

    def line(self) -> str:
        smape = (f" smape_due={self.accuracy.smape:.3f} ({self.accuracy.points} points, {self.accuracy.meters} meters)"
                 if self.accuracy else "")
        return (f"meters={self.meters} prophet={self.prophet} fallbacks={self.fallbacks} failures={self.failures} "
                f"published={self.published} publish_failed={self.publish_failed} seconds={self.seconds:.1f} "
                f"fits_per_second={self.fits_per_second:.1f}{smape}")


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def forecast_series(
    series: list[MeterSeries],
    settings: ForecastSettings,
    pool: FitPool,
    *,
    publish: Callable[[ForecastResult], None] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    keep_results: bool = False,
) -> RunSummary:
    """Fit every series (warm-started), publish each forecast, update metrics and the on-disk state."""
    stop = stop or threading.Event()
    options = fit_options(settings)
    summary = RunSummary(meters=0)
    summary.accuracy = due_accuracy(settings.data_dir, series)
    if summary.accuracy is not None:
        metrics.SMAPE.set(summary.accuracy.smape)
        metrics.SMAPE_POINTS.set(summary.accuracy.points)
    previous = load_params(settings.data_dir) if settings.warm_start else {}
    items = [(s, previous.get(s.meter_id)) for s in series]
    started = time.perf_counter()
    new_params: dict[str, dict[str, np.ndarray]] = {}
    results: list[ForecastResult] = []
    for chunk in pool.map(items, options, stop):
        for r in chunk:
            summary.meters += 1
            summary.cpu_seconds += r.cpu_seconds
            metrics.FITS.labels(r.outcome).inc()
            metrics.FIT_SECONDS.observe(r.seconds)
            if r.outcome == PROPHET:
                summary.prophet += 1
                if r.params is not None:
                    new_params[r.meter_id] = r.params
            elif r.outcome == SEASONAL_NAIVE:
                summary.fallbacks += 1
                kind = _reason_kind(r.reason)
                summary.fallback_reasons[kind] = summary.fallback_reasons.get(kind, 0) + 1
            else:
                summary.failures += 1
                log.warning("no forecast for meter %s: %s", r.meter_id, r.reason)
            if r.outcome != FAILED and publish is not None:
                publish(r)
            results.append(r)
        if progress is not None:
            progress(summary.meters, len(items))
    summary.fit_seconds = time.perf_counter() - started
    summary.stopped = stop.is_set() and summary.meters < len(items)
    if summary.fallbacks:
        log.info("seasonal-naive fallbacks: %s", ", ".join(f"{k}: {v}" for k, v in sorted(summary.fallback_reasons.items())))
    if settings.warm_start and new_params:
        save_params(settings.data_dir, {**previous, **new_params})
    save_horizons(settings.data_dir, results)
    if keep_results:
        summary.results = results
    return summary


# -- history -------------------------------------------------------------------------------
def read_history(settings: ForecastSettings, csv: Path | None = None) -> pd.DataFrame:
    """The readings to forecast from: a CSV, or the readings topic by produce time (offsets for times)."""
    if csv is not None:
        from readings.csv_parser import parse_readings_csv

        parsed = parse_readings_csv(csv)
        if parsed.rejected:
            log.warning("%s: skipped %d invalid rows (first: row %d, %s)", csv, len(parsed.rejected),
                        parsed.rejected[0].row_number, parsed.rejected[0].reason)
        return parsed.readings
    from readings.history import read_readings

    if settings.topics.retention_ms < settings.history_seconds * 1000:
        log.warning("the readings topic keeps %.1f days (WATTSUP_TOPIC_RETENTION_MS) but the history window is %.1f "
                    "days: meters get at most the retained days; raise the retention or forecast from a CSV",
                    settings.topics.retention_ms / 86_400_000, settings.history_seconds / 86400)
    produced_days = settings.produced_days or settings.history_seconds / 86400
    since = datetime.now(UTC) - timedelta(days=produced_days)
    return read_readings(settings.kafka, settings.topics.readings, produced_since=since)


def run_once(
    settings: ForecastSettings,
    pool: FitPool,
    *,
    csv: Path | None = None,
    meters: Sequence[str] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    on_series: Callable[[int], None] | None = None,
) -> RunSummary:
    """Read history, forecast every meter (or ``meters``), publish to the forecasts topic."""
    from forecaster.publish import ForecastPublisher

    started = time.perf_counter()
    pool.warm_up()
    try:
        frame = read_history(settings, csv)
        series = series_from_readings(frame, settings.history_seconds, meters)
        if meters:
            missing = sorted(set(meters) - {s.meter_id for s in series})
            if missing:
                log.warning("no history for %d requested meters: %s", len(missing), ", ".join(missing[:10]))
        if on_series is not None:
            on_series(len(series))
        publisher = ForecastPublisher(settings.kafka, settings.topics.forecasts)
        generated_at = int(time.time() * 1000)
        summary = forecast_series(series, settings, pool, publish=lambda r: publisher.send(r, generated_at),
                                  progress=progress, stop=stop)
        sent = publisher.close()
    except Exception:
        metrics.RUNS.labels("failed").inc()
        raise
    summary.published, summary.publish_failed = sent.sent, sent.failed
    metrics.PUBLISHED.inc(sent.sent)
    metrics.PUBLISH_FAILED.inc(sent.failed)
    summary.seconds = time.perf_counter() - started
    metrics.RUN_SECONDS.set(summary.seconds)
    metrics.RUNS.labels("ok" if summary.ok else "failed").inc()
    if summary.ok:
        metrics.LAST_SUCCESS.set(time.time())
    return summary
