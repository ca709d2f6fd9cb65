"""The run fence of a forecaster group instance, without a broker (the group itself: test_group_integration.py)."""

from __future__ import annotations

import threading

import pytest

from forecaster.group import RunShare, partition_ranges


def test_partition_ranges_are_short_and_exact():
    assert partition_ranges([3, 0, 1, 2, 8, 10, 11]) == "0-3,8,10-11"
    assert partition_ranges([5]) == "5"
    assert partition_ranges([]) == "none"


def test_a_revoked_partition_leaves_the_run_and_its_publications_are_flushed_once():
    share = RunShare({0, 1, 2})
    flushes: list[frozenset[int]] = []
    share.on_handover(lambda: flushes.append(share.revoked))
    assert share.owns(1) and not share.owns(3)
    assert share.revoke([1, 3]) == frozenset({1})  # 3 was assigned after the run started: not part of it
    assert not share.owns(1) and share.owned == frozenset({0, 2})
    assert share.revoke([1]) == frozenset()  # already out: nothing more to flush
    assert flushes == [frozenset({1})]
    share.on_handover(None)  # the run's publisher is closed
    assert share.revoke([0]) == frozenset({0}) and flushes == [frozenset({1})]


def test_a_revocation_waits_for_a_send_in_progress():
    """The fence: a partition cannot leave the run between the run's ownership check and its send."""
    share = RunShare({0})
    checked, revoked = threading.Event(), threading.Event()
    order: list[str] = []
    revoker = threading.Thread(target=lambda: (checked.wait(5), share.revoke([0]), order.append("revoked"),
                                               revoked.set()))
    revoker.start()
    with share.holding():
        assert share.owns(0)
        checked.set()
        assert not revoked.wait(0.3)  # the revocation is held off while the send is under way
        order.append("sent")
    revoker.join(5)
    assert order == ["sent", "revoked"] and not share.owns(0)


class _Consumer:
    """What the rebalance callbacks call on the membership consumer."""

    def incremental_assign(self, partitions) -> None:
        pass

    def pause(self, partitions) -> None:
        pass


def test_after_its_session_expired_a_run_waits_for_the_group_to_take_the_instance_back():
    """A broker outage expires the membership: the run after it must not forecast an empty share and call
    that a success, it waits for the new assignment (or fails as not started)."""
    from confluent_kafka import TopicPartition

    from forecaster.group import ForecastGroup, GroupNotJoined
    from foundation.kafka_settings import KafkaConnection

    group = ForecastGroup(KafkaConnection(bootstrap_servers="127.0.0.1:9"), "readings", "g", session_timeout_ms=6000)
    consumer = _Consumer()
    group._on_assign(consumer, [TopicPartition("readings", p) for p in (0, 1)])
    assert group.begin_run(0.1).partitions == {0, 1}
    group._on_revoke(consumer, [TopicPartition("readings", 1)])  # a rebalance: still a member
    assert group.begin_run(0.1).partitions == {0}
    group._on_lost(consumer, [TopicPartition("readings", 0)])
    with pytest.raises(GroupNotJoined):
        group.begin_run(0.1)
    group._on_assign(consumer, [])  # taken back, with no partition to forecast (more instances than partitions)
    assert group.begin_run(0.1).partitions == frozenset()
    group._consumer.close()
