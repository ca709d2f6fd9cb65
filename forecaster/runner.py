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
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forecaster import metrics
from forecaster.accuracy import DueAccuracy, accuracy_against, due_accuracy, save_horizons
from forecaster.fitting import FAILED, PROPHET, SEASONAL_NAIVE, FitOptions, ForecastResult, forecast_meter
from forecaster.group import RunShare, partition_ranges
from forecaster.partition_state import load_partition_horizons, load_partition_params, save_partition_state
from forecaster.series import MeterSeries, series_from_readings
from forecaster.settings import ForecastSettings
from forecaster.warm_start import load_params, save_params

log = logging.getLogger(__name__)

_MIN_METERS_PER_WORKER = 8
"""Fewer meters than this per worker are fitted in this process when no pool runs yet: starting
processes (and importing Prophet in each) costs seconds, more than fitting a handful of meters."""

_IN_FLIGHT_PER_WORKER = 2
"""Chunks handed to the pool at once per process: one running and one waiting keeps each process busy, and
the rest stay here, so a stop request or a partition moving to another instance is heeded within a chunk."""

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


def _wanted_part(chunk: Sequence, wanted: Callable[[Any], bool] | None) -> Sequence:
    return chunk if wanted is None else [item for item in chunk if wanted(item)]


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
            on_error: Callable[[Sequence, BaseException], list] | None = None,
            wanted: Callable[[Any], bool] | None = None) -> Iterator[list]:
        """``task`` over chunks of ``items``, results in completion order; stops handing out work once
        ``stop`` is set. ``task`` must be a module-level function (it is pickled to the workers).

        Chunks are handed out a few at a time, and ``wanted`` (if given) is asked about each item
        just before its chunk goes out: items it refuses are left out (a forecaster instance whose
        partition moved to another instance mid-run stops fitting that partition's meters).

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
                chunk = _wanted_part(items[i:i + size], wanted)
                if chunk:
                    yield task(chunk, options)
            return
        size = max(1, min(64, math.ceil(len(items) / (self.workers * 8))))
        lost = [items[i:i + size] for i in range(0, len(items), size)]
        for _ in range(2):
            lost = yield from self._round(self._executor(), lost, options, stop, task, on_error, wanted,
                                          self.workers * _IN_FLIGHT_PER_WORKER)
            if not lost:
                return
            log.error("a fitting process died; %d unfinished chunks go to a new pool", len(lost))
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for chunk in lost:  # isolate the chunk that kills its process
            single = self._new_pool(1)
            try:
                if (yield from self._round(single, [chunk], options, stop, task, on_error, wanted, 1)):
                    yield on_error(chunk, BrokenProcessPool("its fitting process died"))
            finally:
                single.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _round(pool: ProcessPoolExecutor, chunks: list[Sequence], options: FitOptions, stop: threading.Event,
               task: Callable[[Sequence, FitOptions], list], on_error: Callable[[Sequence, BaseException], list],
               wanted: Callable[[Any], bool] | None, in_flight: int) -> Generator[list, None, list[Sequence]]:
        """Run ``chunks`` on ``pool``, at most ``in_flight`` at once; returns the chunks lost to a broken pool."""
        queued = deque(chunks)
        futures: dict[Future, Sequence] = {}
        lost: list[Sequence] = []

        def hand_out() -> None:
            while queued and len(futures) < in_flight and not stop.is_set() and not lost:
                chunk = _wanted_part(queued.popleft(), wanted)
                if not chunk:
                    continue
                try:
                    futures[pool.submit(task, chunk, options)] = chunk
                except BrokenProcessPool:
                    lost.append(chunk)

        try:
            hand_out()
            while futures:
                done, pending = wait(set(futures), timeout=0.5, return_when=FIRST_COMPLETED)
                if stop.is_set():
                    for future in pending:
                        future.cancel()
                    done |= {f for f in pending if not f.cancelled()}  # running: seconds at most
                    wait(done)
                    for future in pending - done:
                        futures.pop(future)
                for future in done:
                    chunk = futures.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        lost.append(chunk)
                    except Exception as exc:  # noqa: BLE001 - one bad chunk never stops the run
                        log.error("a chunk of %d meters failed: %s: %s", len(chunk), type(exc).__name__, exc)
                        yield on_error(chunk, exc)
                hand_out()
        finally:
            for future in futures:
                future.cancel()
        return [] if stop.is_set() else lost + list(queued)

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
    partitions: frozenset[int] | None = None
    """The readings partitions a forecaster group instance's run forecast (None: the whole fleet)."""
    handed_over: int = 0
    """Meters of those partitions left to another instance: Kafka moved their partition during the run."""

    @property
    def fits_per_second(self) -> float:
        return self.meters / self.fit_seconds if self.fit_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.publish_failed == 0 and not self.stopped and (self.meters == 0 or self.failures < self.meters)

    def line(self) -> str:
        smape = (f" smape_due={self.accuracy.smape:.3f} ({self.accuracy.points} points, {self.accuracy.meters} meters)"
                 if self.accuracy else "")
        share = f"partitions={partition_ranges(self.partitions)} " if self.partitions is not None else ""
        handed = f" handed_over={self.handed_over}" if self.partitions is not None else ""
        return (f"{share}meters={self.meters} prophet={self.prophet} fallbacks={self.fallbacks} "
                f"failures={self.failures} published={self.published} publish_failed={self.publish_failed}{handed} "
                f"seconds={self.seconds:.1f} fits_per_second={self.fits_per_second:.1f}{smape}"
                f"{' stopped before the end' if self.stopped else ''}")


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def _count(summary: RunSummary, r: ForecastResult) -> None:
    summary.meters += 1
    summary.cpu_seconds += r.cpu_seconds
    metrics.FITS.labels(r.outcome).inc()
    metrics.FIT_SECONDS.observe(r.seconds)
    if r.outcome == PROPHET:
        summary.prophet += 1
    elif r.outcome == SEASONAL_NAIVE:
        summary.fallbacks += 1
        kind = _reason_kind(r.reason)
        summary.fallback_reasons[kind] = summary.fallback_reasons.get(kind, 0) + 1
    else:
        summary.failures += 1
        log.warning("no forecast for meter %s: %s", r.meter_id, r.reason)


def forecast_series(
    series: list[MeterSeries],
    settings: ForecastSettings,
    pool: FitPool,
    *,
    publish: Callable[[ForecastResult], None] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    keep_results: bool = False,
    share: RunShare | None = None,
    partition_of: Mapping[str, int] | None = None,
) -> RunSummary:
    """Fit every series (warm-started), publish each forecast, update metrics and the on-disk state.

    With ``share`` (a forecaster group instance's run; ``partition_of`` maps each meter to its readings
    partition) the state is kept per partition, and a meter whose partition is revoked during the run is
    neither fitted (if not started yet) nor published nor saved: it is counted as handed over.
    """
    if share is not None and partition_of is None:
        raise ValueError("a group run needs the readings partition of each meter")
    stop = stop or threading.Event()
    options = fit_options(settings)
    summary = RunSummary(meters=0, partitions=share.partitions if share is not None else None)
    if share is not None:
        summary.accuracy = accuracy_against(load_partition_horizons(settings.data_dir, share.partitions), series)
        previous = load_partition_params(settings.data_dir, share.partitions) if settings.warm_start else {}
    else:
        summary.accuracy = due_accuracy(settings.data_dir, series)
        previous = load_params(settings.data_dir) if settings.warm_start else {}
    if summary.accuracy is not None:
        metrics.SMAPE.set(summary.accuracy.smape)
        metrics.SMAPE_POINTS.set(summary.accuracy.points)
    items = [(s, previous.get(s.meter_id)) for s in series]
    wanted = None if share is None else (lambda item: share.owns(partition_of[item[0].meter_id]))
    started = time.perf_counter()
    new_params: dict[str, dict[str, np.ndarray]] = {}
    results: list[ForecastResult] = []
    metrics.RUN_PROGRESS_METERS.set(0)
    for chunk in pool.map(items, options, stop, wanted=wanted):
        for r in chunk:
            if share is not None:
                with share.holding():  # no revocation completes between this check and the send
                    if not share.owns(partition_of[r.meter_id]):
                        continue
                    if r.outcome != FAILED and publish is not None:
                        publish(r)
            elif r.outcome != FAILED and publish is not None:
                publish(r)
            _count(summary, r)
            if r.outcome == PROPHET and r.params is not None:
                new_params[r.meter_id] = r.params
            results.append(r)
        metrics.RUN_PROGRESS_METERS.set(summary.meters)
        if progress is not None:
            progress(summary.meters, len(items))
    summary.fit_seconds = time.perf_counter() - started
    if share is not None:
        done = {r.meter_id for r in results}
        revoked = share.revoked
        summary.handed_over = sum(1 for s in series if partition_of[s.meter_id] in revoked and s.meter_id not in done)
        metrics.HANDED_OVER.inc(summary.handed_over)
    summary.stopped = stop.is_set() and summary.meters + summary.handed_over < len(items)
    if summary.fallbacks:
        log.info("seasonal-naive fallbacks: %s", ", ".join(f"{k}: {v}" for k, v in sorted(summary.fallback_reasons.items())))
    if share is not None:
        _save_partition_states(settings, share, partition_of, new_params, results)
    else:
        if settings.warm_start and new_params:
            save_params(settings.data_dir, {**previous, **new_params})
        save_horizons(settings.data_dir, results)
    metrics.RUN_PROGRESS_METERS.set(0)
    metrics.LAST_RUN_METERS.set(summary.meters)
    if keep_results:
        summary.results = results
    return summary


def _save_partition_states(settings: ForecastSettings, share: RunShare, partition_of: Mapping[str, int],
                           new_params: dict[str, dict[str, np.ndarray]], results: list[ForecastResult]) -> None:
    """Each partition's state, written only while the run still owns it (held: no revocation meanwhile)."""
    by_partition: dict[int, list[ForecastResult]] = {}
    for r in results:
        by_partition.setdefault(partition_of[r.meter_id], []).append(r)
    with share.holding():
        for partition in sorted(share.owned & by_partition.keys()):
            mine = by_partition[partition]
            params = {r.meter_id: new_params[r.meter_id] for r in mine if r.meter_id in new_params}
            save_partition_state(settings.data_dir, partition, params if settings.warm_start else {}, mine)


# -- history -------------------------------------------------------------------------------
def read_history(settings: ForecastSettings, csv: Path | None = None,
                 partitions: Iterable[int] | None = None) -> pd.DataFrame:
    """The readings to forecast from: a CSV, or the readings topic by produce time (offsets for times).

    ``partitions``: only these readings partitions (a forecaster group instance's share), with a
    ``partition`` column saying where each reading was read.
    """
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
    if partitions is None:
        return read_readings(settings.kafka, settings.topics.readings, produced_since=since)
    return read_readings(settings.kafka, settings.topics.readings, produced_since=since, partitions=sorted(partitions),
                         with_partition=True)


def meter_partitions(frame: pd.DataFrame) -> dict[str, int]:
    """meter id -> the readings partition of its newest reading (a feeder's readings share one partition)."""
    if frame.empty:
        return {}
    newest = frame.sort_values("timestamp", kind="stable").groupby("meter_id")["partition"].last()
    return {str(m): int(p) for m, p in newest.items()}


def run_once(
    settings: ForecastSettings,
    pool: FitPool,
    *,
    csv: Path | None = None,
    meters: Sequence[str] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    on_series: Callable[[int], None] | None = None,
    share: RunShare | None = None,
) -> RunSummary:
    """Read history, forecast every meter (or ``meters``), publish to the forecasts topic.

    With ``share`` (a forecaster group instance's run) only the history of its partitions is read and
    only their meters are forecast; a partition revoked meanwhile is fenced (see :mod:`forecaster.group`).
    """
    from forecaster.publish import ForecastPublisher

    if share is not None and csv is not None:
        raise ValueError("a forecaster group instance reads its partitions from Kafka, not a CSV")
    started = time.perf_counter()
    pool.warm_up()
    try:
        frame = read_history(settings, csv, share.partitions if share is not None else None)
        partition_of = meter_partitions(frame) if share is not None else None
        series = series_from_readings(frame, settings.history_seconds, meters)
        if meters and share is None:
            missing = sorted(set(meters) - {s.meter_id for s in series})
            if missing:
                log.warning("no history for %d requested meters: %s", len(missing), ", ".join(missing[:10]))
        if on_series is not None:
            on_series(len(series))
        publisher = ForecastPublisher(settings.kafka, settings.topics.forecasts)
        generated_at = int(time.time() * 1000)
        if share is not None:
            share.on_handover(publisher.flush)
        try:
            summary = forecast_series(series, settings, pool, publish=lambda r: publisher.send(r, generated_at),
                                      progress=progress, stop=stop, share=share, partition_of=partition_of)
            sent = publisher.close()
        finally:
            if share is not None:
                share.on_handover(None)
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
