"""A whole-box power cut: `kill -9` every process of a running demo, broker included, and start the
demo again on the same var dirs. It resumes with nothing lost or duplicated: every reading the
(deterministic) simulated fleet produced up to where the topic ends is on the readings topic, the
worker consumes all of it, the anomalies on the topic are exactly those of an uninterrupted run of
the engine over the same messages, none twice, and the dashboard holds the same number.

The forecaster is left out: its forecasts depend on when its runs happen, which no two runs share,
and the anomalies of readings with a forecast depend on it; without it the engine's answer depends
on the readings alone, so the crashed run can be compared with an uninterrupted one exactly."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import wattsup.demo
from foundation.kafka_settings import KafkaConnection, TopicNames
from readings.columns import ReadingColumns, decode_into
from readings.history import read_readings, resume_point_ms
from schemas.reading_encoder import delivery_slots, epoch_ms
from schemas.serde import SingleObjectSerde
from simulation.fleet import FleetConfig, iter_fleet_blocks
from stream_processors.scoring import StreamScorer
from tests.stream_processors.scoring_fleet import fresh_tables
from tests.stream_processors.stream_checks import read_topic
from tests.waiting import wait_until
from tests.wattsup.demo_harness import RunningDemo, demo_environment

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)


class _Kafka:  # the shape read_topic expects
    def __init__(self, connection: KafkaConnection) -> None:
        self.connection = connection


def _fleet_until(start_ms: int, meters: int, until_ms: int) -> set[tuple[str, int]]:
    """(meter, timestamp) of every reading the demo's fleet delivers up to the slot ``until_ms``."""
    cfg = FleetConfig(meters=meters, interval=timedelta(minutes=15), days=0, seed=42,
                      start=datetime.fromtimestamp(start_ms / 1000, UTC))
    keys: set[tuple[str, int]] = set()
    for block in iter_fleet_blocks(cfg):
        frame = block.readings
        stamps = epoch_ms(frame["timestamp"])
        due = delivery_slots(stamps) <= until_ms
        keys.update(zip(frame["meter_id"][due], stamps[due].tolist()))
        if not due.all():
            return keys
    return keys


METERS = 100
"""Two feeders of 50 meters: more than one readings partition, so the resume point spans partitions."""


def _uninterrupted(model_dir: Path, messages: list) -> set[tuple[str, int, str]]:
    """(meter, timestamp, severity) of the anomalies one uninterrupted engine finds in ``messages``
    (each partition in offset order; a reading sent again is a duplicate to it as to the worker)."""
    serde = SingleObjectSerde()
    engine = StreamScorer(model_dir, serde)
    engine.attach_tables(*fresh_tables())
    found: set[tuple[str, int, str]] = set()
    ordered = sorted(messages, key=lambda m: (m.partition(), m.offset()))
    for start in range(0, len(ordered), 50):
        columns = ReadingColumns()
        for m in ordered[start:start + 50]:
            decode_into(columns, serde, m.value(), "reference")
        result = engine.process(columns)
        engine.persist(result.touched_feeders)
        found |= {(a["meter_id"], a["timestamp"], a["severity"]) for a in result.anomalies}
    return found


def test_a_demo_killed_whole_resumes_with_nothing_lost_or_duplicated(tmp_path, monkeypatch, trained_model_dir):
    env = demo_environment(tmp_path, trained_model_dir, meters=METERS)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    services = wattsup.demo.demo_services
    monkeypatch.setattr(wattsup.demo, "demo_services",
                        lambda *args: [s for s in services(*args) if s.name != "forecaster"])
    running = RunningDemo.start(env)
    try:
        scored = lambda: running.metric("stream", "wattsup_stream_readings_processed_total") or 0  # noqa: E731
        wait_until(lambda: scored() > 3000 and (running.api("/api/v1/anomalies?limit=1") or {}).get("total"),
                   timeout=300, poll=1, what="the demo scoring and storing anomalies")
        running.kill_everything()
        log.info("power cut after %d readings scored", scored())

        running = RunningDemo.start(env)  # `make demo` again, on the same var dirs
        connection = KafkaConnection(bootstrap_servers=running.demo.node.bootstrap_servers)
        topics = TopicNames()
        wait_until(lambda: scored() > 2000, timeout=300, poll=1, what="the restarted worker scoring")
        running.stop_simulator()
        readings = 'topic="wattsup.readings"'  # only the worker's group commits on it
        wait_until(lambda: running.metric("lag-exporter", "wattsup_kafka_consumer_committed_offset", readings) ==
                   running.metric("lag-exporter", "wattsup_kafka_topic_end_offset", readings),
                   timeout=240, poll=2, what="the worker through the whole readings topic")

        # Nothing lost: every reading the fleet delivers up to where the topic ends is on it.
        stored = json.loads(Path(env["WATTSUP_DEMO_LOG_DIR"], "simulator.json").read_text())
        end = resume_point_ms(connection, topics.readings)
        on_topic = read_readings(connection, topics.readings)
        keys = list(zip(on_topic["meter_id"], epoch_ms(on_topic["timestamp"]).tolist()))
        expected = _fleet_until(stored["start_ms"], METERS, end)
        assert expected <= set(keys), f"{len(expected - set(keys))} readings of the fleet are not on the topic"
        resent = len(keys) - len(set(keys))  # the resume slot is sent again: recognised as duplicates

        # Nothing duplicated: no reading is flagged twice, on the topic or in the dashboard.
        anomalies = read_topic(_Kafka(connection), topics.anomalies)
        serde = SingleObjectSerde()
        records = [serde.decode(m.value(), raw_timestamps=True)[1] for m in anomalies]
        anomaly_keys = [(r["meter_id"], r["timestamp"]) for r in records]
        assert anomaly_keys and len(anomaly_keys) == len(set(anomaly_keys)), "an anomaly was emitted twice"
        # ... and exactly what an uninterrupted run of the engine finds in the same messages
        reference = _uninterrupted(trained_model_dir, read_topic(_Kafka(connection), topics.readings))
        assert {(r["meter_id"], r["timestamp"], r["severity"]) for r in records} == reference
        wait_until(lambda: (running.api("/api/v1/anomalies?limit=1") or {}).get("total") == len(anomaly_keys),
                   timeout=120, what="the dashboard storing every anomaly once")
        print(f"\npower cut: {len(set(keys))} distinct readings on the topic ({resent} sent again after the restart), "
              f"all {len(expected)} of the fleet up to {datetime.fromtimestamp(end / 1000, UTC):%Y-%m-%d %H:%M}; "
              f"{len(anomaly_keys)} anomalies, none twice, equal to an uninterrupted run's; the dashboard holds "
              f"the same number")
    finally:
        running.stop()
