"""The Faust stream worker: readings in, explained anomalies out.

Why it is shaped this way (the README gives the measurements):

* A Faust agent's cost is per message, so the agent takes thousands of messages at a time
  (``take_events``) and everything after that is paid per micro-batch, not per message: the
  messages are decoded and validated together (:mod:`stream_processors.decoding`), scored with
  one model call, and their state written in one go. A take of head-end messages, hundreds of
  readings each, is scored in chunks of bounded payload (:mod:`stream_processors.batching`).
* State is kept **per feeder**, in a compacted changelog topic keyed by feeder id: one small
  record per feeder per micro-batch plus the baseline slots it changed. The readings topic is keyed
  by feeder id with murmur2, and the changelog partition is computed the same way, so a feeder's
  readings, state and forecasts meet in one partition and a restarted or rebalanced worker
  recovers exactly the state of the partitions it owns. A batch's records reach the changelog
  together through librdkafka, not one at a time through Faust's producer
  (:mod:`stream_processors.changelog_batch`).
* The worker keeps state decoded in memory, once, and reads it back itself, only for the
  partitions it takes over (:mod:`stream_processors.changelog_recovery`): Faust's table recovery
  replays kept partitions too and can drop records on the way. A rebalance's lost partitions are
  forgotten, and the hot path never deserialises state it already has
  (:mod:`stream_processors.feeder_state`).
* Delivery is at-least-once: a batch's state records (and a take of forecasts' records) are
  acknowledged by the broker before the agent takes the next batch, so before Faust acknowledges
  and commits the batch's offsets (:mod:`stream_processors.changelog_batch`; Faust's own "flush
  before commit" gives up after 0.1 s without a send, so it cannot be relied on). A reading seen
  again after a crash finds its meter's state already past it and is recognised as a duplicate,
  so it is not scored twice.
* Anomalies are never lost and never repeated: each batch's anomalies are acknowledged by the
  broker before the state that marks their readings as seen is written, and a worker that takes
  a feeder over reads back the anomalies emitted to that feeder's partition since the state was
  saved and does not emit those again (:mod:`stream_processors.emitted_anomalies`). The tests
  kill a worker mid-stream, and one of two workers, and compare the changelog state and the
  anomalies with an uninterrupted run: they are equal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from typing import Any

import faust

from foundation.kafka_settings import KafkaConnection
from readings.columns import Rejection, wall_clock_ms
from schemas.dead_letters import dead_letter_record
from schemas.serde import DEAD_LETTER
from stream_processors import faust_transport, metrics
from stream_processors.anomaly_publisher import AnomalyPublisher
from stream_processors.arrival_log import ArrivalSummary
from stream_processors.batching import chunks_by_bytes
from stream_processors.changelog_batch import BatchedTable
from stream_processors.changelog_recovery import (
    FORECAST_CHANGELOG,
    STATE_CHANGELOG,
    ChangelogReader,
    Ownership,
    TakeOver,
)
from stream_processors.decoding import decode_messages
from stream_processors.durable_producer import DeliveryError, DurableProducer
from stream_processors.offset_gaps import FaustConsumer, OffsetGapGuard
from stream_processors.retrying import Patient
from stream_processors.scoring import StreamScorer
from stream_processors.settings import StreamSettings

log = logging.getLogger(__name__)

def faust_credentials(connection: KafkaConnection) -> Any:
    """Faust/aiokafka credentials from the same settings every service uses."""
    import ssl

    protocol = connection.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(connection.ssl_ca_location) if connection.ssl_ca_location else None)
        if connection.ssl_certificate_location:
            context.load_cert_chain(
                str(connection.ssl_certificate_location),
                str(connection.ssl_key_location) if connection.ssl_key_location else None,
                connection.ssl_key_password.get_secret_value() if connection.ssl_key_password else None,
            )
        context.check_hostname = connection.ssl_check_hostname
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=connection.sasl_username,
        password=connection.sasl_password.get_secret_value() if connection.sasl_password else None,
        ssl_context=context,
        mechanism=connection.sasl_mechanism or "PLAIN",
    )


def faust_app(settings: StreamSettings) -> faust.App:
    """The Faust app with the worker's configuration (no topics or agents yet)."""
    brokers = ";".join(f"{faust_transport.SCHEME}://{server}"
                       for server in settings.kafka.bootstrap_servers.split(","))
    return faust.App(
        settings.app_id,
        broker=brokers,
        broker_credentials=faust_credentials(settings.kafka),
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        topic_disable_leader=True,
        broker_max_poll_records=settings.max_batch_messages * 4,
        producer_acks=-1,
        # A crashed worker's partitions move to the survivors after this long, not Faust's 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        producer_linger_ms=5,
        producer_max_request_size=4 * 1024 * 1024,
        web_enabled=True,
        web_port=settings.web_port,
        web_bind=settings.worker_host,
        web_host=settings.worker_host,
        datadir=str(settings.data_dir),
    )


def create_app(settings: StreamSettings, scorer: StreamScorer, publisher: AnomalyPublisher) -> faust.App:
    """Build the Faust app around a :class:`~stream_processors.scoring.StreamScorer`."""
    topics = settings.topics
    app = faust_app(settings)
    serde = scorer.forecasts.serde
    readings = app.topic(topics.readings, key_type=bytes, value_type=bytes, partitions=topics.partitions,
                         internal=False)
    dead_letters = app.topic(topics.dead_letters, key_type=bytes, value_type=bytes)
    forecasts = app.topic(topics.forecasts, key_type=bytes, value_type=bytes, partitions=topics.partitions)

    state_table = BatchedTable(STATE_CHANGELOG.format(app_id=settings.app_id), topics.partitions,
                               publisher.producer)
    # its own producer: the forecasts agent runs beside the readings agent, and one producer's
    # acknowledgement wait is not shared between two concurrent batches
    forecast_table = BatchedTable(FORECAST_CHANGELOG.format(app_id=settings.app_id), topics.partitions,
                                  DurableProducer(settings.kafka, "forecast-state-producer"))
    scorer.attach_tables(state_table, forecast_table)
    gaps = OffsetGapGuard(topics.readings, FaustConsumer(app))
    ownership = Ownership()
    reader = ChangelogReader(settings.kafka)
    taking_over = asyncio.Lock()

    arrivals = ArrivalSummary(log)
    patient = Patient(log)

    async def send_dead_letters(rejections: list[Rejection]) -> None:
        def encode() -> list[bytes]:  # all encoded before any is sent: a retry sends none twice
            return [serde.encode(DEAD_LETTER, dead_letter_record(r.source, r.reason, raw_bytes=r.raw_bytes,
                                                                  raw_text=r.raw_text)) for r in rejections]

        values = await patient.run("encode dead letters", encode)
        for r, value in zip(rejections, values):
            metrics.DEAD_LETTERS.labels(reason=r.kind or "other").inc()
            arrivals.note_rejected(r.kind or "other", r.reason)
            await dead_letters.send(key=r.source.encode(), value=value)

    async def score_chunk(admitted: list[tuple[bytes, int, int]], now_ms: int) -> None:
        """Decode, score, publish and persist one micro-batch of messages (value, partition, offset)."""
        # the schema registry may be away: the batch waits (never dead-lettered, never dropped)
        columns, rejections = await patient.run(
            "decode readings", lambda: decode_messages(serde, topics.readings, admitted, now_ms))
        if rejections:
            await send_dead_letters(rejections)
        if not len(columns):
            return
        started = time.perf_counter()
        # a take-over reads back emitted anomalies from the broker, which may be away
        result = await patient.run("take feeders over", lambda: scorer.process(columns))
        metrics.SCORING_SECONDS.observe(time.perf_counter() - started)
        # one observation per batch (its newest reading): per-reading observations would cost
        # more than they tell
        metrics.EVENT_TIME_LAG.observe(max(0.0, time.time() - max(columns.timestamps_ms) / 1000.0))
        metrics.BATCH_SIZE.observe(len(columns))
        metrics.LATE_READINGS.inc(result.late)
        metrics.STALE_READINGS.inc(result.stale)
        arrivals.note(late=result.late, stale=result.stale, duplicates=result.duplicates,
                      late_example=result.late_example, stale_example=result.stale_example)
        metrics.FEEDER_LAST_READING.observe(result.feeder_latest_ms)
        # Anomalies go to their feeder's partition (where a successor looks for them after a
        # crash) and are durable before the state that marks their readings as seen is
        # written: a crash may then repeat an anomaly, which the successor filters out
        # (stream_processors/emitted_anomalies.py), but never loses one.
        try:  # waits out a broker outage; the registry may be away for the first anomaly's schema
            await patient.run("publish anomalies", lambda: publisher.publish(result.anomalies, result.incidents))
            # counted per label, not per anomaly: a batch can hold thousands; suppressed ones are
            # counted by kind and reason (stream_processors/incidents.py)
            standing = [a for a in result.anomalies if not a.get("suppressed_by")]
            for severity, count in Counter(a["severity"] for a in standing).items():
                metrics.ANOMALIES.labels(severity=severity).inc(count)
            for feeder, count in Counter(a["feeder_id"] for a in standing).items():
                metrics.FEEDER_ANOMALIES.labels(feeder=feeder).inc(count)
            scorer.persist(result.touched_feeders)
            # durable before the agent takes the next batch, and so before Faust acknowledges
            # this batch's messages (stream_processors/changelog_batch.py)
            await state_table.flush()
            # counted once the batch is done, anomalies and state durable: what waits on these
            # counters (tests, the bench) then sees every anomaly of the readings counted
            metrics.READINGS_PROCESSED.inc(result.scored)
            metrics.DUPLICATE_READINGS.inc(result.duplicates)
        except DeliveryError as exc:
            # Crash-only: the broker refused a record for good, so this batch must not be marked
            # done, and Faust would still acknowledge its messages. Stop now; a restarted worker
            # recovers the state from the changelog and scores the batch again.
            log.critical("stopping the worker: %s", exc)
            os._exit(70)

    def note_assignment(assigned: set[Any]) -> None:
        ownership.on_assignment({tp.partition for tp in assigned if tp.topic == topics.readings},
                                app.consumer_generation_id)

    @app.on_partitions_assigned.connect
    async def on_assignment(_app: Any, assigned: set[Any], **_: Any) -> None:
        note_assignment(assigned)  # every assignment, so a partition lost and back in between is seen

    async def take_partitions_over() -> None:
        """Before a batch of either agent: forget the feeders of partitions not owned throughout, and
        read back the state of partitions owned anew (stream_processors/changelog_recovery.py)."""
        async with taking_over:
            # the consumer's own view too, should a batch come before the assignment signal
            note_assignment(app.consumer.assignment())
            plan = ownership.take_over()
            if plan is None:
                return
            lost = scorer.keep_only(lambda feeder: state_table.partition_for_key(feeder) in plan.kept)
            if lost:
                log.info("forgot the state of %d feeders of partitions this worker did not own throughout", len(lost))
            await read_back(plan)
            ownership.taken_over(plan)

    async def read_back(plan: TakeOver) -> None:
        for table in (state_table, forecast_table):
            table.keep_recovered(plan.kept)  # records of lost partitions go, and new ones are read anew
        if not plan.new:
            return
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        for table in (state_table, forecast_table):
            # in a thread: the loop keeps serving timers and the metrics while whole partitions are read
            records = await patient.run("read back state", lambda t=table: loop.run_in_executor(
                None, reader.read, t.topic, plan.new))
            table.recovered.update(records)
        took = time.perf_counter() - started
        metrics.RECOVERY_SECONDS.observe(took)
        log.info("read back the state of partitions %s: %d state and %d forecast records in %.2f s",
                 sorted(plan.new), len(state_table.recovered), len(forecast_table.recovered), took)

    @app.agent(readings, name="score-readings")
    async def score_readings(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.max_batch_messages, within=settings.batch_within_seconds):
            gaps.start_batch(app.consumer_generation_id)
            try:
                await take_partitions_over()
                admitted = []
                for event in events:
                    msg = event.message
                    if gaps.admit(msg.partition, msg.offset):
                        admitted.append((event.value, msg.partition, msg.offset))
                await gaps.rewind()
                metrics.MESSAGES_PROCESSED.inc(len(events))
                now_ms = wall_clock_ms()  # one clock per batch: a reading beyond it plus the tolerance is a wrong clock
                for chunk in chunks_by_bytes(admitted, settings.max_batch_bytes):
                    await score_chunk(chunk, now_ms)
            finally:
                gaps.end_batch()

    @app.agent(forecasts, name="keep-forecasts")
    async def keep_forecasts(stream: faust.StreamT) -> None:
        async for events in stream.take_events(200, within=0.5):
            await take_partitions_over()
            values = [e.value for e in events]
            await patient.run("decode forecasts", lambda: scorer.accept_forecasts(values))
            try:  # durable before Faust acknowledges the take, as the readings' state
                await forecast_table.flush()
            except DeliveryError as exc:
                log.critical("stopping the worker: %s", exc)  # crash-only, as in score_chunk
                os._exit(70)

    @app.timer(interval=settings.model_poll_seconds)
    async def reload_model() -> None:
        scorer.maybe_reload_model()

    @app.timer(interval=5.0)
    async def report_sizes() -> None:
        metrics.FEEDERS_TRACKED.set(scorer.feeders_tracked)
        metrics.METERS_TRACKED.set(scorer.meters_tracked)
        metrics.FORECASTS_TRACKED.set(scorer.forecasts_tracked)
        metrics.INCIDENTS_TRACKED.set(scorer.incidents.open_count)
        arrivals.flush_due()  # what was held back is told even when no batch follows

    @app.timer(interval=5.0)
    async def reseek_stalled_partitions() -> None:
        await gaps.unstall(active=not app.rebalancing and app.consumer.flow_active)

    app.wattsup_scorer = scorer  # type: ignore[attr-defined]
    return app
