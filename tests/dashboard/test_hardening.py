"""Issue 13 findings on the API (no broker): each test reproduces one finding and checks the fix."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dashboard.store import prune_readings
from schemas.limits import FUTURE_TOLERANCE
from tests.dashboard.conftest import reading_row

MINUTE = 60_000


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- 1. timestamps ----------------------------------------------------------------------------
@pytest.mark.parametrize("timestamp", ["9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z",
                                       1, 1795000000, "1795000000", 1.5, "2126-01-01T00:00:00Z"])
def test_readings_outside_the_sane_time_window_are_rejected(timestamp):
    from dashboard.api_write import validate_readings

    valid, rejected, _ = validate_readings([{"meter_id": "M1", "timestamp": timestamp, "kwh": 1.0}])
    assert valid == [] and [e["field"] for e in rejected[0]["errors"]] == ["timestamp"], rejected


def test_readings_inside_the_window_are_accepted():
    from dashboard.api_write import validate_readings

    now = datetime.now(timezone.utc)
    stamps = ["2000-01-01T00:00:00Z", _iso(now), _iso(now + FUTURE_TOLERANCE - timedelta(minutes=5)),
              (now + timedelta(hours=2)).astimezone(timezone(timedelta(hours=5))).isoformat()]
    valid, rejected, _ = validate_readings([{"meter_id": "M1", "timestamp": t, "kwh": 1.0} for t in stamps])
    assert rejected == [] and len(valid) == len(stamps)


def test_one_reading_far_in_the_future_does_not_prune_stored_readings(dash):
    """The issue's reproduction: 1,440 readings, then one at 2126-01-01 (as a bad clock could deliver it
    through Kafka before this fix), then the ingest's prune: every one of the 1,440 is still served."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = int(now.timestamp() * 1000) - 1440 * MINUTE
    dash.store(readings=[reading_row("M1", start + i * MINUTE, 1.0) for i in range(1440)])
    future = int(datetime(2126, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    dash.store(readings=[reading_row("CLOCK", future, 1.0)])
    with dash.service.sessions.begin() as session:
        removed = prune_readings(session, int(dash.settings.readings_retention_days * 86_400_000))
    assert removed == 0
    assert len(dash.client.get("/api/v1/series", params={"meter_id": "M1"}).json()["readings"]) == 1440
