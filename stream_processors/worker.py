"""Start a stream worker process: metrics endpoint, sensitivity watcher, engine, Faust worker."""

from __future__ import annotations

import gc
import logging
import time

from confluent_kafka import KafkaException
from prometheus_client import start_http_server

from detection.calendar import FleetCalendar
from feedback.topic import FeedbackFollower
from foundation.kafka_logging import client_library_throttle, retry_wait
from foundation.sensitivity import SensitivityWatcher
from foundation.topics import ensure_topic_specs
from schemas.serde import make_serde
from stream_processors import metrics
from stream_processors.anomaly_publisher import AnomalyPublisher
from stream_processors.app import create_app
from stream_processors.changelog_recovery import changelog_specs
from stream_processors.emitted_anomalies import EmittedAnomalies
from stream_processors.incidents import EmittedIncidents, StreamIncidents
from stream_processors.scoring import StreamScorer
from stream_processors.settings import StreamSettings

log = logging.getLogger(__name__)

REGISTRY_CLIENT_CONFIG = {
    "max.retries": 0,  # one attempt per lookup: retried by the agent with backoff, never asleep in the loop
    "timeout": 5,  # seconds: a registry that hangs costs the loop this long per attempt at most
}


GC_THRESHOLDS = (20_000, 50, 100)
"""Python's collector thresholds in the worker, against its defaults (700, 10, 10). Faust makes
tens of container objects per message, so at 700 a young collection ran every few dozen messages,
and full collections, which walk the whole heap of meter state, paused the loop 90-280 ms a few
times a minute. A young collection after 20,000 allocations walks at most those 20,000 young
objects (about a millisecond); 50 and 100 (against 10 and 10) let a full walk of the heap come at
most once per 5,000 young collections instead of 100, since with meter state in the heap the full
walks are the pauses. Measured only together with the freeze below (README, "Later measurements")."""


def _tune_garbage_collection() -> None:
    """Freeze what start-up built (libraries, the model: alive as long as the worker) out of the
    collector's walks, and collect less often (:data:`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _ensure_changelogs(settings: StreamSettings) -> None:
    """Create the worker's changelog topics if missing, waiting for a broker that is not up yet."""
    specs = changelog_specs(settings.app_id, settings.topics.partitions, settings.kafka.min_insync_replicas)
    attempt = 0
    while True:
        try:
            ensure_topic_specs(settings.kafka, specs)
            return
        except (KafkaException, TimeoutError) as exc:
            attempt += 1
            wait = retry_wait(attempt)
            log.warning("cannot create the changelog topics yet (%s); trying again in %.0f s", exc, wait)
            time.sleep(wait)


def run_worker(settings: StreamSettings) -> None:
    """Run until SIGTERM/SIGINT; Faust stops gracefully and commits what was processed."""
    from faust.worker import Worker

    class QuietWorker(Worker):
        """Faust's worker, whose log handlers hold back aiokafka's and Faust's repeated outage lines
        (foundation.kafka_logging.client_library_throttle): a broker outage costs a few lines a minute."""

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            throttle = client_library_throttle()
            for handler in logger.handlers:
                handler.addFilter(throttle)

    start_http_server(settings.metrics_port, addr=settings.worker_host)
    log.info("metrics on http://%s:%d/metrics", settings.worker_host, settings.metrics_port)
    watcher = SensitivityWatcher(settings.kafka, settings.topics, on_update=metrics.CONTROL_UPDATES.inc)
    watcher.start()
    # The agent waits out a registry outage with its own backoff (stream_processors.retrying) while the
    # event loop runs on; the client's built-in retries would sleep inside the loop for seconds per lookup.
    serde = make_serde(settings.kafka.schema_registry_url,
                       **{**settings.kafka.registry_config(), **REGISTRY_CLIENT_CONFIG})
    emitted = EmittedAnomalies(settings.kafka, settings.topics.anomalies, settings.topics.partitions, serde)
    incidents = StreamIncidents(EmittedIncidents(settings.kafka, settings.topics.incidents, settings.topics.partitions,
                                                 serde).since)
    follower = FeedbackFollower(settings.kafka, settings.topics, serde, incidents.on_mark)
    follower.start()
    scorer = StreamScorer(settings.models.dir, serde, sensitivity=watcher.for_meter, emitted_since=emitted.since,
                          calendar=FleetCalendar.from_clock(settings.fleet), incidents=incidents)
    publisher = AnomalyPublisher(settings.kafka, settings.topics.anomalies, settings.topics.partitions, serde,
                                 incidents_topic=settings.topics.incidents)
    _ensure_changelogs(settings)
    app = create_app(settings, scorer, publisher)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _tune_garbage_collection()
    try:
        QuietWorker(app, loglevel=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(), quiet=True,
               redirect_stdouts=False).execute_from_commandline()
    finally:
        publisher.close()
        watcher.stop()
        follower.stop()
