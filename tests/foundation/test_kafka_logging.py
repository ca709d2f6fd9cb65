"""Outage lines of client libraries are held back: the first of a kind at once, then one a minute with a count."""

from __future__ import annotations

import logging

from foundation.kafka_logging import client_library_throttle


def _record(name: str, level: int, msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeated_aiokafka_errors_pass_once_a_period_with_a_count():
    now = [1000.0]
    throttle = client_library_throttle(period=60.0, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"
    passed = [throttle.filter(_record("aiokafka.conn", logging.ERROR, template, 1, f"refused {i}"))
              for i in range(500)]
    assert passed.count(True) == 1  # five hundred reconnect failures within the minute: one line
    other = _record("aiokafka.consumer.group_coordinator", logging.ERROR, "Group Coordinator Request failed: %s", "x")
    assert throttle.filter(other)  # another kind of line is told too
    now[0] += 61  # a minute later
    later = _record("aiokafka.conn", logging.ERROR, template, 1, "refused")
    assert throttle.filter(later) and "(and 499 more like it" in later.getMessage()


def test_info_lines_and_other_loggers_always_pass():
    throttle = client_library_throttle(period=60.0)
    assert all(throttle.filter(_record("faust.worker", logging.INFO, "Ready")) for _ in range(5))
    assert all(throttle.filter(_record("stream_processors.app", logging.ERROR, "same")) for _ in range(5))


def test_the_shared_backoff_doubles_to_half_a_minute_and_survives_an_outage_of_days():
    """Every service's own retries (sensitivity follower, dashboard ingest and live feed, the worker's
    patient steps) wait this long; after thousands of attempts it must still answer, not overflow."""
    from foundation.kafka_logging import retry_wait

    assert [retry_wait(a) for a in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert retry_wait(0) == 1.0
    assert retry_wait(10_000) == 30.0  # about three and a half days at 30 s an attempt
