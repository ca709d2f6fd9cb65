"""Stream throughput and latency: 100,000 meters through a real broker and the Faust worker.

Prints, from one run on one machine:

* the ceiling: a plain confluent-kafka consumer reading and decoding the same topic;
* Faust's ceiling: a bare Faust agent taking the same topic in the worker's batches and doing
  nothing with them (``bench/faust_ceiling.py``), the rate the worker would reach if its own work
  cost nothing;
* the WattsUp worker's end-to-end readings/s (consume, decode, features, one model call per
  micro-batch, state to the changelog, anomalies out);
* the naive rate: one ``score_samples`` call per reading, on the same features and model;
* the ratios between them;
* p50/p99 latency from produce to anomaly with readings paced at a fixed rate;
* the worker's peak memory (VmHWM).

Readings are daily, so every meter warms up within the run (the detector needs a day of a
meter's history before the model scores it) and the model path, not only the cold-start rules,
is what gets measured. Usage:

    .venv/bin/python bench/stream_throughput.py [--meters 100000] [--days 5] [--rate 10000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import numpy as np
from proc_memory import status_mib

from deploy.kafka.launcher import LocalKafkaNode, free_port
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topics import ensure_topics
from models.training import train_and_save
from readings.producer import ReadingProducer
from schemas.serde import METER_READING_BATCH, SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on a worker's endpoint (0 if it cannot be read).

    Only ``name`` is asked for (Prometheus' ``name[]`` filter): a full scrape renders a series per
    feeder, and at tens of thousands of feeders rendering them costs the worker more CPU than the
    bench may take from what it measures.
    """
    try:
        url = f"http://127.0.0.1:{port}/metrics?{urllib.parse.urlencode({'name[]': name})}"
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def plain_consumer_rate(connection: KafkaConnection, topic: str, expected: int) -> float:
    from confluent_kafka import Consumer

    serde = SingleObjectSerde()
    consumer = Consumer({**connection.confluent_config(), "group.id": f"ceiling-{os.urandom(3).hex()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    readings, started = 0, None
    while readings < expected:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error() is not None:
                continue
            started = started or time.perf_counter()
            name, record = serde.decode(msg.value(), raw_timestamps=True)
            readings += len(record["readings"]) if name == METER_READING_BATCH else 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return readings / elapsed


def faust_ceiling_rate(connection: KafkaConnection, topic: str, partitions: int, messages: int, transport: str,
                       timeout: float = 900.0) -> float:
    """Messages/s of a bare Faust agent taking the topic in the worker's batches (bench/faust_ceiling.py),
    with Faust's stock Kafka transport (``kafka``) or the worker's (``wattsup``)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("faust_ceiling.py")),
                           "--bootstrap", connection.bootstrap_servers, "--topic", topic,
                           "--partitions", str(partitions), "--messages", str(messages), "--transport", transport],
                          capture_output=True, text=True, timeout=timeout)
    found = re.search(r"messages (\d+) seconds ([\d.]+)", proc.stdout)  # after Faust's terminal codes
    if found is None:
        raise RuntimeError(f"the bare Faust agent gave no figure: {proc.stdout[-500:]} {proc.stderr[-2000:]}")
    # A topic the agent took in one batch spans 0 s at the printed millisecond resolution: the rate is
    # then at least the messages over one millisecond.
    return int(found.group(1)) / max(float(found.group(2)), 0.001)


def naive_rate(model, frame, n: int = 2000) -> tuple[float, float]:
    """Rows/s scoring one reading per model call vs one call for the same rows."""
    from detection.training import history_features

    X = history_features(frame.head(200_000)).matrix[:n]
    det = model.detector
    started = time.perf_counter()
    for row in X:
        det.anomaly_score(row.reshape(1, -1))
    per_event = len(X) / (time.perf_counter() - started)
    started = time.perf_counter()
    det.anomaly_score(X)
    batched = len(X) / (time.perf_counter() - started)
    return per_event, batched


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wattsup.cli", "stream"], env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_processed(ports: list[int], target: float, procs: list[subprocess.Popen],
                   timeout: float) -> tuple[float, float]:
    """(seconds from first to last reading processed, readings processed in that span), all workers."""
    deadline = time.monotonic() + timeout
    first_t = first_v = None
    v = 0.0
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited")
        v = sum(metric(p, "wattsup_stream_readings_processed_total")
                + metric(p, "wattsup_stream_duplicate_readings_total") for p in ports)
        now = time.perf_counter()
        if v > 0 and first_t is None:
            first_t, first_v = now, v
        if v >= target and v > first_v:
            return now - first_t, v - first_v
        if v >= target:
            raise RuntimeError("the worker processed everything between two polls: use more --meters or --days")
        time.sleep(0.1)  # a filtered scrape (see metric) is cheap, and the span is timed to a tenth of a second
    raise TimeoutError(f"worker processed {v} of {target} readings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10_000.0, help="Readings/s for the latency phase.")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="Stream workers sharing the partitions.")
    parser.add_argument("--meters-per-feeder", type=int, default=50,
                        help="Meters per head-end upload (one Kafka message per feeder and interval).")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wattsup-bench-"))
    node = LocalKafkaNode(data_dir=work / "kafka", port=free_port(), controller_port=free_port(), heap="1g")
    node.start(timeout=120)
    workers: list[subprocess.Popen] = []
    try:
        connection = KafkaConnection(bootstrap_servers=node.bootstrap_servers)
        topics = TopicNames(readings="bench.readings", anomalies="bench.anomalies", forecasts="bench.forecasts",
                            control="bench.control", dead_letters="bench.dlq", partitions=args.partitions)
        ensure_topics(connection, topics)

        print(f"simulating {args.meters:,} meters x {args.days} days (daily readings) ...", flush=True)
        fleet = simulate_fleet(FleetConfig(meters=args.meters, days=args.days, interval=timedelta(days=1), seed=7,
                                           missing_rate=0.0, late_rate=0.0, meters_per_feeder=args.meters_per_feeder))
        frame = fleet.readings
        history = simulate_fleet(FleetConfig(meters=2000, days=28, interval=timedelta(days=1), seed=8)).readings
        model_dir = work / "models"
        model = train_and_save(history, model_dir, source="bench history")

        with ReadingProducer(connection, topics) as producer:
            producer.send_frame(frame, batch_by_feeder=True)
        total = len(frame)
        print(f"produced {total:,} readings in {producer.summary.records:,} head-end messages", flush=True)

        ceiling = plain_consumer_rate(connection, topics.readings, total)

        ports = [free_port() for _ in range(args.workers)]
        for i, port in enumerate(ports):
            env = {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": node.bootstrap_servers,
                   **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
                   "WATTSUP_STREAM_APP_ID": "bench-stream", "WATTSUP_STREAM_DATA_DIR": str(work / f"stream-{i}"),
                   "WATTSUP_MODEL_DIR": str(model_dir), "WATTSUP_STREAM_METRICS_PORT": str(port),
                   "WATTSUP_STREAM_WEB_PORT": str(free_port())}
            workers.append(start_worker(env, work / f"worker-{i}.log"))
        seconds, processed = wait_processed(ports, total, workers, timeout=1800)
        agent_rate = processed / seconds
        scoring = sum(metric(p, "wattsup_stream_scoring_seconds_sum") for p in ports)
        emitted = sum(metric(p, "wattsup_stream_anomalies_total") for p in ports)
        # Batches, and the readings and messages they held, all counted by the workers over the whole
        # stream: the mean is the histogram's own sum over its count (readings in the timed span over
        # batches of the whole run would mix two windows).
        batches = sum(metric(p, "wattsup_stream_batch_readings_count") for p in ports)
        batch_readings = sum(metric(p, "wattsup_stream_batch_readings_sum") for p in ports)
        messages = sum(metric(p, "wattsup_stream_messages_processed_total") for p in ports)

        # the worker has caught up and idles meanwhile
        stock_messages = faust_ceiling_rate(connection, topics.readings, args.partitions, producer.summary.records,
                                            "kafka")
        faust_messages = faust_ceiling_rate(connection, topics.readings, args.partitions, producer.summary.records,
                                            "wattsup")
        readings_per_message = total / producer.summary.records
        per_event, batched = naive_rate(model, history)

        # Latency: pace new readings at a fixed rate; compare each anomaly's Kafka timestamp
        # with the timestamp of the readings message that carried its reading.
        latencies = latency_phase(connection, topics, args, frame)
        peak = max(status_mib(w.pid, "VmHWM") for w in workers)

        print()
        print(f"{'plain confluent-kafka consume + decode (ceiling)':<58}{ceiling:>12,.0f} readings/s")
        print(f"{'bare Faust agent, take_events doing nothing, stock transport':<58}"
              f"{stock_messages * readings_per_message:>12,.0f} readings/s   ({stock_messages:,.0f} messages/s)")
        print(f"{'  the same, worker transport (Faust ceiling)':<58}"
              f"{faust_messages * readings_per_message:>12,.0f} readings/s   ({faust_messages:,.0f} messages/s)")
        label = f"WattsUp end to end ({args.workers} worker{'s' if args.workers > 1 else ''}, broker on same box)"
        print(f"{label:<58}{agent_rate:>12,.0f} readings/s")
        print(f"{'  of which features + scoring (engine), summed':<58}{scoring:>12.1f} s of {seconds:.1f} s")
        print(f"{'  anomalies emitted while streaming the fleet':<58}{emitted:>12,.0f}")
        print(f"{'  micro-batches scored (readings, messages per batch)':<58}{batches:>12,.0f}   "
              f"({batch_readings / max(batches, 1):,.0f} readings, {messages / max(batches, 1):,.0f} messages)")
        print(f"{'naive: one score_samples call per reading':<58}{per_event:>12,.0f} readings/s")
        print(f"{'model alone, one call per batch of the same rows':<58}{batched:>12,.0f} readings/s")
        print(f"{'worker / ceiling':<58}{agent_rate / ceiling:>12.2f}")
        print(f"{'worker / Faust ceiling':<58}{agent_rate / (faust_messages * readings_per_message):>12.2f}")
        print(f"{'worker / naive per-event':<58}{agent_rate / per_event:>12.1f}x")
        if latencies.size:
            print(f"{'latency produce -> anomaly at %.0f readings/s: p50' % args.rate:<58}"
                  f"{np.percentile(latencies, 50) * 1000:>12.0f} ms")
            print(f"{'                                           p99':<58}{np.percentile(latencies, 99) * 1000:>12.0f} ms"
                  f"   ({latencies.size} anomalies)")
        else:
            print("latency: no anomalies observed in the paced phase")
        print(f"{'peak memory of a worker (VmHWM)':<58}{peak:>12.0f} MiB")
        tracked = sum(metric(p, "wattsup_stream_meters_tracked") for p in ports)
        print(f"{'meters tracked by the workers':<58}{tracked:>12,.0f}")
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(30)
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


def latency_phase(connection, topics, args, frame) -> np.ndarray:
    from confluent_kafka import Consumer

    from schemas.reading_encoder import feeder_batches

    last_day = frame["timestamp"].max()
    meters = frame["meter_id"].unique()
    n_per_interval = len(meters)
    intervals = max(1, int(args.rate * args.latency_seconds / n_per_interval))
    rng = np.random.default_rng(1)
    consumer = Consumer({**connection.confluent_config(), "group.id": f"lat-{os.urandom(3).hex()}",
                         "auto.offset.reset": "latest", "enable.auto.commit": False})
    consumer.subscribe([topics.anomalies])
    consumer.consume(1, timeout=2.0)
    sent_at: dict[tuple[str, int], float] = {}
    base = frame[frame["timestamp"] == last_day].copy()
    with ReadingProducer(connection, topics) as producer:
        for k in range(1, intervals + 1):
            day = base.copy()
            day["timestamp"] = last_day + timedelta(days=k)
            # a fresh day, not a copy: identical readings day after day are a stuck register
            day["kwh"] = day["kwh"] * rng.lognormal(0.0, 0.1, len(day))
            spikes = rng.random(len(day)) < 0.002  # obvious spikes so anomalies are emitted
            day.loc[spikes, "kwh"] = day.loc[spikes, "kwh"] * 20
            started = time.perf_counter()
            batches = list(feeder_batches(day))
            per_batch = 1.0 / (args.rate / max(1, len(day) / len(batches)))
            for i, batch in enumerate(batches):
                due = started + i * per_batch
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                now = time.time()
                for r in batch["readings"]:
                    sent_at[(r["meter_id"], r["timestamp"])] = now
                producer.send_batch(batch)
            producer.producer.poll(0)
    serde = SingleObjectSerde()
    latencies = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=0.5):
            if msg.error() is None:
                _, a = serde.decode(msg.value(), raw_timestamps=True)
                t = sent_at.get((a["meter_id"], a["timestamp"]))
                if t is not None:
                    latencies.append(msg.timestamp()[1] / 1000.0 - t)
    consumer.close()
    return np.array(latencies)


if __name__ == "__main__":
    main()
