"""Produce ``POST /api/v1/readings`` to Kafka without a request ever holding a lock or a worker thread
while the broker answers.

Each request's records are encoded and handed to librdkafka (which only queues them) in a worker
thread, then the request *awaits* its own delivery reports on the event loop, counted per request
by callbacks that a dedicated thread serves. During a broker outage a request therefore answers
503 after ``ack_timeout`` seconds, however many others are waiting too, and the rest of the API
(which runs in the worker threads) stays as fast as ever. librdkafka gives up on a message at the
same timeout, so a reading answered with 503 is not delivered later behind the client's back
(a retried one would be de-duplicated downstream anyway: readings are keyed by meter and time).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from starlette.concurrency import run_in_threadpool

from foundation.kafka_clients import producer_config
from foundation.kafka_logging import RateLimitedLog, quiet_config
from foundation.kafka_settings import KafkaConnection, TopicNames
from schemas.dead_letters import dead_letter_record
from schemas.serde import DEAD_LETTER, METER_READING, make_serde

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
"""How long the delivery thread blocks in one poll: reports are served as they come, stop is quick."""
RAW_TEXT_LIMIT = 100_000
"""Characters of a rejected item kept in its dead letter."""


@dataclass
class _Pending:
    """Delivery reports still owed to one request, resolved on the request's event loop."""

    loop: asyncio.AbstractEventLoop
    expected: int
    failed: int = 0
    reported: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def report(self, err: KafkaError | None, _msg: Message) -> None:  # librdkafka's thread
        try:
            self.loop.call_soon_threadsafe(self._count, err is not None)
        except RuntimeError:  # the request's loop is gone (shut down): nobody is waiting any more
            pass

    def _count(self, failed: bool) -> None:
        self.reported += 1
        self.failed += failed
        if self.reported >= self.expected:
            self.done.set()


class ReadingSender:
    """One idempotent producer shared by all requests; :meth:`send` is the only entry."""

    def __init__(self, connection: KafkaConnection, topics: TopicNames, ack_timeout: float) -> None:
        self.topics = topics
        self.ack_timeout = ack_timeout
        self.serde = make_serde(connection.schema_registry_url, **connection.registry_config())
        self.producer = Producer(producer_config(connection, **{
            "linger.ms": 5,  # a request's readings go out together; it is waiting for them
            "message.timeout.ms": max(1000, int(ack_timeout * 1000)),
            **quiet_config("readings-producer"),
        }))
        self.dead_letters_failed = 0
        self._say = RateLimitedLog(log)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_reports, name="readings-sender", daemon=True)
        self._thread.start()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            try:
                self.producer.poll(POLL_SECONDS)
            except Exception:  # noqa: BLE001 - a failing callback must not stop the reports of every later request
                log.exception("a delivery report callback failed")

    def _dead_letter_reported(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.dead_letters_failed += 1
            self._say.warning("dead-letter", "%d dead letters for rejected readings could not be written so far (the "
                                             "rejections are still in the answers); latest: %s",
                              self.dead_letters_failed, err)

    def _enqueue(self, records: list[dict[str, Any]], rejected: list[tuple[str, str]], pending: _Pending) -> int:
        """Queue the records (never blocks); returns how many could not even be queued (queue full)."""
        refused = 0
        for record in records:
            try:
                self.producer.produce(self.topics.readings, self.serde.encode(METER_READING, record),
                                      record["feeder_id"].encode(), on_delivery=pending.report)
            except BufferError:  # librdkafka's queue is full: the broker has been away a while
                refused += 1
        for reason, raw_text in rejected:
            letter = dead_letter_record(READINGS_SOURCE, reason, raw_text=raw_text[:RAW_TEXT_LIMIT])
            try:
                self.producer.produce(self.topics.dead_letters, self.serde.encode(DEAD_LETTER, letter),
                                      READINGS_SOURCE.encode(), on_delivery=self._dead_letter_reported)
            except BufferError:
                self.dead_letters_failed += 1
                self._say.warning("dead-letter", "%d dead letters for rejected readings could not be written so far; "
                                                 "latest: the producer's queue is full", self.dead_letters_failed)
        return refused

    async def send(self, records: list[dict[str, Any]], rejected: list[tuple[str, str]]) -> int:
        """Produce ``records`` (MeterReading) and dead letters for ``rejected`` (reason, raw text).

        Returns how many readings the broker did not acknowledge within ``ack_timeout``. Dead letters
        are not waited for: a batch of only invalid readings is answered at once.
        """
        pending = _Pending(asyncio.get_running_loop(), expected=len(records))
        refused = await run_in_threadpool(self._enqueue, records, rejected, pending)
        if not records:
            return 0
        pending.expected -= refused
        if pending.expected <= 0:
            return refused
        try:
            await asyncio.wait_for(pending.done.wait(), timeout=self.ack_timeout + 1.0)
        except TimeoutError:
            return refused + pending.expected - pending.reported + pending.failed
        return refused + pending.failed

    def close(self, timeout: float = 5.0) -> int:
        """Deliver what is queued (for at most ``timeout``), then stop; returns how many records were left."""
        left = self.producer.flush(timeout)
        if left:
            self.producer.purge()
            self.producer.flush(1.0)
        self._stop.set()
        self._thread.join(5)
        return left


READINGS_SOURCE = "http:/api/v1/readings"
"""The dead letters' ``source``: where the rejected item came from."""


def raw_text(item: Any) -> str:
    """A rejected item as JSON text for its dead letter."""
    try:
        return json.dumps(item, default=str)[:RAW_TEXT_LIMIT]
    except (ValueError, RecursionError):
        return repr(item)[:RAW_TEXT_LIMIT]
