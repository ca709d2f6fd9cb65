"""Fan-out of stored records to the browsers connected to ``GET /api/v1/events``.

The ingest thread calls :meth:`EventHub.publish_threadsafe` with what it stored, and on PostgreSQL the
live feed thread with what other replicas stored (:mod:`dashboard.live_feed`); each connected client
has a bounded asyncio queue on the event loop. A client too slow to keep up loses events (its queue is full)
rather than making the ingest wait or the server's memory grow.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000


@dataclass(eq=False)
class Subscriber:
    meter_id: str | None = None
    feeder_id: str | None = None
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: int = 0

    def offer(self, event: str, data: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((event, data))
        except asyncio.QueueFull:
            self.dropped += 1


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, meter_id: str | None = None, feeder_id: str | None = None) -> Subscriber:
        subscriber = Subscriber(meter_id=meter_id, feeder_id=feeder_id)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def watched_feeders(self) -> set[str]:
        return {s.feeder_id for s in set(self._subscribers) if s.feeder_id}

    def watched_meters(self) -> set[str]:
        return {s.meter_id for s in set(self._subscribers) if s.meter_id}

    def publish_threadsafe(self, anomalies: list[dict[str, Any]], readings: list[dict[str, Any]],
                           feeder_sums: list[dict[str, Any]]) -> None:
        """Hand one stored batch to the event loop (called from the ingest thread)."""
        if self._loop is None or not self._subscribers or self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(self._publish, anomalies, readings, feeder_sums)
        except RuntimeError:  # loop shutting down
            pass

    def _publish(self, anomalies: list[dict[str, Any]], readings: list[dict[str, Any]],
                 feeder_sums: list[dict[str, Any]]) -> None:
        for subscriber in list(self._subscribers):
            for anomaly in anomalies:
                subscriber.offer("anomaly", anomaly)
            if subscriber.meter_id:
                for reading in readings:
                    if reading["meter_id"] == subscriber.meter_id:
                        subscriber.offer("reading", reading)
            elif subscriber.feeder_id:
                for total in feeder_sums:
                    if total["feeder_id"] == subscriber.feeder_id:
                        subscriber.offer("reading", total)
