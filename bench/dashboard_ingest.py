"""How fast the dashboard stores the readings topic, and how fast its read endpoints answer on that data.

Starts a throwaway Kafka broker (temp dir, free ports), writes a simulated fleet's history as
head-end batches (default 200 meters x 7 days of 15-minute readings, about 134,000 readings, the
demo's fleet), then starts the dashboard's ingest on a fresh SQLite database and times how long
it takes to store every reading, then times the page's read endpoints on the result.

    .venv/bin/python bench/dashboard_ingest.py [--meters 200] [--days 7]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.settings import DashboardSettings
from deploy.kafka.launcher import LocalKafkaNode, free_port
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topics import ensure_topics
from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--days", type=float, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        node = LocalKafkaNode(data_dir=Path(tmp) / "kafka", port=free_port(), controller_port=free_port(), heap="384m")
        node.start(timeout=120)
        try:
            connection = KafkaConnection(bootstrap_servers=node.bootstrap_servers)
            topics = TopicNames(partitions=4)
            ensure_topics(connection, topics)
            fleet = simulate_fleet(FleetConfig(meters=args.meters, days=args.days))
            with ReadingProducer(connection, topics) as producer:
                producer.send_frame(fleet.readings, batch_by_feeder=True)
            total = producer.summary.sent
            print(f"produced {total:,} readings as {producer.summary.records:,} head-end batches")

            settings = DashboardSettings(database_url=f"sqlite:///{tmp}/bench.db", kafka=connection, topics=topics,
                                         model_dir=Path(tmp) / "models")
            app = create_app(settings)
            started = time.perf_counter()
            with TestClient(app) as client:
                metrics = app.state.service.metrics.records_ingested.labels(topic=topics.readings)
                while metrics._value.get() < total:
                    time.sleep(0.1)
                    if time.perf_counter() - started > 600:
                        raise SystemExit(f"only {metrics._value.get():,.0f} of {total:,} stored after 600 s")
                seconds = time.perf_counter() - started
                print(f"stored {total:,} readings in {seconds:.1f} s ({total / seconds:,.0f} readings/s, "
                      "start-up and migrations included)")
                some_meter = fleet.readings["meter_id"].iloc[0]
                some_feeder = fleet.readings["feeder_id"].iloc[0]
                for path, params in (("/api/v1/summary", {}), ("/api/v1/meters", {}),
                                     ("/api/v1/anomalies", {"limit": 100}),
                                     ("/api/v1/series", {"meter_id": some_meter}),
                                     ("/api/v1/series", {"feeder_id": some_feeder})):
                    t = time.perf_counter()
                    for _ in range(5):
                        client.get(path, params=params).raise_for_status()
                    print(f"GET {path} {params or ''}: {(time.perf_counter() - t) / 5 * 1000:.0f} ms")
        finally:
            node.stop()


if __name__ == "__main__":
    main()
