"""The newest reading per feeder as a Prometheus gauge, kept as a plain dict until scraped.

A labelled ``Gauge`` child costs a lookup and a lock per feeder per micro-batch, and a batch of
single readings touches as many feeders as it has readings; this collector records a batch with
one dict update per feeder and renders the series only when Prometheus asks. The series' name
and ``feeder`` label are those the alert rules and the dashboards query.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

NAME = "wattsup_stream_feeder_last_reading_timestamp_seconds"


class FeederClock(Collector):
    """Event time of the newest reading scored per feeder (Unix seconds), as a gauge by feeder."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._newest_ms: dict[str, int] = {}
        if registry is not None:
            registry.register(self)

    def observe(self, latest_ms: Mapping[str, int]) -> None:
        """A batch's newest reading per feeder; a batch of late readings never moves a feeder back."""
        newest = self._newest_ms
        for feeder, ms in latest_ms.items():
            if ms > newest.get(feeder, 0):
                newest[feeder] = ms

    def __len__(self) -> int:
        return len(self._newest_ms)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(NAME, "Event time of the newest reading scored per feeder (Unix seconds).",
                                labels=["feeder"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, "Event time of the newest reading scored per feeder (Unix seconds).",
                                   labels=["feeder"])
        for feeder, ms in list(self._newest_ms.items()):
            family.add_metric([feeder], ms / 1000.0)
        yield family
