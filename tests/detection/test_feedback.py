"""Operator feedback: suppression within a scope, a bounded and reversible loss of sensitivity per kind."""

from __future__ import annotations

import pytest

from detection.feedback import (
    OUTGROWN_EXTRA_READINGS,
    OUTGROWN_FACTOR,
    SEVERITY_STEPS_MAX,
    SUPPRESSED_BELOW_RAISED_SEVERITY,
    SUPPRESSED_IN_SCOPE,
    FeedbackMark,
    FeedbackPolicy,
)

DAY = 86_400_000
T0 = 1_790_000_000_000


def mark(verdict: str, incident: str | None = "inc-1", kind: str = "spike", expires: int | None = T0 + DAY,
         **kw) -> FeedbackMark:
    return FeedbackMark(meter_id="M1", kind=kind, verdict=verdict, created_at=T0, incident_id=incident,
                        expires_at=expires, **kw)


def test_a_false_alarm_suppresses_its_kind_on_its_meter_within_the_scope_only():
    policy = FeedbackPolicy()
    policy.apply(mark("false_alarm"))
    assert policy.judge("M1", "spike", "CRITICAL", T0 + 1) == SUPPRESSED_IN_SCOPE
    assert policy.judge("M1", "outage", "INFO", T0 + 1) is None
    assert policy.judge("M2", "spike", "INFO", T0 + 1) is None
    # after the scope: one level more needed for this kind on this meter
    assert policy.judge("M1", "spike", "INFO", T0 + DAY) == SUPPRESSED_BELOW_RAISED_SEVERITY
    assert policy.judge("M1", "spike", "WARNING", T0 + DAY) is None


def test_until_revoked_and_revoking_undoes_everything():
    policy = FeedbackPolicy()
    policy.apply(mark("expected", expires=None))
    assert policy.judge("M1", "spike", "INFO", T0 + 400 * DAY) == SUPPRESSED_IN_SCOPE
    policy.apply(mark("expected", expires=None, revoked=True))
    assert policy.judge("M1", "spike", "INFO", T0 + 400 * DAY) is None
    assert policy.severity_steps("M1", "spike") == 0


def test_the_loss_of_sensitivity_is_bounded():
    policy = FeedbackPolicy()
    for i in range(5):
        policy.apply(mark("false_alarm", incident=f"inc-{i}"))
    assert policy.severity_steps("M1", "spike") == SEVERITY_STEPS_MAX
    assert policy.judge("M1", "spike", "WARNING", T0 + DAY) == SUPPRESSED_BELOW_RAISED_SEVERITY
    assert policy.judge("M1", "spike", "CRITICAL", T0 + DAY) is None  # the worst always reaches someone


def test_confirmed_never_changes_what_is_flagged():
    policy = FeedbackPolicy()
    policy.apply(mark("confirmed"))
    assert policy.judge("M1", "spike", "INFO", T0 + 1) is None
    assert [m.incident_id for m in policy.confirmed()] == ["inc-1"]


def test_a_newer_mark_of_the_same_incident_replaces_the_older():
    policy = FeedbackPolicy()
    policy.apply(mark("false_alarm"))
    policy.apply(mark("confirmed"))
    assert policy.judge("M1", "spike", "INFO", T0 + 1) is None
    assert len(policy.marks) == 1


def test_a_tombstone_forgets_the_mark():
    policy = FeedbackPolicy()
    m = mark("false_alarm")
    policy.apply(m)
    policy.remove(m.key)
    assert policy.judge("M1", "spike", "INFO", T0 + 1) is None and not policy.marks


def test_marks_are_validated_and_keyed_per_incident_or_kind():
    with pytest.raises(ValueError):
        mark("maybe")
    assert mark("confirmed").key == "M1|inc-1"
    assert mark("expected", incident=None, kind="outage").key == "M1|kind:outage"


def test_confirmed_readings_are_the_confirmed_incidents_windows_only():
    import numpy as np

    from detection.feedback import confirmed_readings

    meters = np.array(["M1", "M1", "M1", "M2", "M1"])
    ts = np.array([T0 - 1, T0, T0 + 10, T0 + 5, T0 + 11])
    marks = [mark("confirmed", started=T0, ended=T0 + 10),
             FeedbackMark(meter_id="M2", kind="spike", verdict="false_alarm", created_at=T0, started=T0, ended=T0 + 10),
             FeedbackMark(meter_id="M1", kind="spike", verdict="confirmed", created_at=T0, incident_id="inc-2",
                          started=T0 + 11, ended=T0 + 11, revoked=True)]
    assert confirmed_readings(meters, ts, marks).tolist() == [False, True, True, False, False]


def test_labelled_readings_mark_confirmed_windows_of_marked_meters_only():
    import pandas as pd

    from detection.feedback import labelled_readings, mark_for_incident

    stamps = pd.to_datetime([T0 + i * 3_600_000 for i in range(4)], unit="ms", utc=True).as_unit("ms")
    frame = pd.DataFrame({"timestamp": list(stamps) * 2, "meter_id": ["M1"] * 4 + ["M9"] * 4, "kwh": [1.0] * 8})
    incident = {"incident_id": "inc-1", "meter_id": "M1", "feeder_id": "F1", "kind": "outage",
                "started": T0 + 3_600_000, "last_seen": T0 + 2 * 3_600_000}
    marks = [mark_for_incident(incident, "confirmed", created_at=T0)]
    out = labelled_readings(frame, marks)
    assert list(out.columns) == ["timestamp", "meter_id", "kwh", "label", "event_id"]
    assert out["meter_id"].unique().tolist() == ["M1"]
    assert out["label"].tolist() == [0, 1, 1, 0]
    assert out["event_id"].tolist() == ["", "inc-1", "inc-1", ""]
    assert marks[0].close_incident is False and marks[0].expires_at is not None


def test_a_mark_for_an_incident_scopes_from_its_last_reading():
    from detection.feedback import DAY_MS, mark_for_incident

    incident = {"incident_id": "inc-1", "meter_id": "M1", "feeder_id": "F1", "kind": "spike",
                "started": T0, "last_seen": T0 + 5}
    made = mark_for_incident(incident, "false_alarm", created_at=T0, days=2)
    assert made.expires_at == T0 + 5 + 2 * DAY_MS and made.close_incident and made.key == "M1|inc-1"
    assert mark_for_incident(incident, "expected", created_at=T0, days=None).expires_at is None
    with pytest.raises(ValueError):
        mark_for_incident(incident, "expected", created_at=T0, days=-1)


def test_the_tolerated_length_follows_the_longest_dismissed_incident_in_scope():
    policy = FeedbackPolicy()
    q = 900  # seconds
    policy.apply(mark("false_alarm", incident="inc-1", started=T0, ended=T0))  # one reading
    policy.apply(mark("false_alarm", incident="inc-2", started=T0, ended=T0 + 3 * q * 1000))  # four readings
    assert policy.tolerated_readings("M1", "spike", T0 + 1, q) == OUTGROWN_FACTOR * 4 + OUTGROWN_EXTRA_READINGS
    assert policy.tolerated_readings("M1", "spike", T0 + 1, 2 * q) == OUTGROWN_FACTOR * 2.5 + OUTGROWN_EXTRA_READINGS
    # a mark on the kind itself names no event: the kind is expected, whatever its length
    policy.apply(mark("expected", incident=None))
    assert policy.tolerated_readings("M1", "spike", T0 + 1, q) == float("inf")
