"""Runtime sensitivity: control records applied fleet-wide and per meter, bad ones ignored."""

from __future__ import annotations

import json

import pytest

from foundation.kafka_settings import KafkaConnection, TopicNames
from foundation.sensitivity import FLEET_KEY, SensitivityWatcher, control_key, validate_sensitivity


def watcher(**kwargs) -> SensitivityWatcher:
    return SensitivityWatcher(KafkaConnection(bootstrap_servers="127.0.0.1:1"), TopicNames(), **kwargs)


def record(value: float) -> bytes:
    return json.dumps({"sensitivity": value, "updated_at": 0}).encode()


def test_fleet_and_meter_settings_and_their_removal():
    applied = []
    w = watcher(on_update=lambda: applied.append(1))
    w.apply(FLEET_KEY, record(2.0))
    w.apply(control_key("M7"), record(0.5))
    assert w.for_meter("M1") == 2.0 and w.for_meter("M7") == 0.5
    w.apply(control_key("M7"), None)  # tombstone: back to the fleet setting
    w.apply(FLEET_KEY, None)
    assert w.for_meter("M7") == 1.0 and len(applied) == 4 == w.updates_applied


def test_out_of_range_or_malformed_records_are_ignored():
    w = watcher()
    w.apply(FLEET_KEY, record(50.0))
    w.apply(FLEET_KEY, b"{not json")
    assert w.for_meter("M1") == 1.0 and w.updates_applied == 0
    with pytest.raises(ValueError, match="between 0.1 and 10"):
        validate_sensitivity(0.01)
