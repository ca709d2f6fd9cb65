"""A large fleet on the local three-broker cluster: sustained rate, lag, memory and disk per meter, recovery.

Simulates ``--meters`` meters at 15-minute intervals delivered as head-end bursts (one message per
feeder and interval, ``--meters-per-feeder`` meters each, every interval's burst sent at once) to the
local three-broker KRaft cluster (replication 3, ``min.insync.replicas`` 2), with ``--workers`` stream
workers in one consumer group, and prints:

* the sustained readings/s (each burst sent once the previous one is taken, from the second burst:
  the first also waits for the workers to start) and the consumer lag sampled every second (its
  peak, and how long a burst took to clear);
* resident memory per meter in a worker (VmRSS over the meters it tracks) and the feeder-state
  changelog's bytes per meter on disk (all replicas' log segments over the replication factor);
* recovery: one worker killed with ``kill -9`` after the fleet is loaded and a new one started in its
  place; the seconds until the group has taken every reading of the next burst (the new worker has
  recovered its partitions' state from the changelog by then), and that no reading was scored twice:
  every redelivered reading is recognised as a duplicate, and no anomaly is on the topic twice.

Then two ``wattsup forecast schedule`` instances in one forecaster group forecast ``--forecast-meters``
meters with ``--forecast-days`` of 15-minute history (sent to the same readings topic, which the
stream workers score too), and it prints each instance's first run over its share once the group has
settled (some partitions, none handed over during the run): meters, Prophet fits and fallbacks,
seconds and fits/s, and whether the two shares add up to the forecast fleet.

A million meters do not fit this 2-core machine beside the brokers; the default (100,000 meters, a
tenth) and the factor to a million are printed, and the README's capacity section does the arithmetic.
Fitting all of them takes hours on two cores, so the forecasters get a few hundred meters of their
own; fits/s per instance is what scales.

    .venv/bin/python bench/fleet_scale.py [--meters 100000] [--intervals 16] [--workers 2] [--forecast-meters 400]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
from proc_memory import status_mib
from stream_throughput import (  # the same worker launch and filtered scrape
    metric,
    start_worker,
)

from deploy.kafka.launcher import LocalKafkaCluster, free_port
from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.topics import ensure_topics
from models.training import train_and_save
from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet

MILLION = 1_000_000
APP_ID = "scale-stream"


class LagSampler(threading.Thread):
    """Samples the group's total lag on the readings topic once a second (committed offsets vs ends)."""

    def __init__(self, connection: KafkaConnection, topic: str, partitions: int) -> None:
        super().__init__(name="lag", daemon=True)
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer({**connection.confluent_config(), "group.id": APP_ID, "enable.auto.commit": False})
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.samples: list[tuple[float, int]] = []
        self.missed = 0
        self.stop_event = threading.Event()

    def lag(self) -> int:
        committed = self.consumer.committed(self.partitions, timeout=10)
        total = 0
        for tp in committed:
            _low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            total += high - max(tp.offset, 0)
        return total

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.samples.append((time.monotonic(), self.lag()))
            except Exception:  # noqa: BLE001 - a sample missed while a broker is busy is counted, not a result
                self.missed += 1
            self.stop_event.wait(1.0)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(15)
        self.consumer.close()


def kafka_env(cluster: LocalKafkaCluster, topics: TopicNames) -> dict[str, str]:
    """This environment with the cluster's bootstrap servers and the bench's topic names."""
    return {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
            **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()}}


def worker_env(cluster: LocalKafkaCluster, topics: TopicNames, model_dir: Path, work: Path, name: str,
               port: int) -> dict[str, str]:
    return {**kafka_env(cluster, topics),
            "WATTSUP_KAFKA_REPLICATION_FACTOR": "3", "WATTSUP_KAFKA_MIN_INSYNC_REPLICAS": "2",
            "WATTSUP_STREAM_APP_ID": APP_ID, "WATTSUP_STREAM_DATA_DIR": str(work / f"stream-{name}"),
            "WATTSUP_MODEL_DIR": str(model_dir), "WATTSUP_STREAM_METRICS_PORT": str(port),
            "WATTSUP_STREAM_WEB_PORT": str(free_port())}


def counted(ports: list[int]) -> float:
    """Readings the workers have taken: scored or recognised as already seen."""
    return sum(metric(p, "wattsup_stream_readings_processed_total")
               + metric(p, "wattsup_stream_duplicate_readings_total") for p in ports)


def wait_for(what: str, check, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def changelog_bytes(cluster: LocalKafkaCluster) -> int:
    """Bytes of the feeder-state changelog's log segments on every broker (all replicas)."""
    total = 0
    for node in cluster.members:
        for directory in node.log_dir.glob(f"{APP_ID}-feeder-state-changelog-*"):
            total += sum(f.stat().st_size for f in directory.iterdir() if f.suffix == ".log")
    return total


def recovery_spans(log: Path) -> list[float]:
    """Seconds of each read-back of state a worker logged (stream_processors/app.py, "read back the state
    of partitions ... in N s"); one per rebalance that handed it partitions."""
    import re

    found = re.finditer(r"read back the state of partitions .*? in ([0-9.]+) s", log.read_text(errors="replace"))
    return [float(m.group(1)) for m in found]


def anomaly_keys_twice(connection: KafkaConnection, topic: str) -> tuple[int, int]:
    """(anomalies on the topic, of which the same meter and timestamp already seen)."""
    from confluent_kafka import Consumer

    from schemas.serde import SingleObjectSerde

    serde = SingleObjectSerde()
    consumer = Consumer({**connection.confluent_config(), "group.id": f"check-{os.urandom(3).hex()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen: set[tuple[str, int]] = set()
    total = twice = idle = 0
    while idle < 5:
        batch = consumer.consume(5000, timeout=1.0)
        idle = 0 if batch else idle + 1
        for msg in batch:
            if msg.error() is not None:
                continue
            _, a = serde.decode(msg.value(), raw_timestamps=True)
            key = (a["meter_id"], int(a["timestamp"]))
            total += 1
            twice += key in seen
            seen.add(key)
    consumer.close()
    return total, twice


FORECAST_GROUP = "scale-forecasters"
RUN_SUMMARY = re.compile(r"partitions=(\S+) meters=(\d+) prophet=(\d+) fallbacks=(\d+) .*handed_over=(\d+) "
                         r"seconds=([\d.]+) fits_per_second=([\d.]+)")


def start_forecaster(cluster: LocalKafkaCluster, topics: TopicNames, work: Path, name: str,
                     meters: list[str]) -> subprocess.Popen:
    """A ``wattsup forecast schedule`` instance of the bench's forecaster group forecasting ``meters`` (not
    the stream fleet, whose 4 hours are too short to fit), running every 5 s."""
    env = {**kafka_env(cluster, topics), "WATTSUP_FORECAST_GROUP_ID": FORECAST_GROUP,
           "WATTSUP_FORECAST_DATA_DIR": str(work / "forecaster"), "WATTSUP_FORECAST_METRICS_PORT": "0",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "wattsup.cli", "forecast", "schedule", "--every", "5s", "--history", "7d",
         "--horizon", "24h", "--workers", "1", "--meters", ",".join(meters)],
        env=env, stdout=open(work / f"forecaster-{name}.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)


def shared_runs(log: Path, partitions: int) -> list[tuple[str, int, int, int, float, float]]:
    """(partitions, meters, Prophet fits, fallbacks, seconds, fits/s) of each run in a forecaster's log that
    forecast a share of the fleet once the group had settled: some meters, not every partition, none
    handed over to another instance during the run (nor the run stopped)."""
    runs = []
    for line in log.read_text().splitlines():
        for share, m, p, f, handed, s, r in RUN_SUMMARY.findall(line):
            if "stopped before the end" not in line and int(m) and not int(handed) and share != f"0-{partitions - 1}":
                runs.append((share, int(m), int(p), int(f), float(s), float(r)))
    return runs


def forecast_fleet(meters: int, days: int, end: pd.Timestamp) -> pd.DataFrame:
    """``meters`` meters of their own (ids ``FC…``, feeders ``FCF…``) with ``days`` of 15-minute readings
    ending before ``end`` (the stream fleet's first interval): old readings of new meters for the workers."""
    frame = simulate_fleet(FleetConfig(meters=meters, days=days, seed=13, missing_rate=0.0, late_rate=0.0,
                                       meters_per_feeder=20)).readings
    frame = frame.assign(meter_id="FC" + frame["meter_id"], feeder_id="FCF" + frame["feeder_id"])
    return frame.assign(timestamp=frame["timestamp"] - (frame["timestamp"].max() - end) - pd.Timedelta(minutes=15))


def measure_forecasters(cluster: LocalKafkaCluster, connection: KafkaConnection, topics: TopicNames, work: Path,
                        fleet: pd.DataFrame, instances: int = 2) -> list[tuple[str, int, int, int, float, float]]:
    """Each instance's first run over its share of ``fleet`` (sent first), the instances in one group."""
    with ReadingProducer(connection, topics) as producer:
        producer.send_frame(fleet, batch_by_feeder=True)
    meters = sorted(fleet["meter_id"].unique())
    procs = [start_forecaster(cluster, topics, work, str(i), meters) for i in range(instances)]
    logs = [work / f"forecaster-{i}.log" for i in range(instances)]
    try:
        share = topics.partitions
        wait_for("a run of every forecaster over its share", lambda: all(shared_runs(log, share) for log in logs)
                 or any(p.poll() is not None for p in procs), timeout=3600)
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a forecaster stopped: {logs[0].read_text()[-2000:]}")
        return [shared_runs(log, share)[0] for log in logs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=100_000)
    parser.add_argument("--intervals", type=int, default=16, help="15-minute bursts to send (the fleet's hours x 4).")
    parser.add_argument("--meters-per-feeder", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--forecast-meters", type=int, default=400, help="Meters the two forecasters share (0: none).")
    parser.add_argument("--forecast-days", type=int, default=7,
                        help="Days of 15-minute history they fit on (the topic keeps 7).")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wattsup-scale-"))
    cluster = LocalKafkaCluster(data_dir=work / "kafka", heap="768m")
    cluster.start(timeout=180)
    workers: dict[int, subprocess.Popen] = {}
    try:
        connection = KafkaConnection(bootstrap_servers=cluster.bootstrap_servers, replication_factor=3,
                                     min_insync_replicas=2)
        topics = TopicNames(readings="scale.readings", anomalies="scale.anomalies", forecasts="scale.forecasts",
                            control="scale.control", dead_letters="scale.dlq", incidents="scale.incidents",
                            feedback="scale.feedback", partitions=args.partitions)
        ensure_topics(connection, topics)

        print(f"simulating {args.meters:,} meters x {args.intervals + 1} intervals of 15 minutes ...", flush=True)
        fleet = simulate_fleet(FleetConfig(meters=args.meters, days=(args.intervals + 1) / 96, seed=11,
                                           missing_rate=0.0, late_rate=0.0,
                                           meters_per_feeder=args.meters_per_feeder)).readings
        history = simulate_fleet(FleetConfig(meters=500, days=14, interval=timedelta(hours=1), seed=12)).readings
        model_dir = work / "models"
        train_and_save(history, model_dir, n_estimators=100, source="scale bench history")
        stamps = sorted(fleet["timestamp"].unique())
        bursts = [fleet[fleet["timestamp"] == t] for t in stamps]
        last = bursts.pop()  # sent after the kill -9

        ports = {i: free_port() for i in range(args.workers)}
        for i, port in ports.items():
            workers[i] = start_worker(worker_env(cluster, topics, model_dir, work, str(i), port), work / f"worker-{i}.log")
        lag = LagSampler(connection, topics.readings, args.partitions)

        # Each interval's burst goes out as soon as the group has taken the previous one, as a head-end
        # system uploads: the sustained rate is what the group absorbs, the lag what a burst costs.
        lag.start()
        burst_clear: list[float] = []
        sent = 0
        with ReadingProducer(connection, topics) as producer:
            for burst in bursts:
                t0 = time.monotonic()
                producer.send_frame(burst, batch_by_feeder=True)
                producer.producer.flush(60)
                sent += len(burst)
                wait_for("a burst to be taken", lambda s=sent: counted(list(ports.values())) >= s, timeout=1800)
                burst_clear.append(time.monotonic() - t0)
        lag.stop()
        # the first burst also waits for the workers to start and share the partitions: not sustained
        steady = sum(len(b) for b in bursts[1:])
        seconds = sum(burst_clear[1:])
        probe = LagSampler(connection, topics.readings, args.partitions)  # asked from this thread only
        wait_for("the group's lag to reach zero", lambda: probe.lag() == 0, timeout=300)
        peak_lag = max((v for _, v in lag.samples), default=0)

        def tracked_now() -> dict[int, float]:
            return {i: metric(p, "wattsup_stream_meters_tracked") for i, p in ports.items()}
        wait_for("the workers' meter gauges (set every 5 s)", lambda: sum(tracked_now().values()) >= args.meters, 30)
        tracked = tracked_now()
        rss = {i: status_mib(w.pid, "VmRSS") for i, w in workers.items()}
        per_meter_kb = [rss[i] * 1024 / tracked[i] for i in workers if tracked[i]]
        changelog = changelog_bytes(cluster)

        # kill -9 one worker; a new one takes its place and must recover its partitions from the changelog
        victim = 0
        before_kill = counted([ports[i] for i in ports if i != victim])
        os.killpg(workers[victim].pid, signal.SIGKILL)
        workers[victim].wait(30)
        killed_at = time.monotonic()
        new_port = free_port()
        workers[args.workers] = start_worker(worker_env(cluster, topics, model_dir, work, "new", new_port),
                                             work / "worker-new.log")
        survivors = [ports[i] for i in ports if i != victim] + [new_port]
        with ReadingProducer(connection, topics) as producer:
            producer.send_frame(last, batch_by_feeder=True)
        # taken: every reading of it counted (redelivered ones count as seen, so the lag must be zero too)
        recovered = wait_for("the next burst after the kill",
                             lambda: counted(survivors) - before_kill >= len(last) and probe.lag() == 0, timeout=1800)
        recovery_seconds = time.monotonic() - killed_at
        restores = recovery_spans(work / "worker-new.log")
        duplicates = metric(new_port, "wattsup_stream_duplicate_readings_total") + sum(
            metric(p, "wattsup_stream_duplicate_readings_total") for p in survivors[:-1])
        probe.consumer.close()
        anomalies, twice = anomaly_keys_twice(connection, topics.anomalies)
        forecasts = (measure_forecasters(cluster, connection, topics, work,
                                         forecast_fleet(args.forecast_meters, args.forecast_days, stamps[0]))
                     if args.forecast_meters else [])

        scale = MILLION / args.meters
        print()
        print(f"fleet: {args.meters:,} meters ({scale:g}x fewer than a million), {args.meters_per_feeder} per head-end "
              f"message, {len(bursts)} bursts of one 15-minute interval, {args.partitions} partitions, replication 3, "
              f"{args.workers} workers")
        print(f"{'sustained, bursts 2 to last, sent to taken':<58}{steady / seconds:>12,.0f} readings/s "
              f"({steady:,} readings in {seconds:.0f} s)")
        print(f"{'a burst taken in (median, slowest after the first)':<58}{pd.Series(burst_clear[1:]).median():>12.1f} s, "
              f"{max(burst_clear[1:]):.1f} s  (first, workers starting: {burst_clear[0]:.1f} s)")
        print(f"{'peak consumer lag (messages, 1 s samples)':<58}{peak_lag:>12,}  "
              f"({len(lag.samples)} samples, {lag.missed} missed)")
        print(f"{'worker resident memory per meter (VmRSS / meters tracked)':<58}"
              f"{', '.join(f'{v:.2f}' for v in per_meter_kb):>12} KB  (RSS {', '.join(f'{v:.0f}' for v in rss.values())}"
              f" MiB; meters {', '.join(f'{v:,.0f}' for v in tracked.values())})")
        print(f"{'feeder-state changelog on disk per meter (one replica)':<58}{changelog / 3 / args.meters:>12,.0f} bytes")
        print(f"{'kill -9 to the next burst taken by the group':<58}{recovery_seconds:>12.1f} s "
              f"({recovered:.1f} s after the burst was sent; the new worker tracks "
              f"{metric(new_port, 'wattsup_stream_meters_tracked'):,.0f} meters)")
        print(f"{'  of which reading the state back (per rebalance)':<58}"
              f"{', '.join(f'{r:.1f}' for r in restores) or 'none logged':>12} s")
        print(f"{'readings redelivered after the kill, recognised as seen':<58}{duplicates:>12,.0f}")
        print(f"{'anomalies on the topic, of which twice':<58}{anomalies:>12,}  ({twice} twice)")
        for i, (share, meters, prophet, fallbacks, run_seconds, rate) in enumerate(forecasts):
            print(f"{f'forecaster {i}: fits/s over its share (Prophet / fallbacks)':<58}{rate:>12.1f}  "
                  f"(partitions {share}: {meters} meters, {prophet} / {fallbacks}, {run_seconds:.1f} s)")
        if forecasts:
            shared = sum(f[1] for f in forecasts)
            print(f"{'  meters the two runs forecast, of the forecast fleet':<58}{shared:>12,} of "
                  f"{args.forecast_meters:,}{'' if shared == args.forecast_meters else '  (DO NOT ADD UP)'}")
        print(f"run directory {work} (logs kept)" if os.environ.get("KEEP") else "")
    finally:
        for w in workers.values():
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:
                    w.kill()
        cluster.stop()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
