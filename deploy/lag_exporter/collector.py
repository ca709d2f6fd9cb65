"""Prometheus collector that reads consumer lag when scraped.

A custom collector (rather than gauges updated by a loop) means a scrape sees the cluster as it is
now, and a cluster that does not answer shows as ``wattsup_kafka_lag_exporter_up 0`` with the
error counted, instead of stale lag values that look healthy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from deploy.lag_exporter.lag import LagReader
from foundation.kafka_logging import RateLimitedLog

log = logging.getLogger(__name__)


class ConsumerLagCollector(Collector):
    def __init__(self, reader: LagReader) -> None:
        self.reader = reader
        self.errors = 0
        self._say = RateLimitedLog(log)
        """A cluster that does not answer fails every scrape: said once a minute at most, and when it answers again."""
        self._failing = False
        self._lock = threading.Lock()
        """Overlapping scrapes (a slow cluster, two Prometheus servers) read the cluster one at a time."""

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        started = time.monotonic()
        lag = GaugeMetricFamily("wattsup_kafka_consumer_lag_messages",
                                "Records a consumer group has yet to process: end offset minus committed offset.",
                                labels=["group", "topic", "partition"])
        committed = GaugeMetricFamily("wattsup_kafka_consumer_committed_offset",
                                      "Offset a consumer group has committed on a partition.",
                                      labels=["group", "topic", "partition"])
        end = GaugeMetricFamily("wattsup_kafka_topic_end_offset",
                                "End offset (next offset to be written) of a topic partition.",
                                labels=["topic", "partition"])
        up = 1.0
        try:
            with self._lock:
                try:
                    snapshot = self.reader.snapshot()
                finally:
                    self.reader.serve_logs()
        except Exception as exc:  # noqa: BLE001 - any failure must show as up=0, not kill the endpoint
            self._say.warning("scrape", "reading consumer lag failed: %s (serving up=0; every scrape tries again)", exc)
            self.errors += 1
            self._failing = True
            up = 0.0
        else:
            if self._failing:
                self._failing = False
                self._say.recovered("scrape", "reading consumer lag from the cluster again")
            for item in snapshot.lags:
                labels = [item.group, item.topic, str(item.partition)]
                lag.add_metric(labels, item.lag)
                committed.add_metric(labels, item.committed)
            for (topic, partition), offset in sorted(snapshot.end_offsets.items()):
                end.add_metric([topic, str(partition)], offset)
            yield lag
            yield committed
            yield end
        yield GaugeMetricFamily("wattsup_kafka_lag_exporter_up", "1 if the last scrape read the cluster, else 0.",
                                value=up)
        yield CounterMetricFamily("wattsup_kafka_lag_exporter_errors", "Scrapes that could not read the cluster.",
                                  value=self.errors)
        yield GaugeMetricFamily("wattsup_kafka_lag_exporter_scrape_seconds",
                                "Time the last scrape took to read offsets from the cluster.",
                                value=time.monotonic() - started)
