"""Which partitions a worker reads back, and reading changelog partitions whole on the real broker."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import Producer

from foundation.topics import ensure_topic_specs
from stream_processors.changelog_recovery import ChangelogReader, Ownership, changelog_specs


def test_a_first_assignment_reads_every_partition_back():
    ownership = Ownership()
    assert ownership.take_over() is None  # nothing assigned yet
    ownership.on_assignment({0, 1, 2, 3}, generation=1)
    plan = ownership.take_over()
    assert plan is not None and plan.new == {0, 1, 2, 3} and plan.kept == set()
    ownership.taken_over(plan)
    assert ownership.take_over() is None


def test_partitions_kept_through_a_rebalance_are_not_read_again_and_lost_ones_are_forgotten():
    ownership = Ownership()
    ownership.on_assignment({0, 1, 2, 3}, generation=1)
    ownership.taken_over(ownership.take_over())
    ownership.on_assignment({2, 3}, generation=2)  # a worker joined and took 0 and 1
    plan = ownership.take_over()
    assert plan.kept == {2, 3} and plan.new == set() and plan.owned == {2, 3}
    ownership.taken_over(plan)
    ownership.on_assignment({0, 2, 3}, generation=3)  # 0 comes back: the other worker wrote it meanwhile
    plan = ownership.take_over()
    assert plan.kept == {2, 3} and plan.new == {0}


def test_a_partition_lost_and_back_before_the_next_batch_is_still_read_again():
    ownership = Ownership()
    ownership.on_assignment({0, 1}, generation=1)
    ownership.taken_over(ownership.take_over())
    ownership.on_assignment({1}, generation=2)
    ownership.on_assignment({0, 1}, generation=3)  # no batch in between: 0 was another worker's for a while
    plan = ownership.take_over()
    assert plan.kept == {1} and plan.new == {0}


def test_after_a_gap_in_generations_every_partition_is_read_again():
    """A worker out of the group for a while (a long pause) does not see the assignments it missed:
    any of its partitions may have been another worker's meanwhile."""
    ownership = Ownership()
    ownership.on_assignment({0, 1}, generation=4)
    ownership.taken_over(ownership.take_over())
    ownership.on_assignment({0, 1}, generation=7)
    plan = ownership.take_over()
    assert plan.kept == set() and plan.new == {0, 1}


def test_a_take_over_overtaken_by_a_newer_assignment_is_done_again():
    ownership = Ownership()
    ownership.on_assignment({0, 1}, generation=1)
    plan = ownership.take_over()
    ownership.on_assignment({1}, generation=2)  # while the first one was reading
    ownership.taken_over(plan)
    again = ownership.take_over()
    assert again is not None and again.owned == {1} and again.new == {1}


@pytest.mark.integration
def test_the_reader_returns_each_keys_newest_record_of_the_partitions_asked_to_their_end(kafka):
    app_id = f"recovery-{os.urandom(3).hex()}"
    specs = changelog_specs(app_id, partitions=2, min_insync_replicas=1)
    ensure_topic_specs(kafka.connection, specs)
    topic = specs[0].name
    producer = Producer(kafka.connection.confluent_config())
    for i in range(3000):  # more than one consumer batch per partition
        producer.produce(topic, value=f"v{i}".encode(), key=f"k{i % 700}".encode(), partition=i % 2)
    producer.produce(topic, value=None, key=b"k1", partition=1)  # a tombstone removes k1
    producer.produce(topic, value=b"other", key=b"k5", partition=1)  # the newest record of a key wins
    producer.flush(30)

    reader = ChangelogReader(kafka.connection, timeout=60)
    one = reader.read(topic, [1])
    assert one[b"k5"] == b"other" and b"k1" not in one
    assert one[b"k3"] == b"v2803"  # k3 is written at i = 3, 703, ..., 2803, all to partition 1
    assert all(int(k[1:]) % 2 == 1 for k in one) and len(one) == 350 - 1  # partition 1: the odd keys
    both = reader.read(topic, [0, 1])
    assert len(both) == 700 - 1 and both[b"k0"] == b"v2800"
    assert reader.read(specs[1].name, [0, 1]) == {}  # an empty changelog


def test_the_same_assignment_told_twice_changes_nothing():
    ownership = Ownership()
    ownership.on_assignment({0, 1}, generation=1)
    ownership.taken_over(ownership.take_over())
    ownership.on_assignment({1}, generation=2)
    ownership.on_assignment({1}, generation=2)  # the agent's own look after the signal
    plan = ownership.take_over()
    assert plan.kept == {1} and plan.new == set()
