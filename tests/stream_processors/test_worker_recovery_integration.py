"""Stream workers that die: kill -9 and restart, and two workers where one is killed.

Both tests judge the outcome by what the workers left in Kafka and compare it with an
uninterrupted run of the same engine over the same readings (in delivery order):

* the consumer group catches up (every reading was consumed after the crash);
* every meter's state in the changelog equals the uninterrupted state (readings applied exactly
  once: none lost, none counted twice, and the restarted worker did not start cold);
* the anomalies on the topic are exactly the uninterrupted run's, with no duplicates.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from detection.meter_state import Scalar
from foundation.timeutil import epoch_ms
from readings.columns import ReadingColumns, decode_into
from readings.producer import ReadingProducer
from schemas.reading_encoder import delivery_slots, feeder_batches
from schemas.serde import METER_READING_BATCH, SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet
from stream_processors.scoring import StreamScorer
from tests.stream_processors.stream_checks import (
    changelog_meter_state,
    committed_messages,
    read_anomalies,
    reference_meter_state,
    wait_for_stable_group,
    wait_for_zero_lag,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# 10 feeders of 20 meters spread over all 4 partitions, so two workers each own some of them.
FLEET = FleetConfig(meters=200, days=14, interval=timedelta(hours=1), seed=303, meters_per_feeder=20)


@pytest.fixture(scope="module")
def fleet():
    return simulate_fleet(FLEET).readings


def uninterrupted_run(model_dir, sends: list[pd.DataFrame]):
    """The engine's answer without any crash, over the very messages the test produces (one
    ``send_frame`` per element of ``sends``): state per meter and the set of anomaly keys."""
    serde = SingleObjectSerde()
    engine = StreamScorer(model_dir, serde)
    messages = [serde.encode(METER_READING_BATCH, b) for frame in sends for b in feeder_batches(frame)]
    anomalies = []
    for s in range(0, len(messages), 100):
        columns = ReadingColumns()
        for m in messages[s:s + 100]:
            decode_into(columns, serde, m, "reference")
        anomalies += engine.process(columns).anomalies
    keys = {(a["meter_id"], a["timestamp"]) for a in anomalies}
    return reference_meter_state(engine.engine.store), keys


def in_parts(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """About ``n`` parts of a frame in delivery order, cut between delivery slots: a head-end sends a
    feeder's interval in one message, so its meters are scored with their peers in any run."""
    slots = delivery_slots(epoch_ms(frame["timestamp"]))
    cuts = [int(np.searchsorted(slots, slots[k * len(frame) // n - 1], side="right")) for k in range(1, n)]
    bounds = [0, *cuts, len(frame)]
    return [frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def produce_in_steps(kafka, topics, parts: list[pd.DataFrame], pause: float) -> threading.Thread:
    """Keep producing while the workers run (and die), the way meters keep sending."""
    def send() -> None:
        for part in parts:
            with ReadingProducer(kafka.connection, topics) as producer:
                producer.send_frame(part, batch_by_feeder=True)
            time.sleep(pause)

    thread = threading.Thread(target=send, name="meters", daemon=True)
    thread.start()
    return thread


REBALANCE_LINES = re.compile(r"generation \d+\)|forgot the state|Restor|No event received|rebalancing again|"
                             r"read back \d+ records|Setting newly assigned|\| readings-")
"""Worker log lines that tell a rebalance's course: what a failed comparison is shown beside."""


def rebalance_story(workers) -> str:
    """Each worker's rebalance and recovery lines, for a failure message."""
    return "\n".join(f"--- {w.log_path.name}\n" + "\n".join(
        line[:200] for line in w.log_path.read_text(errors="replace").splitlines() if REBALANCE_LINES.search(line))
        for w in workers)


def assert_same_as_uninterrupted(kafka, app_id: str, topics, uninterrupted, workers=()) -> pd.DataFrame:
    """The changelog state and the anomalies equal the uninterrupted run's; a failure shows the
    ``workers``' rebalance and recovery log lines."""
    reference_state, reference_keys = uninterrupted
    state = changelog_meter_state(kafka, app_id)
    assert set(state) == set(reference_state)
    # Every array equal: readings applied once, baselines, run counters, windows, score statistics.
    # The memory of seen timestamps is compared as a set (its slots fill in no particular order).
    differing = {}
    for m, want in reference_state.items():
        got = state[m]
        names = [name for name in want if name != "seen" and not np.array_equal(got[name], want[name])]
        if "scalars" in names:  # name the columns
            names.remove("scalars")
            names += [f"scalars.{Scalar(c).name}" for c in np.flatnonzero(got["scalars"] != want["scalars"])]
        if set(got["seen"].tolist()) != set(want["seen"].tolist()):
            names.append("seen")
        if names:
            differing[m] = names
    readings = Scalar.READINGS
    counts = {m: (int(state[m]["scalars"][readings]), int(reference_state[m]["scalars"][readings])) for m in differing}
    assert not differing, (f"{len(differing)} meters' recovered state differs from the uninterrupted run, e.g. "
                           f"{list(differing.items())[:3]}; readings applied (got, uninterrupted): "
                           f"{list(counts.items())[:5]}\n{rebalance_story(workers)}")

    anomalies = read_anomalies(kafka, topics.anomalies)
    assert not anomalies.duplicated(["meter_id", "timestamp"]).any(), "an anomaly was emitted twice"
    got = {(m, int(t.value // 1_000_000)) for m, t in zip(anomalies["meter_id"], anomalies["timestamp"])}
    assert got == reference_keys, (f"missing {sorted(reference_keys - got)[:5]} ({len(reference_keys - got)}), "
                                   f"extra {sorted(got - reference_keys)[:5]} ({len(got - reference_keys)})\n"
                                   f"{rebalance_story(workers)}")
    assert anomalies["causes"].map(len).gt(0).all()
    return anomalies


def test_kill_9_mid_stream_recovers_state_without_duplicates(kafka, stream_workers, trained_model_dir, fleet):
    topics = kafka.fresh_topics(partitions=4)
    app_id = f"crash-{os.urandom(3).hex()}"
    parts = in_parts(fleet, 20)  # delivery order, 5 % each
    sends = [pd.concat(parts[:8]), *parts[8:]]
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(sends[0], batch_by_feeder=True)
    first = stream_workers.start(topics, trained_model_dir, app_id=app_id, name="first")
    first.wait_for("wattsup_stream_readings_processed_total", sum(map(len, parts[:8])), timeout=180)
    wait_for_zero_lag(kafka, app_id, topics.readings, first)  # offsets were committed: a real restart point

    meters = produce_in_steps(kafka, topics, sends[1:], pause=0.4)
    first.wait_for("wattsup_stream_readings_processed_total", sum(map(len, parts[:11])), timeout=120)
    # mid-stream, with readings scored but not committed: Faust commits every few seconds, so kill
    # once the group has committed fewer messages than the worker had taken one poll earlier (time
    # enough to score them); readings keep arriving meanwhile
    taken_at_last_poll = [first.metric("wattsup_stream_messages_processed_total")]

    def scored_messages_await_a_commit() -> bool:
        behind = committed_messages(kafka, app_id, topics.readings) < taken_at_last_poll[0]
        taken_at_last_poll[0] = first.metric("wattsup_stream_messages_processed_total")
        return behind

    wait_until(scored_messages_await_a_commit, 60, "scored messages awaiting a commit", poll=0.2)
    first.kill_9()
    meters.join(timeout=120)

    second = stream_workers.start(topics, trained_model_dir, app_id=app_id, name="second")
    wait_for_zero_lag(kafka, app_id, topics.readings, second)
    redelivered = second.metric("wattsup_stream_duplicate_readings_total")
    second.stop()  # a clean stop flushes the changelog
    assert redelivered > 0, "readings scored but not committed before the crash should come again"
    assert_same_as_uninterrupted(kafka, app_id, topics, uninterrupted_run(trained_model_dir, sends), [first, second])


def test_two_workers_one_killed_the_other_takes_over(kafka, stream_workers, trained_model_dir, fleet):
    topics = kafka.fresh_topics(partitions=4)
    app_id = f"pair-{os.urandom(3).hex()}"
    parts = in_parts(fleet, 20)
    sends = [pd.concat(parts[:6]), *parts[6:]]
    a = stream_workers.start(topics, trained_model_dir, app_id=app_id, name="a")
    b = stream_workers.start(topics, trained_model_dir, app_id=app_id, name="b")
    wait_for_stable_group(kafka, app_id, members=2)
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(sends[0], batch_by_feeder=True)
    deadline = time.monotonic() + 180
    while not (a.metric("wattsup_stream_readings_processed_total") > 0
               and b.metric("wattsup_stream_readings_processed_total") > 0):
        assert time.monotonic() < deadline, (
            f"both workers should own partitions with readings: a processed "
            f"{a.metric('wattsup_stream_readings_processed_total')}, b "
            f"{b.metric('wattsup_stream_readings_processed_total')}; logs:\n{a.log_path.read_text()[-1500:]}\n"
            f"{b.log_path.read_text()[-1500:]}")
        time.sleep(0.5)
    wait_for_zero_lag(kafka, app_id, topics.readings, a)

    processed = b.metric("wattsup_stream_readings_processed_total")
    meters = produce_in_steps(kafka, topics, sends[1:], pause=0.4)
    wait_until(lambda: b.metric("wattsup_stream_readings_processed_total") > processed, 120,
               "the worker to be killed scoring the new readings")
    b.kill_9()  # the survivor must take over b's partitions and their state from the changelog
    meters.join(timeout=120)
    wait_for_zero_lag(kafka, app_id, topics.readings, a, timeout=240)
    a.stop()
    assert_same_as_uninterrupted(kafka, app_id, topics, uninterrupted_run(trained_model_dir, sends), [a, b])


def test_a_worker_forgets_the_partitions_a_joining_worker_takes_and_the_joiner_continues_exactly(
        kafka, stream_workers, trained_model_dir, fleet):
    topics = kafka.fresh_topics(partitions=4)
    app_id = f"join-{os.urandom(3).hex()}"
    first, rest = in_parts(fleet, 2)
    meters = fleet["meter_id"].nunique()
    a = stream_workers.start(topics, trained_model_dir, app_id=app_id, name="a")
    wait_for_stable_group(kafka, app_id, members=1)
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(first, batch_by_feeder=True)
    wait_for_zero_lag(kafka, app_id, topics.readings, a)
    wait_until(lambda: a.metric("wattsup_stream_meters_tracked") == meters, 30, "a tracking every meter")

    b = stream_workers.start(topics, trained_model_dir, app_id=app_id, name="b")
    wait_for_stable_group(kafka, app_id, members=2)
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(rest, batch_by_feeder=True)
    wait_for_zero_lag(kafka, app_id, topics.readings, a, timeout=240)

    def tracked() -> tuple[float, float]:
        return a.metric("wattsup_stream_meters_tracked"), b.metric("wattsup_stream_meters_tracked")

    # each meter's state in exactly one worker: a dropped what b took over from the changelog
    wait_until(lambda: sum(tracked()) == meters and 0 < tracked()[0] < meters, 30,
               "each meter tracked by exactly one of the two workers")
    a.stop()
    b.stop()
    assert_same_as_uninterrupted(kafka, app_id, topics, uninterrupted_run(trained_model_dir, [first, rest]), [a, b])
