"""Two ``wattsup dashboard`` replicas on one PostgreSQL database, ingesting as one consumer group; one is killed.

Each record is stored once, by the replica that owns its partition; every replica's live view
(Server-Sent Events) shows every new anomaly, and the readings of a watched meter, whichever replica
stored them (PostgreSQL LISTEN/NOTIFY); after ``kill -9`` of one replica in the middle of its ingest,
the other takes its partitions over from the offsets stored in the database, and nothing is lost or
stored twice: the survivor's live view shows every anomaly exactly once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from confluent_kafka import Producer
from sqlalchemy import create_engine, func, select

from dashboard.models import Anomaly, ConsumerOffset, Reading
from deploy.kafka.launcher import free_port
from foundation.kafka_clients import producer_config
from readings.producer import ReadingProducer
from schemas.partitioning import partition_for
from schemas.serde import ANOMALY, SingleObjectSerde
from tests.dashboard.conftest import QUARTER, T0, anomaly_record
from tests.stream_processors.stream_checks import end_offsets
from tests.waiting import stop_process, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
TOPIC_PARTITIONS = 4 * PARTITIONS  # anomalies, readings, forecasts, incidents


@dataclass(eq=False)
class Replica:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of the metric's samples whose labels contain ``labels`` (0 if absent or not answering)."""
        try:
            text = urllib.request.urlopen(f"{self.base}/metrics", timeout=2).read().decode()
        except OSError:
            return 0.0
        return sum(float(v) for lab, v in re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M) if labels in lab)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=2).json().get("ingest") == "following"
        except (httpx.HTTPError, ValueError):
            return False


@dataclass
class LiveView:
    """One browser's event stream (``/api/v1/events?meter_id=``), read in a thread."""

    replica: Replica
    meter_id: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def start(self) -> LiveView:
        threading.Thread(target=self._listen, daemon=True).start()
        return self

    def _listen(self) -> None:
        try:
            with httpx.stream("GET", f"{self.replica.base}/api/v1/events", params={"meter_id": self.meter_id},
                              timeout=httpx.Timeout(5, read=None)) as response:
                event = None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event:
                        self.events.append((event, json.loads(line.split(":", 1)[1])))
        except httpx.HTTPError:  # the replica was killed, or the test is over
            pass

    def anomaly_ids(self) -> list[int]:
        return [data["id"] for event, data in list(self.events) if event == "anomaly"]

    def reading_times(self) -> set[str]:
        return {data["timestamp"] for event, data in list(self.events) if event == "reading"}


def start_replica(kafka, topics, database_url: str, tmp_path: Path, name: str) -> Replica:
    port = free_port()
    env = {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
           "WATTSUP_DASHBOARD_DATABASE_URL": database_url, "WATTSUP_DASHBOARD_READ_PUBLIC": "true",
           "WATTSUP_DASHBOARD_INGEST_SESSION_TIMEOUT_MS": "6000",  # the broker's minimum: a dead replica is noticed fast
           "WATTSUP_DASHBOARD_CONSUMER_BATCH": "200",  # many small transactions: the kill lands among them
           "WATTSUP_DASHBOARD_MODEL_DIR": str(tmp_path / "models"), "WATTSUP_DASHBOARD_SUMMARY_SECONDS": "1"}
    log_path = tmp_path / f"{name}.log"
    process = subprocess.Popen([sys.executable, "-m", "wattsup.cli", "dashboard", "--port", str(port)], env=env,
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return Replica(process, port, log_path)


def produce_anomalies(kafka, topic: str, records: list[dict[str, Any]]) -> None:
    """As the stream worker writes them: keyed by feeder, murmur2, so a feeder's anomalies share its partition."""
    producer, serde = Producer(producer_config(kafka.connection)), SingleObjectSerde()
    for r in records:
        producer.produce(topic, serde.encode(ANOMALY, r), r["feeder_id"].encode())
    assert producer.flush(30) == 0


def produce_readings(kafka, topics, meters: dict[str, str], start: int, steps: int) -> int:
    rows = [{"timestamp": pd.Timestamp(start + i * QUARTER, unit="ms", tz="UTC"), "meter_id": m, "feeder_id": f,
             "kwh": 0.5 + i / 1000, "interval_seconds": 900} for i in range(steps) for m, f in meters.items()]
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(pd.DataFrame(rows))  # single-reading messages: one Kafka message each
    assert producer.summary.ok and producer.summary.sent == len(rows)
    return len(rows)


def test_two_replicas_store_each_record_once_show_every_anomaly_live_and_survive_a_kill(
        kafka, postgres_database, tmp_path):
    topics = kafka.fresh_topics(partitions=PARTITIONS)
    database_url = postgres_database()
    feeders = [f"F{i}" for i in range(16)]
    by_partition = {p: [f for f in feeders if partition_for(f, PARTITIONS) == p] for p in range(PARTITIONS)}
    assert all(by_partition.values()), by_partition  # the feeders cover every partition
    meters = {f"M{i:02d}": feeders[i % len(feeders)] for i in range(32)}
    # The range assignor gives one replica partitions 0-1 and the other 2-3 of every topic: a meter of
    # partition 0 and one of partition 3 are stored by different replicas.
    watched = [next(m for m, f in meters.items() if partition_for(f, PARTITIONS) == p) for p in (0, 3)]

    a = start_replica(kafka, topics, database_url, tmp_path, "a")
    b = start_replica(kafka, topics, database_url, tmp_path, "b")
    try:
        wait_until(lambda: a.healthy() and b.healthy(), timeout=120, what="both replicas following")
        wait_until(lambda: (a.metric("wattsup_dashboard_ingest_partitions_owned"),
                            b.metric("wattsup_dashboard_ingest_partitions_owned"))
                   == (TOPIC_PARTITIONS / 2, TOPIC_PARTITIONS / 2), timeout=60, what="the partitions split evenly")
        views = {(r, m): LiveView(r, m).start() for r in (a, b) for m in watched}
        wait_until(lambda: a.metric("wattsup_dashboard_sse_clients") == 2 == b.metric("wattsup_dashboard_sse_clients"),
                   what="the live views connected")

        # 1. both alive: every record stored once, every live view shows every anomaly and its meter's readings
        first = [anomaly_record(m, T0 + i * QUARTER, feeder=f) for i in range(2) for m, f in meters.items()]
        produce_anomalies(kafka, topics.anomalies, first)
        produce_readings(kafka, topics, meters, T0, steps=3)
        with httpx.Client(base_url=a.base) as api:
            wait_until(lambda: api.get("/api/v1/anomalies").json()["total"] == len(first), what="first anomalies")
            stored_ids = {x["id"] for x in api.get("/api/v1/anomalies", params={"limit": 1000}).json()["items"]}
        for view in views.values():
            wait_until(lambda view=view: set(view.anomaly_ids()) == stored_ids, what="every anomaly in every live view")
            wait_until(lambda view=view: len(view.reading_times()) == 3, what="the watched meter's readings, live")
            assert len(view.anomaly_ids()) == len(stored_ids)  # each once
        stored_by = [r.metric("wattsup_dashboard_records_ingested_total", f'topic="{topics.anomalies}"') for r in (a, b)]
        assert all(stored_by) and sum(stored_by) == len(first)  # each replica stored its share, once
        assert a.metric("wattsup_dashboard_feed_notifications_total", 'origin="other"') > 0
        assert b.metric("wattsup_dashboard_feed_notifications_total", 'origin="other"') > 0

        # 2. a backlog arrives; one replica is killed in the middle of storing it; more arrives after the kill
        second = [anomaly_record(m, T0 + (10 + i) * QUARTER, feeder=f) for i in range(2) for m, f in meters.items()]
        readings_before = b.metric("wattsup_dashboard_records_ingested_total", f'topic="{topics.readings}"')
        backlog = produce_readings(kafka, topics, meters, T0 + 10 * QUARTER, steps=150)
        produce_anomalies(kafka, topics.anomalies, second)
        wait_until(lambda: b.metric("wattsup_dashboard_records_ingested_total", f'topic="{topics.readings}"')
                   > readings_before, poll=0.05, what="b storing the backlog")
        os.killpg(b.process.pid, 9)
        b.process.wait()
        third = [anomaly_record(m, T0 + (20 + i) * QUARTER, feeder=f) for i in range(2) for m, f in meters.items()]
        produce_anomalies(kafka, topics.anomalies, third)

        # 3. the survivor takes every partition over from the stored offsets
        wait_until(lambda: a.metric("wattsup_dashboard_ingest_partitions_owned") == TOPIC_PARTITIONS, timeout=60,
                   what="a owning every partition")
        total_anomalies = len(first) + len(second) + len(third)
        with httpx.Client(base_url=a.base) as api:
            wait_until(lambda: api.get("/api/v1/anomalies").json()["total"] == total_anomalies, timeout=60,
                       what="every anomaly stored")
        engine = create_engine(database_url)
        try:
            wait_until(lambda: _count(engine, Reading) == len(meters) * 3 + backlog, timeout=60,
                       what="every reading stored")
            with engine.connect() as connection:
                keys = connection.execute(select(Anomaly.meter_id, Anomaly.timestamp_ms)).all()
                all_ids = set(connection.scalars(select(Anomaly.id)))
                offsets = {(r.topic, r.partition): r.next_offset for r in connection.execute(select(ConsumerOffset))}
        finally:
            engine.dispose()
        assert len(keys) == len(set(keys)) == total_anomalies
        assert offsets == end_offsets(kafka, [topics.anomalies, topics.readings, topics.forecasts])
        # the survivor's live view: every anomaly, whichever replica stored it, before or after the kill, once each
        for meter in watched:
            view = views[(a, meter)]
            wait_until(lambda view=view: set(view.anomaly_ids()) == all_ids, timeout=30,
                       what="every anomaly in the survivor's live view")
            assert len(view.anomaly_ids()) == total_anomalies
    finally:
        stop_process(a.process, 30)
        stop_process(b.process, 5)
    assert a.process.returncode == 0, a.log_path.read_text()[-3000:]


def _count(engine, model) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(model))
