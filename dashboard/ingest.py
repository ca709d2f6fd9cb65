"""Follow the anomalies, readings, forecasts and incidents topics and store them exactly once.

The ingest is a member of a Kafka consumer group (``WATTSUP_DASHBOARD_INGEST_GROUP_ID``; by default one
group per database), so dashboard replicas on one PostgreSQL database share the topics' partitions:
each record is stored by the replica that owns its partition. Kafka only decides who owns what; where
to read is the database's: on every assignment each partition is sought to the offset stored in the
database **with** the rows it produced (:func:`dashboard.store.store_batch`), never to an offset
committed to Kafka (none is). So after a crash, a restart or a partition moving to another replica,
reading resumes exactly after what was stored: nothing is skipped and nothing is stored twice. A
batch stores only messages of partitions the replica still owns; a replica that lost its partitions
without knowing (its session expired mid-batch) can still commit one late batch, whose rows are
re-deliveries (unique keys keep them out) and whose offsets never move a partition backwards.

The assignor is ``range``: each replica gets the same partition numbers of the four topics, so the
heavy readings topic is spread evenly and a feeder's readings, anomalies and forecasts are stored by
one replica. One dashboard alone (the SQLite default) owns every partition.

The loop runs in its own thread (librdkafka's calls block); each poll becomes one transaction, which on
PostgreSQL also tells the other replicas what it stored (:mod:`dashboard.live_feed`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dashboard.db import PRUNE_LOCK, try_advisory_lock
from dashboard.live_feed import notify_stored
from dashboard.metrics import DashboardMetrics
from dashboard.models import Reading
from dashboard.settings import DashboardSettings
from dashboard.store import IngestBatch, StoredBatch, incident_row, prune_readings, store_batch, stored_offsets
from dashboard.timeutil import DAY_MS, iso, now_ms
from foundation.kafka_logging import RateLimitedLog, quiet_config, retry_wait
from readings.columns import BAD_ID, FUTURE_TIMESTAMP, ReadingColumns, decode_into
from schemas.limits import identifier_problem
from schemas.serde import ANOMALY, FORECAST, INCIDENT, SerdeError, make_serde

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 600.0
TOPIC_WAIT_SECONDS = 2.0
"""Timeout of one metadata request while waiting for the broker or the topics."""
RETRY_SECONDS = 5.0
PARTITION_CHECK_SECONDS = 30.0
"""How often the topics' metadata is refreshed, so partitions added later are followed (a rebalance assigns them)."""
ASSIGNOR = "range"
"""Per topic, partition ranges by member: the same numbers of the four topics go to one replica, so the heavy
readings topic is spread evenly (an assignor balancing the total count may give one replica all of it)."""
REFUSAL_LOG_SECONDS = 60.0
"""Refused records are logged as one summary line per this period, never one line per record: a fleet
with a wrong clock sends thousands a minute."""

StoredCallback = Callable[[StoredBatch], None]


class KafkaIngest:
    """The background consumer; :meth:`start` and :meth:`stop` it, read :attr:`stored_total`."""

    def __init__(self, settings: DashboardSettings, sessions: sessionmaker[Session], metrics: DashboardMetrics,
                 on_stored: StoredCallback | None = None, *, group_id: str = "wattsup-dashboard",
                 origin: str = "") -> None:
        self.settings = settings
        self.group_id = group_id
        self.origin = origin
        """This replica's name in the notices it sends to the others (:func:`dashboard.live_feed.notify_stored`)."""
        self.sessions = sessions
        self.metrics = metrics
        self.on_stored = on_stored
        self.topics = settings.topics
        self.serde = make_serde(settings.kafka.schema_registry_url, **settings.kafka.registry_config())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned = threading.Event()
        """Set once the group has given this replica its share (possibly none) and it is positioned (tests wait)."""
        self.owned: set[tuple[str, int]] = set()
        """(topic, partition) this replica owns now; changed only by the rebalance callbacks, in the ingest thread."""
        self._callback_error: BaseException | None = None
        self.batches_stored = 0
        self.error: BaseException | None = None
        self._refused: dict[tuple[str, str], int] = {}
        self._refused_example: dict[tuple[str, str], str] = {}
        self._refusals_logged_at = float("-inf")  # the first refusal is logged at once
        self._say = RateLimitedLog(log)
        self.waiting_since: float | None = None
        """monotonic() when the ingest started waiting for the broker or its topics; None while following."""
        self.connect_attempts = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("ingest thread did not stop within %.0f s", timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop -----------------------------------------------------------------------
    @property
    def topic_names(self) -> list[str]:
        return [self.topics.anomalies, self.topics.readings, self.topics.forecasts, self.topics.incidents]

    def _consumer(self) -> Consumer:
        return Consumer({
            **self.settings.kafka.confluent_config(),
            "group.id": self.group_id,
            "partition.assignment.strategy": ASSIGNOR,
            "session.timeout.ms": self.settings.ingest_session_timeout_ms,
            "topic.metadata.refresh.interval.ms": int(PARTITION_CHECK_SECONDS * 1000),
            "enable.auto.commit": False,  # offsets live in the database, with the rows
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 16 * 1024 * 1024,
            **quiet_config("ingest-consumer"),
        })

    def _topics_exist(self, consumer: Consumer) -> bool:
        """Whether Kafka answers and the four topics exist (said, at most once a minute, when not)."""
        try:
            # A short timeout: this is retried, and a stop request must not wait long for it.
            metadata = consumer.list_topics(timeout=TOPIC_WAIT_SECONDS)
        except KafkaException as exc:
            self._say.warning("broker", "waiting for Kafka at %s: %s (attempt %d; retrying with backoff, the log "
                                        "says this at most once a minute)", self.settings.kafka.bootstrap_servers,
                              exc.args[0].str(), self.connect_attempts + 1)
            return False
        missing = [n for n in self.topic_names if n not in metadata.topics or metadata.topics[n].error is not None]
        if missing:
            self._say.warning("topics", "waiting for topics %s to exist", missing)
            return False
        return True

    # -- rebalance callbacks: called by librdkafka inside consume(), in the ingest thread ------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Position every assigned partition at the offset stored in the database (else its beginning)."""
        try:
            with self.sessions() as session:
                offsets = stored_offsets(session, self.topic_names)
        except Exception as exc:  # noqa: BLE001 - raised from the next consume(); the ingest starts over
            self._callback_error = exc
            consumer.assign([])
            return
        for tp in partitions:
            tp.offset = offsets.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        self.owned = {(tp.topic, tp.partition) for tp in partitions}
        self.metrics.partitions_owned.set(len(self.owned))
        self.assigned.set()
        log.info("ingest group %s gave this replica %d partitions (%d resumed from stored offsets): %s",
                 self.group_id, len(partitions), sum(1 for tp in partitions if tp.offset != OFFSET_BEGINNING),
                 ", ".join(f"{t}[{p}]" for t, p in sorted(self.owned)) or "none")

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing to hand over: the last batch committed before consume() was called again.
        self.owned -= {(tp.topic, tp.partition) for tp in partitions}
        self.metrics.partitions_owned.set(len(self.owned))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("ingest lost %d partitions (its group session expired): another replica owns them now",
                    len(partitions))
        self._on_revoke(consumer, partitions)

    def _run(self) -> None:
        """Consume until stopped; after an error, start over from the offsets stored in the database."""
        while not self._stop.is_set():
            try:
                self._consume()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - reported by /healthz and the log, then retried
                self.error = exc
                log.exception("dashboard ingest failed; restarting from the stored offsets in %.0f s",
                              RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)

    def _consume(self) -> None:
        consumer = self._consumer()
        self.owned = set()
        self._callback_error = None
        last_prune = 0.0
        try:
            self.waiting_since = time.monotonic()
            while not self._stop.is_set() and not self._topics_exist(consumer):
                self.connect_attempts += 1
                consumer.poll(0)  # serves librdkafka's (throttled) log lines
                # the backoff every service uses (1 s doubling to 30 s), for as long as the service runs:
                # a broker that comes back is found within half a minute
                self._stop.wait(retry_wait(self.connect_attempts))
            if self._stop.is_set():
                return
            self._say.recovered("broker", "reached Kafka at %s", self.settings.kafka.bootstrap_servers)
            self._say.recovered("topics", "the topics exist")
            consumer.subscribe(self.topic_names, on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
            self.waiting_since = None
            self.error = None
            while not self._stop.is_set():
                messages = consumer.consume(self.settings.consumer_batch, timeout=0.5)
                if self._callback_error is not None:
                    raise self._callback_error
                if messages:
                    self._handle(messages)
                if time.monotonic() - last_prune > PRUNE_EVERY_SECONDS:
                    last_prune = time.monotonic()
                    self._prune()
        finally:
            self._log_refusals(force=True)
            self.metrics.partitions_owned.set(0)
            consumer.close()  # leaves the group: the other replicas take the partitions over at once

    def _handle(self, messages: list[Any]) -> None:
        batch = IngestBatch()
        columns = ReadingColumns()
        consumed: dict[str, int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                # During an outage every poll reports the broker down: said once a minute at most.
                self._say.warning(f"consumer:{err.code()}", "consumer error: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if (topic, partition) not in self.owned:
                continue  # revoked within the consume() that returned it: its new owner reads it from the database
            batch.offsets[(topic, partition)] = offset + 1
            consumed[topic] = consumed.get(topic, 0) + 1
            value = msg.value()
            if value is None:  # a tombstone on a compacted topic
                continue
            try:
                if topic == self.topics.readings:
                    # Invalid readings are the stream worker's to dead-letter; count what cannot be decoded,
                    # and what is refused for a wrong clock or an unusable id as the other topics' records are.
                    rejected = decode_into(columns, self.serde, value, f"topic:{topic}[{partition}]@{offset}",
                                           tolerance_ms=self.settings.future_tolerance_ms)
                    if any(r.raw_bytes is not None for r in rejected):
                        self.metrics.records_undecodable.labels(topic=topic).inc()
                    for r in rejected:
                        if r.kind in (FUTURE_TIMESTAMP, BAD_ID):
                            reading = json.loads(r.raw_text or "{}")
                            self._count_refusal(topic, "future" if r.kind == FUTURE_TIMESTAMP else "bad_id",
                                                reading.get("meter_id"), reading.get("timestamp"))
                elif topic == self.topics.anomalies:
                    name, record = self.serde.decode(value, raw_timestamps=True)
                    if name == ANOMALY:
                        batch.anomalies.append(record)
                    else:
                        raise SerdeError(f"unexpected record type {name}")
                elif topic == self.topics.incidents:
                    name, record = self.serde.decode(value, raw_timestamps=True)
                    if name != INCIDENT:
                        raise SerdeError(f"unexpected record type {name}")
                    if identifier_problem(record["meter_id"]) is None and identifier_problem(record["feeder_id"]) is None:
                        batch.incidents.append(incident_row(record))
                    else:
                        self._count_refusal(topic, "bad_id", record["meter_id"], record["started"])
                elif topic == self.topics.forecasts:
                    name, record = self.serde.decode(value, raw_timestamps=True)
                    if name != FORECAST:
                        raise SerdeError(f"unexpected record type {name}")
                    batch.forecasts.append({
                        "meter_id": record["meter_id"], "feeder_id": record["feeder_id"],
                        "generated_at_ms": int(record["generated_at"]), "model_version": record["model_version"],
                        "interval_seconds": int(record["interval_seconds"]),
                        "points": [[int(p["timestamp"]), p["expected"], p["lower"], p["upper"]]
                                   for p in record["horizon"]],
                    })
            except SerdeError as exc:
                self.metrics.records_undecodable.labels(topic=topic).inc()
                log.warning("skipping undecodable message %s[%d]@%d: %s", topic, partition, offset, exc)
        batch.readings = [
            {"meter_id": m, "feeder_id": f, "timestamp_ms": t, "kwh": k, "interval_seconds": i}
            for m, f, t, k, i in zip(columns.meter_ids, columns.feeder_ids, columns.timestamps_ms, columns.kwh,
                                     columns.interval_s)
        ]
        batch.readings = self._refuse(batch.readings, self.topics.readings, "timestamp_ms")
        batch.anomalies = self._refuse(batch.anomalies, self.topics.anomalies, "timestamp")
        with self.sessions.begin() as session:
            stored = store_batch(session, batch)
            notify_stored(session, self.origin, stored)  # PostgreSQL: the other replicas' live views, at commit
        self.batches_stored += 1
        for topic, n in consumed.items():
            self.metrics.messages_consumed.labels(topic=topic).inc(n)
        self.metrics.records_ingested.labels(topic=self.topics.anomalies).inc(len(stored.anomalies))
        self.metrics.records_ingested.labels(topic=self.topics.readings).inc(len(stored.readings))
        self.metrics.records_ingested.labels(topic=self.topics.forecasts).inc(stored.forecasts)
        self.metrics.records_ingested.labels(topic=self.topics.incidents).inc(stored.incidents)
        if self.on_stored is not None and (stored.anomalies or stored.readings or stored.incident_events):
            try:
                self.on_stored(stored)
            except Exception:  # noqa: BLE001 - a listener's failure must not stop the ingest
                log.exception("listener of stored records failed")

    def _refuse(self, records: list[dict[str, Any]], topic: str, time_key: str) -> list[dict[str, Any]]:
        """The records worth storing: not stamped beyond now plus the tolerance, with usable ids.

        A wrong clock's future stamp would move "the newest data" every view is measured from; an id
        over the column length would fail the whole transaction on PostgreSQL again and again.
        """
        limit = now_ms() + self.settings.future_tolerance_ms
        kept = []
        for record in records:
            reason = None
            if int(record[time_key]) > limit:
                reason = "future"
            elif identifier_problem(record["meter_id"]) or identifier_problem(record["feeder_id"]):
                reason = "bad_id"
            if reason is None:
                kept.append(record)
                continue
            self._count_refusal(topic, reason, record["meter_id"], record[time_key])
        self._log_refusals()
        return kept

    def _count_refusal(self, topic: str, reason: str, meter: Any, timestamp_ms: Any) -> None:
        """Count a record not stored (``future`` or ``bad_id``) for the metric and the summary log."""
        self.metrics.records_refused.labels(topic=topic, reason=reason).inc()
        key = (topic, reason)
        self._refused[key] = self._refused.get(key, 0) + 1
        when = iso(int(timestamp_ms)) if reason == "future" and isinstance(timestamp_ms, int) else "-"
        self._refused_example.setdefault(key, f"meter {str(meter)[:64]!r} at {when}")

    def _log_refusals(self, force: bool = False) -> None:
        """One warning line per refusal kind and period (see ``REFUSAL_LOG_SECONDS``)."""
        if not self._refused or (not force and time.monotonic() - self._refusals_logged_at < REFUSAL_LOG_SECONDS):
            return
        self._refusals_logged_at = time.monotonic()
        why = {"future": f"stamped more than {self.settings.future_tolerance_hours:g} h ahead of the clock",
               "bad_id": "with an unusable meter or feeder id"}
        for (topic, reason), count in sorted(self._refused.items()):
            log.warning("did not store %d records of %s %s (e.g. %s); see wattsup_dashboard_records_refused_total",
                        count, topic, why[reason], self._refused_example[(topic, reason)])
        self._refused.clear()
        self._refused_example.clear()

    def feeder_sums(self, stored: StoredBatch, feeders: set[str]) -> list[dict[str, Any]]:
        """Per-timestamp totals of the watched feeders that this batch touched (for live feeder charts)."""
        touched = {(r["feeder_id"], r["timestamp_ms"]) for r in stored.readings if r["feeder_id"] in feeders}
        if not touched:
            return []
        out = []
        with self.sessions() as session:
            for feeder, ts in sorted(touched, key=lambda k: k[1]):
                total = session.scalar(select(func.sum(Reading.kwh)).where(Reading.feeder_id == feeder)
                                       .where(Reading.timestamp_ms == ts))
                out.append({"meter_id": None, "feeder_id": feeder, "timestamp": iso(ts), "kwh": float(total or 0)})
        return out

    def _prune(self) -> None:
        retention = int(self.settings.readings_retention_days * DAY_MS)
        with self.sessions.begin() as session:
            if not try_advisory_lock(session, PRUNE_LOCK):
                return  # another replica is pruning right now
            removed = prune_readings(session, retention)
        if removed:
            log.info("pruned %d readings older than %.1f days", removed, self.settings.readings_retention_days)
