"""Two ``wattsup forecast schedule`` instances in one forecaster group on the real broker; one is killed mid-run.

They share the fleet by readings partition; the run summaries of a round add up to the fleet; after
``kill -9`` of one instance during its run the other takes its partitions over, and its next run
forecasts every meter. On the forecasts topic no meter appears twice within one run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from deploy.kafka.launcher import free_port
from readings.producer import ReadingProducer
from schemas.partitioning import partition_for
from simulation.fleet import FleetConfig, simulate_fleet
from tests.conftest import WorkerProcess
from tests.forecaster.forecast_checks import read_forecasts
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
SUMMARY = re.compile(r"partitions=(\S+) meters=(\d+) .* handed_over=(\d+) ")


def parse_partitions(text: str) -> frozenset[int]:
    if text == "none":
        return frozenset()
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.update(range(int(low), int(high or low) + 1))
    return frozenset(out)


def summaries(instance: WorkerProcess) -> list[tuple[frozenset[int], int, int]]:
    """(partitions, meters, handed over) of every run the instance has finished so far (a run cut short by
    the instance's own stop at the end of the test excepted)."""
    return [(parse_partitions(p), int(m), int(h)) for line in instance.log_path.read_text().splitlines()
            if "stopped before the end" not in line for p, m, h in SUMMARY.findall(line)]


def start_instance(kafka, topics, tmp_path: Path, group: str, name: str) -> WorkerProcess:
    port = free_port()
    env = {**os.environ, "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
           "WATTSUP_FORECAST_GROUP_ID": group,
           "WATTSUP_FORECAST_GROUP_SESSION_TIMEOUT_MS": "6000",  # the broker's minimum: a dead instance is noticed fast
           "WATTSUP_FORECAST_DATA_DIR": str(tmp_path / "forecaster"),  # shared, as one volume for compose replicas
           "WATTSUP_FORECAST_METRICS_PORT": str(port), "PYTHONUNBUFFERED": "1"}  # summary lines as they happen
    log_path = tmp_path / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "wattsup.cli", "forecast", "schedule", "--every", "2s", "--history", "7d",
         "--horizon", "12h", "--workers", "1"],
        env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return WorkerProcess(process, port, log_path)


def test_two_instances_share_the_fleet_and_one_killed_mid_run_is_taken_over(kafka, tmp_path):
    topics = kafka.fresh_topics(partitions=PARTITIONS)
    # 4 days of hourly history: Prophet fits (tens of ms each), so a run lasts long enough to be killed in
    fleet = simulate_fleet(FleetConfig(meters=48, days=4, interval=timedelta(hours=1), seed=515, anomaly_rate=0,
                                       meters_per_feeder=2)).readings
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(fleet, batch_by_feeder=True)
    meters = fleet.drop_duplicates("meter_id").set_index("meter_id")["feeder_id"]
    partition_of = {m: partition_for(f, PARTITIONS) for m, f in meters.items()}
    per_partition = {p: sum(1 for q in partition_of.values() if q == p) for p in range(PARTITIONS)}
    assert all(per_partition.values()), per_partition  # every partition has meters to forecast

    def expected(partitions: frozenset[int]) -> int:
        return sum(per_partition[p] for p in partitions)

    group = f"forecasters-{uuid.uuid4().hex[:6]}"
    a = start_instance(kafka, topics, tmp_path, group, "a")
    b = start_instance(kafka, topics, tmp_path, group, "b")
    try:
        # both in the group, the partitions split between them
        wait_until(lambda: (a.metric("wattsup_forecast_partitions_owned"), b.metric("wattsup_forecast_partitions_owned"))
                   in {(1, 3), (2, 2), (3, 1)}, timeout=120, what="the partitions split between the two instances")

        def a_round() -> tuple | None:
            """The newest finished runs of both, if they cover the fleet between them without overlap."""
            ra, rb = summaries(a), summaries(b)
            if (ra and rb and ra[-1][0] and rb[-1][0] and ra[-1][0] | rb[-1][0] == frozenset(range(PARTITIONS))
                    and not ra[-1][0] & rb[-1][0]):
                return ra[-1], rb[-1]
            return None

        (pa, ma, ha), (pb, mb, hb) = wait_until(a_round, timeout=120, what="a round of runs over split partitions")
        assert (ha, hb) == (0, 0) and ma + mb == len(partition_of)  # the run summaries add up to the fleet

        # kill -9 one instance while it is forecasting
        wait_until(lambda: b.metric("wattsup_forecast_run_progress_meters") > 0, timeout=60, poll=0.05,
                   what="b in the middle of a run")
        runs_before = len(summaries(b))
        b.kill_9()
        killed_at_ms = int(time.time() * 1000)
        runs_of_a = len(summaries(a))
        assert len(summaries(b)) == runs_before, "b finished its run before it was killed"

        # the survivor takes every partition over; its next run forecasts the whole fleet
        wait_until(lambda: a.metric("wattsup_forecast_partitions_owned") == PARTITIONS, timeout=60,
                   what="a owning every partition")
        full = wait_until(lambda: [r for r in summaries(a)[runs_of_a:] if r[0] == frozenset(range(PARTITIONS))],
                          timeout=120, what="a run of a over the whole fleet")
        assert full[0] == (frozenset(range(PARTITIONS)), len(partition_of), 0)
        assert a.metric("wattsup_forecast_last_run_meters") == len(partition_of)  # every run since covers the fleet
    finally:
        a.stop()
        b.stop()
    assert a.process.returncode == 0, a.log_path.read_text()[-3000:]

    # every finished run forecast exactly the meters of its partitions: those handed over excepted, none skipped
    for instance in (a, b):
        for partitions, done, handed_over in summaries(instance):
            assert done + handed_over == expected(partitions), (instance.log_path.name, partitions, done, handed_over)

    records = read_forecasts(kafka, topics.forecasts)
    by_run: dict[int, list[str]] = {}
    for key, partition, record in records:
        assert partition == partition_of[key]  # published where the meter's readings live
        by_run.setdefault(record["generated_at"], []).append(key)
    for generated_at, keys in by_run.items():
        assert len(keys) == len(set(keys)), f"a meter forecast twice in the run of {generated_at}"
    fresh = {key for key, _, record in records if record["generated_at"] > killed_at_ms}
    assert fresh == set(partition_of)  # after the next run every meter has a fresh forecast
    assert any(len(keys) == len(partition_of) for generated_at, keys in by_run.items() if generated_at > killed_at_ms)
    # the state of every partition was kept per partition, whichever instance forecast it
    assert sorted(p.name for p in (tmp_path / "forecaster" / "partitions").iterdir()) == \
        [str(p) for p in range(PARTITIONS)]
