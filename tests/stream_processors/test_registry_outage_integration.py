"""A stream worker whose schema registry is away waits for it and goes on: no crash, no message lost
or dead-lettered, a few log lines."""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from confluent_kafka import Producer

from deploy.kafka.launcher import free_port
from schemas.reading_encoder import feeder_batches
from schemas.registry import RegistrySerde
from schemas.serde import METER_READING_BATCH
from simulation.fleet import FleetConfig, simulate_fleet
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


class FakeRegistry:
    """The few Confluent Schema Registry calls RegistrySerde makes, on a fixed port that can go away.

    Not Apicurio: its in-memory store would forget the ids over a restart, and this test is about the
    worker's side of an outage (connections refused), which needs a registry that comes back the same.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.schemas: dict[str, int] = {}
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                schema = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["schema"]
                schema_id = registry.schemas.setdefault(schema, len(registry.schemas) + 1)
                subject = self.path.split("/")[2]
                self._answer({"id": schema_id, "subject": subject, "version": 1, "schema": schema})

            def do_GET(self) -> None:  # noqa: N802
                found = re.match(r"/schemas/ids/(\d+)", self.path)
                by_id = {i: s for s, i in registry.schemas.items()}
                if not found or int(found.group(1)) not in by_id:
                    self.send_error(404)
                    return
                self._answer({"schema": by_id[int(found.group(1))]})

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_worker_waits_for_the_schema_registry_instead_of_crashing(kafka, stream_workers, trained_model_dir):
    registry = FakeRegistry(free_port())
    registry.start()
    topics = kafka.fresh_topics(partitions=2)
    fleet = simulate_fleet(FleetConfig(meters=40, days=3, interval=timedelta(hours=1), seed=77)).readings
    serde = RegistrySerde(registry.url)
    producer = Producer(kafka.connection.confluent_config())
    for batch in feeder_batches(fleet):
        producer.produce(topics.readings, serde.encode(METER_READING_BATCH, batch), batch["feeder_id"].encode())
    assert producer.flush(30) == 0
    registry.stop()  # the worker starts while the registry is away: every schema lookup fails

    worker = stream_workers.start(topics, trained_model_dir, app_id=f"reg-outage-{os.urandom(3).hex()}",
                                  env={"WATTSUP_KAFKA_SCHEMA_REGISTRY_URL": registry.url})
    wait_until(lambda: "cannot decode readings" in worker.log_path.read_text(), timeout=120,
               what="the worker saying it waits for the registry")
    assert worker.process.poll() is None and worker.metric("wattsup_stream_readings_processed_total") == 0

    registry.start()  # back on the same address: the waiting batch goes on
    worker.wait_for("wattsup_stream_readings_processed_total", len(fleet), timeout=180)
    assert worker.process.poll() is None  # never restarted
    assert worker.metric("wattsup_stream_dead_letters_total") == 0  # a good message is never dead-lettered
    log = worker.log_path.read_text()
    assert "Traceback" not in log and "crashed" not in log.lower(), log[-3000:]
    about_registry = [line for line in log.splitlines() if "schema registry" in line]
    assert 1 <= len(about_registry) <= 6, about_registry  # a line a minute at most, and the recovery
