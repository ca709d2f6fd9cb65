"""Start a stream worker process: metrics endpoint, sensitivity watcher, engine, Faust worker."""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from foundation.sensitivity import SensitivityWatcher
from schemas.serde import make_serde
from stream_processors import metrics
from stream_processors.anomaly_publisher import AnomalyPublisher
from stream_processors.app import create_app
from stream_processors.emitted_anomalies import EmittedAnomalies
from stream_processors.scoring import StreamScorer
from stream_processors.settings import StreamSettings

log = logging.getLogger(__name__)


def run_worker(settings: StreamSettings) -> None:
    """Run until SIGTERM/SIGINT; Faust stops gracefully and commits what was processed."""
    from faust.worker import Worker

    start_http_server(settings.metrics_port, addr=settings.worker_host)
    log.info("metrics on http://%s:%d/metrics", settings.worker_host, settings.metrics_port)
    watcher = SensitivityWatcher(settings.kafka, settings.topics, on_update=metrics.CONTROL_UPDATES.inc)
    watcher.start()
    serde = make_serde(settings.kafka.schema_registry_url, **settings.kafka.registry_config())
    emitted = EmittedAnomalies(settings.kafka, settings.topics.anomalies, settings.topics.partitions, serde)
    scorer = StreamScorer(settings.models.dir, serde, sensitivity=watcher.for_meter, emitted_since=emitted.since)
    publisher = AnomalyPublisher(settings.kafka, settings.topics.anomalies, settings.topics.partitions, serde)
    app = create_app(settings, scorer, publisher)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        Worker(app, loglevel=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(), quiet=True,
               redirect_stdouts=False).execute_from_commandline()
    finally:
        publisher.close()
        watcher.stop()
