"""Operator feedback: suppression within a scope, a bounded and reversible loss of sensitivity per kind."""

from __future__ import annotations

import pytest

from detection.feedback import (
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
