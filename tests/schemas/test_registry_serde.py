"""RegistrySerde behaviour that needs no registry: header checks and the error split.

The round trips against a real registry are in test_registry_integration.py.
"""

from __future__ import annotations

import pytest

from deploy.kafka.launcher import free_port
from schemas.registry import RegistrySerde, RegistryUnavailableError, subject_for
from schemas.serde import METER_READING, SerdeError, SingleObjectSerde

READING = {"meter_id": "M1", "feeder_id": "F1", "timestamp": 1_772_409_600_000, "energy_kwh": 0.5,
           "interval_seconds": 900, "voltage_v": None, "power_kw": None, "quality_flags": []}


@pytest.fixture
def nowhere() -> str:
    """A registry URL on a loopback port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"


def _serde(url: str, **kwargs) -> RegistrySerde:
    return RegistrySerde(url, **{"max.retries": 0}, **kwargs)


def test_subjects_follow_the_record_name_strategy():
    assert subject_for(METER_READING) == "io.wattsup.readings.MeterReading"


@pytest.mark.parametrize("data, message", [
    (b"", "too short for the schema-registry wire format"),
    (b"\x00\x00\x01", "too short"),
    (b"\x07\x00\x00\x00\x01\x02", "magic byte 0x07 is not 0x00"),
])
def test_bad_headers_are_serde_errors_without_asking_the_registry(nowhere, data, message):
    with pytest.raises(SerdeError, match=message):
        _serde(nowhere).decode(data)


def test_single_object_messages_are_read_during_a_migration(nowhere):
    """Topics written before a registry was configured stay readable (fingerprint, local catalog)."""
    data = SingleObjectSerde().encode(METER_READING, READING)
    assert _serde(nowhere).decode(data, raw_timestamps=True) == (METER_READING, READING)
    with pytest.raises(SerdeError, match="magic byte 0xc3 is not 0x00"):
        _serde(nowhere, accept_single_object=False).decode(data)


def test_an_unreachable_registry_is_not_a_serde_error(nowhere):
    """Callers dead-letter SerdeErrors; a registry outage must not send good messages there."""
    serde = _serde(nowhere)
    with pytest.raises(RegistryUnavailableError, match="failed while fetching schema id 7") as info:
        serde.decode(b"\x00\x00\x00\x00\x07\x02")
    assert not isinstance(info.value, SerdeError)
    with pytest.raises(RegistryUnavailableError, match=f"failed while registering {METER_READING}"):
        serde.encode(METER_READING, READING)
