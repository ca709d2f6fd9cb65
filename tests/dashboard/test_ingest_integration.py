"""The dashboard on the real broker: exactly-once storage, resume after restart, ingest endpoint, sensitivity, SSE."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn
from confluent_kafka import Consumer, Producer, TopicPartition
from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.auth import create_token
from dashboard.settings import DashboardSettings
from deploy.kafka.launcher import free_port
from foundation.sensitivity import SensitivityWatcher
from readings.producer import ReadingProducer
from schemas.partitioning import partition_for
from schemas.serde import ANOMALY, DEAD_LETTER, FORECAST, METER_READING, SingleObjectSerde
from tests.dashboard.conftest import QUARTER, T0, anomaly_record
from tests.stream_processors.stream_checks import end_offsets
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

serde = SingleObjectSerde()


def _produce_anomalies(kafka, topics, records: list[dict[str, Any]]) -> None:
    producer = Producer({**kafka.connection.confluent_config(), "enable.idempotence": True, "acks": "all",
                         "partitioner": "murmur2_random"})
    for r in records:
        producer.produce(topics.anomalies, serde.encode(ANOMALY, r), r["meter_id"].encode())
    assert producer.flush(30) == 0


def _produce_readings(kafka, topics, meters: list[tuple[str, str]], start: int, steps: int) -> int:
    """Head-end batches for the first half of the meters, single readings for the rest; returns how many."""
    rows = [{"timestamp": pd.Timestamp(start + i * QUARTER, unit="ms", tz="UTC"), "meter_id": m, "feeder_id": f,
             "kwh": 0.5 + i / 100, "interval_seconds": 900} for i in range(steps) for m, f in meters]
    frame = pd.DataFrame(rows)
    half = frame["meter_id"].isin([m for m, _ in meters[: len(meters) // 2]])
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(frame[half], batch_by_feeder=True)
        producer.send_frame(frame[~half])
    assert producer.summary.ok and producer.summary.sent == len(frame)
    return len(frame)


def _stored_offsets(client) -> dict[tuple[str, int], int]:
    """The next offset per partition the dashboard stored with its rows (its resume point)."""
    from sqlalchemy import select

    from dashboard.models import ConsumerOffset

    with client.app.state.service.sessions() as session:
        return {(o.topic, o.partition): o.next_offset for o in session.scalars(select(ConsumerOffset))
                if o.next_offset > 0}


def _produce_forecast(kafka, topics, meter: str, feeder: str, generated: int) -> None:
    producer = Producer(kafka.connection.confluent_config())
    value = serde.encode(FORECAST, {"meter_id": meter, "feeder_id": feeder, "generated_at": generated,
                                    "model_version": "seasonal-naive", "interval_seconds": 900,
                                    "horizon": [{"timestamp": T0 + i * QUARTER, "expected": 1.0, "lower": 0.5,
                                                 "upper": 1.5} for i in range(8)]})
    producer.produce(topics.forecasts, value, meter.encode(), partition=partition_for(feeder, topics.partitions))
    assert producer.flush(30) == 0


def _metric(client: TestClient, name: str, topic: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{topic="{topic}"}}'):
            return float(line.split()[-1])
    return 0.0


def _read_topic(kafka, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": f"check-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    # and nothing more arrives
    messages += [m for m in consumer.consume(100, timeout=1.0) if m.error() is None]
    consumer.close()
    return messages


@pytest.fixture
def settings_for(kafka, tmp_path):
    def make(topics, **overrides) -> DashboardSettings:
        fields = {"database_url": f"sqlite:///{tmp_path / 'wattsup.db'}", "consume": True, "kafka": kafka.connection,
                  "topics": topics, "model_dir": tmp_path / "models", **overrides}
        return DashboardSettings(**fields)
    return make


def test_stored_exactly_once_and_resumes_after_restart(kafka, settings_for):
    topics = kafka.fresh_topics(partitions=2)
    meters = [(f"M{i:03d}", f"F{i % 3}") for i in range(12)]
    first = [anomaly_record(m, T0 + i * QUARTER, feeder=f) for i in range(5) for m, f in meters[:6]]
    _produce_anomalies(kafka, topics, first)
    n_readings = _produce_readings(kafka, topics, meters, T0, steps=20)
    _produce_forecast(kafka, topics, "M000", "F0", T0)
    settings = settings_for(topics)

    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == len(first), what="first anomalies")
        wait_until(lambda: _metric(client, "wattsup_dashboard_records_ingested_total", topics.readings) == n_readings,
              what="readings stored")
        wait_until(lambda: client.get("/api/v1/series", params={"meter_id": "M000"}).json()["forecast"], what="forecast")
        assert client.get("/api/v1/summary").json()["meters"] == 12
        assert len(client.get("/api/v1/series", params={"meter_id": "M011"}).json()["readings"]) == 20
        first_consumed = _metric(client, "wattsup_dashboard_messages_consumed_total", topics.anomalies)
        assert first_consumed == len(first)

    # While the service is down: new anomalies, some re-deliveries of stored ones, more readings.
    second = [anomaly_record(m, T0 + 10 * QUARTER, feeder=f) for m, f in meters]
    redelivered = first[:5]
    _produce_anomalies(kafka, topics, second + redelivered)
    more_readings = _produce_readings(kafka, topics, meters, T0 + 20 * QUARTER, steps=4)
    _produce_readings(kafka, topics, meters[:3], T0, steps=2)  # re-sent old readings

    with TestClient(create_app(settings)) as client:
        wait_until(lambda: _metric(client, "wattsup_dashboard_messages_consumed_total", topics.anomalies)
              == len(second) + len(redelivered), what="second run to consume the new anomaly messages")
        wait_until(lambda: _metric(client, "wattsup_dashboard_records_ingested_total", topics.readings) == more_readings,
              what="new readings stored")
        # nothing extra can arrive once the stored offsets reach every partition's end
        ingested = [topics.anomalies, topics.readings, topics.forecasts]
        wait_until(lambda: _stored_offsets(client) == end_offsets(kafka, ingested), what="ingest at the topics' ends")
        body = client.get("/api/v1/anomalies", params={"limit": 1000}).json()
        assert body["total"] == len(first) + len(second)
        keys = [(a["meter_id"], a["timestamp"]) for a in body["items"]]
        assert len(keys) == len(set(keys))
        # resumed from the stored offsets: the second run read only what was produced while it was down
        assert _metric(client, "wattsup_dashboard_messages_consumed_total", topics.anomalies) == \
            len(second) + len(redelivered)
        assert _metric(client, "wattsup_dashboard_records_ingested_total", topics.anomalies) == len(second)
        assert len(client.get("/api/v1/series", params={"meter_id": "M000", "since": "2020-01-01T00:00:00Z"})
                   .json()["readings"]) == 24

    from sqlalchemy import create_engine, func, select

    from dashboard.models import ConsumerOffset, Reading

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Reading)) == n_readings + more_readings
        stored = {(r.topic, r.partition): r.next_offset for r in conn.execute(select(ConsumerOffset))}
    engine.dispose()
    consumer = Consumer({**kafka.connection.confluent_config(), "group.id": "offsets-check"})
    for (topic, partition), next_offset in stored.items():
        assert consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1] == next_offset
    consumer.close()
    assert {t for t, _ in stored} == {topics.anomalies, topics.readings, topics.forecasts}


def test_post_readings_produces_valid_ones_and_dead_letters_the_rest(kafka, settings_for):
    topics = kafka.fresh_topics(partitions=2)
    app = create_app(settings_for(topics))
    with TestClient(app) as client:
        token = create_token(app.state.service.sessions, "gateway")
        auth = {"Authorization": f"Bearer {token}"}
        response = client.post("/api/v1/readings", headers=auth, json=[
            {"meter_id": "IOT-1", "timestamp": "2026-11-25T08:00:00Z", "kwh": 0.42, "feeder_id": "F9"},
            {"meter_id": "IOT-1", "timestamp": "2026-11-25T08:15:00Z", "kwh": "NaN"},
            {"meter_id": "IOT-2", "timestamp": "2026-11-25T08:00:00Z", "kwh": 1.5, "interval_seconds": 3600},
            {"meter_id": "IOT-3", "kwh": "many"},
        ])
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["accepted"] == 2
        assert [(r["index"], sorted(e["field"] for e in r["errors"])) for r in body["rejected"]] == [
            (1, ["kwh"]), (3, ["kwh", "timestamp"])]
        single = client.post("/api/v1/readings", headers=auth,
                             json={"meter_id": "IOT-4", "timestamp": "2026-11-25T08:00:00", "kwh": 0})
        assert single.status_code == 202 and single.json() == {"accepted": 1, "rejected": [], "duplicates": []}
        all_bad = client.post("/api/v1/readings", headers=auth, json=[{"meter_id": "X"}])
        assert all_bad.status_code == 422
        assert all_bad.json()["accepted"] == 0 and all_bad.json()["rejected"][0]["index"] == 0

        readings = _read_topic(kafka, topics.readings, 3)
        decoded = sorted(((serde.decode(m.value(), raw_timestamps=True), m.key()) for m in readings),
                         key=lambda d: d[0][1]["meter_id"])
        assert [(name, r["meter_id"], r["feeder_id"], r["energy_kwh"], r["interval_seconds"], key)
                for (name, r), key in decoded] == [
            (METER_READING, "IOT-1", "F9", 0.42, 900, b"F9"),
            (METER_READING, "IOT-2", "IOT-2", 1.5, 3600, b"IOT-2"),
            (METER_READING, "IOT-4", "IOT-4", 0.0, 900, b"IOT-4"),
        ]
        by_key = {m.key(): m.partition() for m in readings}
        assert by_key[b"F9"] == partition_for("F9", topics.partitions)  # murmur2, as Faust expects
        decoded_letters = [serde.decode(m.value()) for m in _read_topic(kafka, topics.dead_letters, 3)]
        assert [name for name, _ in decoded_letters] == [DEAD_LETTER] * 3
        letters = [record for _, record in decoded_letters]
        assert all(d["source"] == "http:/api/v1/readings" for d in letters)
        reasons = sorted(d["reason"] for d in letters)
        assert reasons[0].startswith("reading 0: ") and "meter_id" not in reasons[0]
        assert "kwh" in reasons[1] and "timestamp" in reasons[2]
        assert json.loads(next(d for d in letters if "many" in d["raw_text"])["raw_text"])["kwh"] == "many"
        # and the service's own ingest stores what it produced
        wait_until(lambda: client.get("/api/v1/series", params={"meter_id": "IOT-1"}).json()["readings"],
              what="posted reading stored")


def test_sensitivity_writes_reach_the_control_topic(kafka, settings_for):
    topics = kafka.fresh_topics(partitions=1)
    app = create_app(settings_for(topics, consume=False))
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {create_token(app.state.service.sessions, 'ops')}"}
        bad = client.put("/api/v1/sensitivity", headers=auth, json={"value": 50})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "value"]
        assert client.put("/api/v1/sensitivity", headers=auth, json={"value": 2.0}).json() == {"fleet": 2.0, "meters": {}}
        assert client.put("/api/v1/sensitivity", headers=auth, json={"value": 0.5, "meter_id": "M7"}).json() == {
            "fleet": 2.0, "meters": {"M7": 0.5}}
        assert client.put("/api/v1/sensitivity", headers=auth, json={"value": 3.0, "meter_id": "M8"}).status_code == 200
        assert client.delete("/api/v1/sensitivity/M8", headers=auth).json() == {"fleet": 2.0, "meters": {"M7": 0.5}}

    # What a stream worker sees: the watcher every worker runs, reading the control topic from the start.
    watcher = SensitivityWatcher(kafka.connection, topics, poll_seconds=0.2)
    watcher.start()
    try:
        wait_until(lambda: watcher.updates_applied >= 4, what="control records")
        assert watcher.fleet == 2.0 and watcher.per_meter == {"M7": 0.5}
        assert watcher.for_meter("M7") == 0.5 and watcher.for_meter("M8") == 2.0
    finally:
        watcher.stop()
    # and a fresh dashboard reads the settings back from the topic
    with TestClient(create_app(settings_for(topics, consume=False))) as client:
        wait_until(lambda: client.get("/api/v1/sensitivity").json() == {"fleet": 2.0, "meters": {"M7": 0.5}},
              what="sensitivity read back")


def test_live_events_stream_new_anomalies_and_a_meters_readings(kafka, settings_for):
    """Reading is not public here: the browser's session cookie opens the stream, as EventSource sends it."""
    topics = kafka.fresh_topics(partitions=1)
    settings = settings_for(topics, summary_seconds=1.0, read_public=False)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: server.started, what="uvicorn start")
    wait_until(lambda: app.state.service.ingest.assigned.is_set(), what="ingest assignment")
    assert httpx.get(f"{base}/api/v1/events").status_code == 401
    login = httpx.post(f"{base}/api/v1/session",
                       json={"token": create_token(app.state.service.sessions, "browser")})
    cookies = {"wattsup_session": login.cookies["wattsup_session"]}
    events: list[tuple[str, dict]] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{base}/api/v1/events", params={"meter_id": "M1"}, cookies=cookies,
                          timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            connected.set()
            event = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event:
                    events.append((event, json.loads(line.split(":", 1)[1])))
                    kinds = {e for e, _ in events}
                    if {"anomaly", "reading", "summary"} <= kinds and sum(e == "summary" for e, _ in events) >= 2:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        assert connected.wait(15)
        wait_until(lambda: app.state.service.hub.clients == 1, what="subscriber registered")
        _produce_anomalies(kafka, topics, [anomaly_record("M1", T0, "CRITICAL")])
        _produce_readings(kafka, topics, [("M1", "F1"), ("M2", "F1")], T0, steps=2)
        listener.join(30)
        assert not listener.is_alive(), f"events so far: {events}"
        anomaly = next(d for e, d in events if e == "anomaly")
        assert anomaly["meter_id"] == "M1" and anomaly["severity"] == "CRITICAL" and isinstance(anomaly["id"], int)
        readings = [d for e, d in events if e == "reading"]
        assert {r["meter_id"] for r in readings} == {"M1"}  # only the meter asked for
        assert set(readings[0]) >= {"meter_id", "feeder_id", "timestamp", "kwh"}
        summary = next(d for e, d in events if e == "summary")
        assert set(summary) >= {"meters", "feeders", "readings_last_hour", "anomalies_24h"}
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "ingest": "following"}
        assert httpx.get(f"{base}/api/v1/summary", cookies=cookies).status_code == 200
    finally:
        server.should_exit = True
        thread.join(20)


def test_version_2_anomaly_without_forecast_and_a_version_1_one_are_both_stored(kafka, settings_for):
    """Through the broker and the Avro decoder: a version 2 anomaly no forecast covers (expected null,
    baseline set) keeps both as sent; one from a version 1 writer is stored with the new fields null."""
    from schemas.serde import SINGLE_OBJECT_MAGIC, SchemaCatalog, schemaless_encode

    topics = kafka.fresh_topics(partitions=1)
    _produce_anomalies(kafka, topics, [anomaly_record("V2", T0, expected=None, lower=None, upper=None, residual=None,
                                                      band_residual=None, baseline=0.6)])
    catalog = SchemaCatalog()
    v1 = next(w for w in catalog.by_fingerprint.values() if w.name == ANOMALY and w is not catalog.current[ANOMALY])
    old = {k: v for k, v in anomaly_record("V1", T0).items() if k not in ("band_residual", "baseline")}
    producer = Producer(kafka.connection.confluent_config())
    producer.produce(topics.anomalies, SINGLE_OBJECT_MAGIC + v1.fingerprint + schemaless_encode(v1, old), b"V1")
    assert producer.flush(30) == 0
    with TestClient(create_app(settings_for(topics))) as client:
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == 2, what="both anomalies stored")
        items = {a["meter_id"]: a for a in client.get("/api/v1/anomalies").json()["items"]}
    assert (items["V2"]["expected"], items["V2"]["residual"], items["V2"]["baseline"]) == (None, None, 0.6)
    assert (items["V1"]["expected"], items["V1"]["baseline"], items["V1"]["band_residual"]) == (1.0, None, None)


def test_undecodable_messages_are_counted_and_skipped(kafka, settings_for):
    topics = kafka.fresh_topics(partitions=1)
    raw = Producer(kafka.connection.confluent_config())
    raw.produce(topics.anomalies, b"not avro", b"M1")
    raw.produce(topics.anomalies, serde.encode(METER_READING, {  # a valid record of the wrong type
        "meter_id": "M1", "feeder_id": "F1", "timestamp": T0, "energy_kwh": 1.0, "interval_seconds": 900}), b"M1")
    raw.produce(topics.forecasts, b"\xc3\x01garbage!", b"M1")
    raw.produce(topics.readings, b"junk", b"F1")
    assert raw.flush(30) == 0
    _produce_anomalies(kafka, topics, [anomaly_record("M1", T0)])
    with TestClient(create_app(settings_for(topics))) as client:
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == 1, what="the good anomaly")
        wait_until(lambda: _metric(client, "wattsup_dashboard_records_undecodable_total", topics.anomalies) == 2,
              what="undecodable anomalies counted")
        assert _metric(client, "wattsup_dashboard_records_undecodable_total", topics.forecasts) == 1
        wait_until(lambda: _metric(client, "wattsup_dashboard_records_undecodable_total", topics.readings) == 1,
              what="undecodable reading counted")
        assert client.get("/healthz").json()["status"] == "ok"


def test_a_failed_transaction_is_retried_from_the_stored_offsets(kafka, settings_for, monkeypatch):
    import dashboard.ingest

    topics = kafka.fresh_topics(partitions=1)
    records = [anomaly_record(f"M{i}", T0) for i in range(20)]
    _produce_anomalies(kafka, topics, records)
    real_store = dashboard.ingest.store_batch
    failures = []

    def failing_once(session, batch):
        if not failures:
            failures.append(len(batch.anomalies))
            real_store(session, batch)  # the rows are written, then the transaction fails: all rolled back
            raise RuntimeError("injected: database went away mid-transaction")
        return real_store(session, batch)

    monkeypatch.setattr(dashboard.ingest, "store_batch", failing_once)
    monkeypatch.setattr(dashboard.ingest, "RETRY_SECONDS", 1.0)
    with TestClient(create_app(settings_for(topics))) as client:
        wait_until(lambda: failures, what="the injected failure")
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == len(records), what="retry to store all")
        assert client.get("/healthz").json() == {"status": "ok", "ingest": "following"}
        assert _metric(client, "wattsup_dashboard_records_ingested_total", topics.anomalies) == len(records)
        assert failures[0] > 0


def test_partitions_added_to_a_topic_later_are_followed(kafka, settings_for, monkeypatch):
    from confluent_kafka.admin import AdminClient, NewPartitions

    import dashboard.ingest

    monkeypatch.setattr(dashboard.ingest, "PARTITION_CHECK_SECONDS", 1.0)
    topics = kafka.fresh_topics(partitions=1)
    _produce_anomalies(kafka, topics, [anomaly_record("M1", T0)])
    with TestClient(create_app(settings_for(topics))) as client:
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == 1, what="first anomaly")
        admin = AdminClient(kafka.connection.confluent_config())
        for future in admin.create_partitions([NewPartitions(topics.anomalies, 3)]).values():
            future.result(30)
        producer = Producer(kafka.connection.confluent_config())
        for partition in (1, 2):
            record = anomaly_record(f"M{partition + 1}", T0)
            producer.produce(topics.anomalies, serde.encode(ANOMALY, record), record["meter_id"].encode(),
                             partition=partition)
        assert producer.flush(30) == 0
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == 3, what="anomalies on the new partitions")


def test_records_stamped_beyond_now_plus_the_tolerance_are_counted_not_stored(kafka, settings_for, caplog):
    """A meter with a wrong clock: its future anomaly and readings are refused (counted, logged in summary),
    the correct ones around them stored, and the stored readings survive the prune."""
    topics = kafka.fresh_topics(partitions=1)
    now = int(time.time() * 1000) // QUARTER * QUARTER
    future = now + 400 * 86_400_000
    _produce_anomalies(kafka, topics, [anomaly_record("GOOD", now - QUARTER), anomaly_record("CLOCK", future),
                                       anomaly_record("CLOCK2", future + QUARTER)])
    _produce_readings(kafka, topics, [("GOOD", "F1")], now - 20 * QUARTER, steps=20)
    _produce_readings(kafka, topics, [("CLOCK", "F1"), ("CLOCK2", "F1")], future, steps=30)
    with TestClient(create_app(settings_for(topics))) as client:
        wait_until(lambda: _metric(client, "wattsup_dashboard_messages_consumed_total", topics.readings) >= 2,
                   what="readings consumed")
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == 1, what="the good anomaly")
        wait_until(lambda: len(client.get("/api/v1/series", params={"meter_id": "GOOD"}).json()["readings"]) == 20,
                   what="the good readings")
        # the readings of the wrong clocks may still be on their way when the good ones are stored
        refused = f'wattsup_dashboard_records_refused_total{{reason="future",topic="{topics.readings}"}} 60.0'
        wait_until(lambda: refused in client.get("/metrics").text, what="the 60 future readings refused")
        metrics = client.get("/metrics").text
        assert f'wattsup_dashboard_records_refused_total{{reason="future",topic="{topics.anomalies}"}} 2.0' in metrics
        assert [m["meter_id"] for m in client.get("/api/v1/meters").json()["items"]] == ["GOOD"]
        assert client.get("/api/v1/summary").json()["latest_reading_at"] < "2100"
    refusals = [r for r in caplog.records if "did not store" in r.getMessage()]
    assert 1 <= len(refusals) <= 4, [r.getMessage() for r in refusals]  # summaries, not one line per record


def test_a_broker_that_is_not_there_at_start_is_waited_for_quietly_and_followed_once_up(tmp_path, caplog, capfd):
    """Nothing listens on the broker's address for over 30 s (the stream's sensitivity watcher gave up after
    30 s): the ingest and the sensitivity follower keep trying with backoff, the log holds a handful of lines
    (librdkafka alone wrote one every 50 ms), and once a broker starts there both catch up by themselves."""
    import logging

    from deploy.kafka.launcher import LocalKafkaNode
    from foundation.kafka_settings import KafkaConnection, TopicNames
    from foundation.sensitivity import publish_sensitivity
    from foundation.topics import ensure_topics

    caplog.set_level(logging.INFO)
    port = free_port()
    connection = KafkaConnection(bootstrap_servers=f"127.0.0.1:{port}")
    suffix = str(port)
    topics = TopicNames(readings=f"r-{suffix}", forecasts=f"f-{suffix}", anomalies=f"a-{suffix}",
                        dead_letters=f"d-{suffix}", control=f"c-{suffix}", partitions=1)
    settings = DashboardSettings(database_url=f"sqlite:///{tmp_path / 'wattsup.db'}", consume=True, kafka=connection,
                                 topics=topics, model_dir=tmp_path / "models")
    app = create_app(settings)
    node = None
    with TestClient(app) as client:
        ingest = app.state.service.ingest
        wait_until(lambda: ingest.waiting_since is not None and time.monotonic() - ingest.waiting_since > 35,
                   timeout=60, what="35 s of outage")
        assert client.get("/healthz").json()["ingest"] != "following"
        outage_lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
        stderr = capfd.readouterr().err
        assert "rdkafka" not in stderr, stderr[-2000:]  # librdkafka writes nothing to stderr itself
        assert 1 <= len(outage_lines) <= 6, [r.getMessage() for r in outage_lines]
        try:
            node = LocalKafkaNode(data_dir=tmp_path / "late-broker", port=port, controller_port=free_port(), heap="384m")
            node.start(timeout=120)
            ensure_topics(connection, topics)
            producer = Producer(connection.confluent_config())
            producer.produce(topics.anomalies, serde.encode(ANOMALY, anomaly_record("LATE", T0)), b"LATE")
            assert producer.flush(30) == 0
            publish_sensitivity(connection, topics, 2.5)
            wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == 1, timeout=90,
                       what="the anomaly stored after the broker came up")
            wait_until(lambda: client.get("/api/v1/sensitivity").json()["fleet"] == 2.5, timeout=60,
                       what="the sensitivity read after the broker came up")
            assert client.get("/healthz").json() == {"status": "ok", "ingest": "following"}
        finally:
            if node is not None:
                node.stop()
    print(f"outage log lines: {len(outage_lines)}:", *(r.getMessage()[:160] for r in outage_lines), sep="\n  ")
