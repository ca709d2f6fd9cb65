"""How fast a stream worker gets its partitions' state back after a crash or a rebalance.

A fleet is streamed through the stream scorer for ``--days`` of hourly readings, so every baseline
slot has its record, as a week-old fleet's changelog has; the newest record per key (what
compaction leaves) is written to a feeder-state changelog on a local broker. Then, in one run:

* **read back**: what a worker taking every partition over does (``ChangelogReader``,
  stream_processors/changelog_recovery.py): each partition read to its end, newest record per key;
* **plain consume** of the same records, nothing kept, the client connected before the clock starts:
  the ceiling of reading them;
* **load**: decoding every feeder's records into the state arrays (``FeederState.load``), which the
  worker does when a feeder's next reading comes, so not on the recovery path but paid once.

It prints meters per second and the time a million meters would take at that rate (the issue's
goal: under 60 s on one worker).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from deploy.kafka.launcher import LocalKafkaNode, free_port
from detection.meter_state import MeterStateStore
from foundation.kafka_settings import KafkaConnection
from foundation.topics import ensure_topic_specs
from models.training import train_and_save
from readings.columns import ReadingColumns, decode_into
from schemas.partitioning import partition_for
from schemas.reading_encoder import feeder_batches
from schemas.serde import METER_READING_BATCH, SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet
from state_memory import KeepsACopy
from stream_processors.changelog_recovery import ChangelogReader, changelog_specs
from stream_processors.feeder_state import FeederState
from stream_processors.scoring import StreamScorer

MILLION = 1_000_000
BATCH_MESSAGES = 200


def streamed_changelog(meters: int, days: int, per_feeder: int, model_dir: Path) -> KeepsACopy:
    """The newest record per key the fleet's state wrote, as compaction leaves a changelog."""
    history = simulate_fleet(FleetConfig(meters=500, days=14, interval=timedelta(hours=1), seed=8)).readings
    train_and_save(history, model_dir, source="bench history")
    fleet = simulate_fleet(FleetConfig(meters=meters, days=days, interval=timedelta(hours=1), seed=7,
                                       missing_rate=0.0, late_rate=0.0, meters_per_feeder=per_feeder)).readings
    serde = SingleObjectSerde()
    messages = [serde.encode(METER_READING_BATCH, b) for b in feeder_batches(fleet)]
    changelog, forecasts = KeepsACopy(), KeepsACopy()  # every write kept, nothing read back while streaming
    scorer = StreamScorer(model_dir, serde)
    scorer.attach_tables(changelog, forecasts)
    for start in range(0, len(messages), BATCH_MESSAGES):
        columns = ReadingColumns()
        for m in messages[start:start + BATCH_MESSAGES]:
            decode_into(columns, serde, m, "bench")
        scorer.persist(scorer.process(columns).touched_feeders)
    return changelog


def plain_consume_seconds(connection: KafkaConnection, topic: str, partitions: int, records: int) -> float:
    """Seconds to consume the topic's ``records`` from every partition, keeping nothing; the client's
    connection and metadata are made before the clock starts."""
    consumer = Consumer({**connection.confluent_config(), "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    for p in range(partitions):
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    started, seen = time.perf_counter(), 0
    while seen < records:
        seen += sum(1 for msg in consumer.consume(10_000, timeout=0.5) if msg.error() is None)
    took = time.perf_counter() - started
    consumer.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--meters-per-feeder", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3, help="Read-backs timed (the spread is printed).")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wattsup-read-back-"))
    print(f"streaming {args.meters:,} meters x {args.days} days of hourly readings ...", flush=True)
    changelog = streamed_changelog(args.meters, args.days, args.meters_per_feeder, work / "models")
    total_bytes = sum(len(k) + len(v) for k, v in changelog.items())
    node = LocalKafkaNode(data_dir=work / "kafka", port=free_port(), controller_port=free_port(), heap="1g")
    node.start(timeout=120)
    try:
        connection = KafkaConnection(bootstrap_servers=node.bootstrap_servers)
        spec = changelog_specs("bench", args.partitions, 1)[0]
        ensure_topic_specs(connection, [spec])
        producer = Producer({**connection.confluent_config(), "linger.ms": 20, "batch.size": 1_000_000})
        for key, value in changelog.items():
            feeder = key.decode().split("|", 1)[0]
            while True:
                try:
                    producer.produce(spec.name, value, key, partition_for(feeder, args.partitions))
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(120) == 0

        reader = ChangelogReader(connection)
        reads = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            recovered = reader.read(spec.name, range(args.partitions))
            reads.append(time.perf_counter() - started)
        assert recovered == dict(changelog)
        plain = [plain_consume_seconds(connection, spec.name, args.partitions, len(changelog))
                 for _ in range(args.repeats)]

        state = FeederState(MeterStateStore(capacity=args.meters + 1))
        state.table = recovered
        feeders = sorted({k.split(b"|", 1)[0].decode() for k in recovered})
        started = time.perf_counter()
        for feeder in feeders:
            state.load(feeder)
        load = time.perf_counter() - started
        assert len(state.store) == args.meters and not recovered
    finally:
        node.stop()

    def rate(seconds: float) -> float:
        return args.meters / seconds

    best, worst = min(reads), max(reads)
    print(f"{args.meters:,} meters, {args.meters_per_feeder} per feeder, {args.days} days hourly, "
          f"{args.partitions} partitions, one local broker")
    print(f"{'changelog after compaction: records, bytes per meter':<58}{len(changelog):>12,}  "
          f"{total_bytes / args.meters:,.0f} B")
    print(f"{'read back, every partition (best / worst of ' + str(args.repeats) + ')':<58}"
          f"{rate(best):>12,.0f} meters/s  ({best:.2f} / {worst:.2f} s)")
    print(f"{'  baseline: plain consume, nothing kept (best / worst)':<58}"
          f"{rate(min(plain)):>12,.0f} meters/s  ({min(plain):.2f} / {max(plain):.2f} s)")
    print(f"{'  a million meters read back at the best / worst rate':<58}"
          f"{MILLION / rate(best):>12.1f} s  / {MILLION / rate(worst):.1f} s   (goal: under 60 s)")
    print(f"{'load: decoding every feeder (on its next reading)':<58}{rate(load):>12,.0f} meters/s  "
          f"({load:.2f} s; a million: {MILLION / rate(load):.0f} s)")


if __name__ == "__main__":
    main()
