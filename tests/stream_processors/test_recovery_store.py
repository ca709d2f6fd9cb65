"""The feeder tables' store holds recovered records until they are taken, and only of owned partitions."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
from faust.stores import by_url
from faust.types import TP

from stream_processors.app import RECOVERY_STORE
from stream_processors.recovery_store import Store


class FeederPartitions:
    """The table side the store uses: a key's partition is its feeder's (here the feeder's number)."""

    name = "feeder-state"

    def partition_for_key(self, key: bytes) -> int:
        return int(key.split(b"|")[0][1:])


def changelog_event(key: bytes, value: bytes | None) -> SimpleNamespace:
    return SimpleNamespace(key=key, value=value, message=SimpleNamespace(value=value))


def store() -> Store:
    app = faust.App("recovery-store-test", broker="memory://")
    return by_url(RECOVERY_STORE)(RECOVERY_STORE, app, FeederPartitions())


def test_the_worker_url_selects_this_store():
    assert isinstance(store(), Store)


def test_recovery_keeps_the_newest_record_per_key_and_a_tombstone_removes_it():
    s = store()
    s.apply_changelog_batch([changelog_event(b"F1|fast", b"old"), changelog_event(b"F1|h3", b"slot"),
                             changelog_event(b"F1|fast", b"new"), changelog_event(b"F2|fast", b"x"),
                             changelog_event(b"F2|fast", None)], to_key=lambda k: k, to_value=lambda v: v)
    assert dict(s.data) == {b"F1|fast": b"new", b"F1|h3": b"slot"}
    assert s.pop(b"F1|fast") == b"new" and b"F1|fast" not in s.data  # taken: the store no longer holds it


def test_records_of_partitions_not_owned_after_recovery_are_dropped():
    s = store()
    s.apply_changelog_batch([changelog_event(b"F1|fast", b"a"), changelog_event(b"F2|fast", b"b"),
                             changelog_event(b"F3|h1", b"c")], to_key=lambda k: k, to_value=lambda v: v)
    asyncio.run(s.on_recovery_completed({TP("app-feeder-state-changelog", 1), TP("app-feeder-state-changelog", 3)},
                                        {TP("app-feeder-state-changelog", 2)}))
    assert dict(s.data) == {b"F1|fast": b"a", b"F3|h1": b"c"}
