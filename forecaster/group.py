"""A forecaster instance's share of the fleet, given by Kafka's consumer group protocol.

Several ``wattsup forecast schedule`` instances with the same ``WATTSUP_FORECAST_GROUP_ID`` each keep
one consumer subscribed to the readings topic in that group, alive between runs: a thread polls it,
and its partitions are paused as soon as they are assigned, so it never fetches a record. The
readings partitions Kafka assigns that consumer are the instance's share: a run reads only their
history and forecasts exactly the meters whose readings (keyed by feeder) are in them. When an
instance joins, leaves, or dies and its session times out, Kafka moves partitions (the
cooperative-sticky assignor moves only those that must move) and each instance's next run follows.

Rebalance during a run: the run is fenced by its assignment. A run forecasts the partitions the
instance owned when it started (:class:`RunShare`); partitions assigned meanwhile wait for the next
run. A partition revoked (or lost) meanwhile is fenced inside the revocation callback, that is
before Kafka can give it to another instance: from then on none of its meters is published by this
run, what was already published is flushed to the broker, and fits of its meters not yet handed to
the fitting processes are not started; the run counts those meters as handed over, and its new
owner forecasts them in its next run. So no meter is forecast twice in one run, two instances never
publish for one partition at the same time (a stalled instance that Kafka has already replaced is
the exception: its late forecasts are as valid as any, and the newest per meter wins on the
compacted topic), and every partition always has an owner whose next run covers every meter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from forecaster import metrics
from foundation.kafka_logging import RateLimitedLog
from foundation.kafka_settings import KafkaConnection

if TYPE_CHECKING:  # the Kafka client is imported where it is used: the fitting processes import this module too
    from confluent_kafka import Consumer, TopicPartition

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
"""How long one poll of the membership consumer waits: rebalance callbacks run within a poll, so a
revocation is fenced within this time, far inside the group's rebalance timeout."""
ASSIGNOR = "cooperative-sticky"
"""Incremental rebalancing: a member keeps the partitions that do not move, so a run in progress loses
only those Kafka gives to a newcomer, not its whole share as with the eager assignors."""


def partition_ranges(partitions: Iterable[int]) -> str:
    """``0-3,8,10-11``: a short, exact form of a set of partitions for log and summary lines."""
    out: list[str] = []
    ordered = sorted(set(partitions))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out) or "none"


class RunShare:
    """The readings partitions one run forecasts, and the fence that takes a partition out of it.

    The run publishes a meter's forecast only while :meth:`holding` and :meth:`owns` its partition;
    :meth:`revoke` (called by the group's revocation callback) marks partitions under the same lock,
    so after it returns nothing more of theirs is sent, and then flushes what was (``on_handover``).
    """

    def __init__(self, partitions: Iterable[int]) -> None:
        self.partitions = frozenset(partitions)
        self._revoked: set[int] = set()
        self._lock = threading.RLock()
        self._flush: Callable[[], None] | None = None

    def owns(self, partition: int) -> bool:
        with self._lock:
            return partition in self.partitions and partition not in self._revoked

    @property
    def owned(self) -> frozenset[int]:
        """The run's partitions not revoked so far."""
        with self._lock:
            return self.partitions - self._revoked

    @property
    def revoked(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._revoked)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """No revocation completes while the caller holds this (it checks :meth:`owns`, then publishes or saves)."""
        with self._lock:
            yield

    def on_handover(self, flush: Callable[[], None] | None) -> None:
        """What to call after fencing revoked partitions: flush the run's publisher (None once it is closed)."""
        with self._lock:
            self._flush = flush

    def revoke(self, partitions: Iterable[int]) -> frozenset[int]:
        """Fence ``partitions`` out of this run; returns those that were still part of it."""
        with self._lock:
            moved = frozenset((set(partitions) & self.partitions) - self._revoked)
            self._revoked |= moved
            flush = self._flush
        if moved:
            log.info("partitions %s move to another instance during this run: their remaining meters are "
                     "left to the new owner", partition_ranges(moved))
            if flush is not None:
                flush()  # what this run published for them reaches the broker before the new owner starts
        return moved


class GroupNotJoined(RuntimeError):
    """No partitions were assigned in time: Kafka unreachable, or the group still forming."""


class ForecastGroup:
    """Membership of this instance in the forecaster group; :meth:`start`, then :meth:`begin_run` per run."""

    def __init__(self, connection: KafkaConnection, topic: str, group_id: str, *, session_timeout_ms: int) -> None:
        from confluent_kafka import Consumer

        from foundation.kafka_clients import consumer_config
        from foundation.kafka_logging import quiet_config

        self.topic = topic
        self.group_id = group_id
        self._consumer = Consumer({
            **consumer_config(connection, group_id),
            "partition.assignment.strategy": ASSIGNOR,
            "session.timeout.ms": session_timeout_ms,
            **quiet_config("forecast-group"),
        })
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._run: RunShare | None = None
        self._joined = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._say = RateLimitedLog(log)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        self._thread = threading.Thread(target=self._poll, name="forecast-group", daemon=True)
        self._thread.start()
        log.info("joining forecaster group %s on %s", self.group_id, self.topic)

    def stop(self) -> None:
        """Leave the group at once (the other instances take the partitions over without waiting for a timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self._consumer.close()
        metrics.PARTITIONS_OWNED.set(0)

    def _poll(self) -> None:
        from confluent_kafka import KafkaException

        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(POLL_SECONDS)
            except KafkaException as exc:  # a fatal client error: say so, keep the schedule alive
                self._say.warning("poll", "forecaster group consumer: %s", exc)
                self._stop.wait(POLL_SECONDS)
                continue
            if msg is not None and msg.error() is not None:
                self._say.warning(f"error:{msg.error().code()}", "forecaster group consumer: %s", msg.error())

    # -- rebalance callbacks (run in the polling thread) ----------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)  # membership only: the history is read apart, per run
        with self._lock:
            self._owned |= {tp.partition for tp in partitions}
            owned = set(self._owned)
        metrics.PARTITIONS_OWNED.set(len(owned))
        self._joined.set()
        if partitions:
            log.info("assigned readings partitions %s; this instance now forecasts partitions %s (from its next run)",
                     partition_ranges(tp.partition for tp in partitions), partition_ranges(owned))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up({tp.partition for tp in partitions}, "revoked")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The session expired (the broker was away, or this instance stalled): it is no member until the
        # group takes it back, so the next run waits for that (begin_run) instead of running on an empty
        # share and reporting a forecast of nothing as a successful run.
        self._joined.clear()
        self._give_up({tp.partition for tp in partitions}, "lost (session expired)")

    def _give_up(self, partitions: set[int], how: str) -> None:
        with self._lock:
            self._owned -= partitions
            owned = set(self._owned)
            run = self._run
        metrics.PARTITIONS_OWNED.set(len(owned))
        if partitions:
            log.info("readings partitions %s %s; this instance now forecasts partitions %s",
                     partition_ranges(partitions), how, partition_ranges(owned))
        if run is not None:
            run.revoke(partitions)

    # -- runs -----------------------------------------------------------------------------
    def begin_run(self, timeout: float) -> RunShare:
        """The partitions the next run forecasts (waiting up to ``timeout`` for the first assignment, or for the
        group to take the instance back after its session expired).

        While the thread polls, nothing else touches the consumer (a metadata request from another thread
        meanwhile can hang in the client), so a missing readings topic is reported by the run's history read.
        """
        if not self._joined.wait(timeout):
            raise GroupNotJoined(f"no readings partitions assigned by forecaster group {self.group_id!r} on "
                                 f"{self.topic} within {timeout:.0f} s: is Kafka reachable and does the topic exist?")
        with self._lock:
            self._run = RunShare(self._owned)
            return self._run

    def end_run(self, share: RunShare) -> None:
        with self._lock:
            if self._run is share:
                self._run = None
