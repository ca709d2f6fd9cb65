"""Incidents: one per event of a meter and kind, opening, growing and closing on the readings."""

from __future__ import annotations

from typing import Any

from detection.feedback import SUPPRESSED_BELOW_RAISED_SEVERITY, SUPPRESSED_IN_SCOPE
from detection.incidents import CLOSE_AFTER_NORMAL_READINGS, MAX_GAP_READINGS, IncidentTracker, incident_id

Q = 900_000  # a 15-minute interval, ms
T0 = 1_790_000_000_000


def anomaly(meter: str, i: int, kind: str = "outage", severity: str = "WARNING", score: float = 0.5,
            observed: float = 0.0, baseline: float = 0.3, feeder: str = "F1") -> dict[str, Any]:
    return {"meter_id": meter, "feeder_id": feeder, "timestamp": T0 + i * Q, "kind": kind, "severity": severity,
            "score": score, "observed": observed, "baseline": baseline,
            "causes": [{"feature": "zero_hours", "contribution": 1.0, "text": f"reading {i}"}]}


def feed(tracker: IncidentTracker, meter: str, steps: list[int], anomalies: list[dict[str, Any]],
         feeder: str = "F1", **kw: Any) -> list[dict[str, Any]]:
    """Readings of one meter at intervals ``steps``, the anomalies among them, as one batch."""
    n = len(steps)
    return tracker.observe([meter] * n, [feeder] * n, [T0 + i * Q for i in steps], [900] * n, [True] * n, anomalies,
                           **kw)


def suppressed(a: dict[str, Any], reason: str = SUPPRESSED_IN_SCOPE) -> dict[str, Any]:
    return {**a, "suppressed_by": reason}


def tolerating(readings: float):
    return lambda meter, kind, ts, interval: readings


def test_an_outage_of_several_readings_is_one_incident_that_opens_grows_and_closes():
    tracker = IncidentTracker()
    opened = feed(tracker, "M1", [0, 1], [anomaly("M1", 0), anomaly("M1", 1, severity="CRITICAL", score=0.9)])
    assert [r["event"] for r in opened] == ["opened"]
    record = opened[0]
    assert record["status"] == "open" and record["ended"] is None
    assert record["readings"] == 2 and record["peak_severity"] == "CRITICAL"
    assert record["started"] == T0 and record["last_seen"] == T0 + Q
    assert abs(record["energy_delta_kwh"] - (-0.6)) < 1e-9
    assert record["causes"][0]["text"] == "reading 1"
    assert record["incident_id"] == incident_id("M1", "outage", T0)

    grown = feed(tracker, "M1", [2], [anomaly("M1", 2)])
    assert [(r["event"], r["readings"], r["revision"]) for r in grown] == [("updated", 3, 6)]

    closing = feed(tracker, "M1", list(range(3, 3 + CLOSE_AFTER_NORMAL_READINGS)), [])
    assert [(r["event"], r["status"], r["closed_by"]) for r in closing] == [("closed", "closed", "recovered")]
    assert closing[0]["ended"] == T0 + (2 + CLOSE_AFTER_NORMAL_READINGS) * Q
    assert closing[0]["incident_id"] == record["incident_id"]
    assert len(tracker) == 0


def test_normal_readings_short_of_closing_emit_nothing_and_a_short_gap_keeps_one_incident():
    tracker = IncidentTracker()
    first = feed(tracker, "M1", [0], [anomaly("M1", 0)])
    gap = list(range(1, 1 + MAX_GAP_READINGS))
    assert feed(tracker, "M1", gap, []) == []
    again = feed(tracker, "M1", [MAX_GAP_READINGS + 1], [anomaly("M1", MAX_GAP_READINGS + 1)])
    assert [r["incident_id"] for r in again] == [first[0]["incident_id"]]
    assert again[0]["readings"] == 2


def test_after_closing_the_same_kind_opens_a_new_incident():
    tracker = IncidentTracker()
    first = feed(tracker, "M1", [0], [anomaly("M1", 0)])
    feed(tracker, "M1", list(range(1, 1 + CLOSE_AFTER_NORMAL_READINGS)), [])
    later = CLOSE_AFTER_NORMAL_READINGS + 1
    second = feed(tracker, "M1", [later], [anomaly("M1", later)])
    assert second[0]["event"] == "opened"
    assert second[0]["incident_id"] != first[0]["incident_id"]


def test_kinds_and_meters_are_separate_incidents():
    tracker = IncidentTracker()
    records = tracker.observe(
        ["M1", "M1", "M2"], ["F1", "F1", "F1"], [T0, T0 + Q, T0], [900] * 3, [True] * 3,
        [anomaly("M1", 0), anomaly("M1", 1, kind="spike", observed=3.0), anomaly("M2", 0)])
    assert sorted((r["meter_id"], r["kind"]) for r in records) == [("M1", "outage"), ("M1", "spike"), ("M2", "outage")]
    assert len(tracker) == 3
    # the spike reading is not an outage reading: it counts towards closing M1's outage
    assert tracker.open["M1"]["outage"].normal_run == 1


def test_escalation_is_its_own_event():
    tracker = IncidentTracker()
    feed(tracker, "M1", [0], [anomaly("M1", 0, severity="INFO")])
    up = feed(tracker, "M1", [1], [anomaly("M1", 1, severity="CRITICAL")])
    assert [(r["event"], r["peak_severity"]) for r in up] == [("escalated", "CRITICAL")]
    down = feed(tracker, "M1", [2], [anomaly("M1", 2, severity="INFO")])
    assert [(r["event"], r["peak_severity"]) for r in down] == [("updated", "CRITICAL")]


def test_opened_and_closed_in_one_batch_emits_both_records_in_order():
    tracker = IncidentTracker()
    steps = list(range(0, 1 + CLOSE_AFTER_NORMAL_READINGS))
    records = feed(tracker, "M1", steps, [anomaly("M1", 0)])
    assert [(r["event"], r["status"], r["revision"]) for r in records] == [("opened", "open", 2),
                                                                           ("closed", "closed", 3)]


def test_the_batch_cut_does_not_change_the_records():
    anomalies = [anomaly("M1", i, severity="CRITICAL" if i == 2 else "WARNING") for i in (0, 1, 2, 4)]
    steps = list(range(0, 10))
    whole = IncidentTracker()
    all_at_once = feed(whole, "M1", steps, anomalies)
    cut = IncidentTracker()
    one_by_one = [r for s in steps for r in feed(cut, "M1", [s], [a for a in anomalies if a["timestamp"] == T0 + s * Q])]
    assert all_at_once[-1] == one_by_one[-1]
    assert all_at_once[-1]["readings"] == 4 and all_at_once[-1]["status"] == "closed"


def test_late_and_unscored_readings_change_nothing():
    tracker = IncidentTracker()
    feed(tracker, "M1", [5], [anomaly("M1", 5)])
    before = tracker.open["M1"]["outage"].state()
    assert feed(tracker, "M1", [1, 2, 3, 4], []) == []  # older than what the incident has seen
    assert tracker.observe(["M1"] * 3, ["F1"] * 3, [T0 + i * Q for i in (6, 7, 8)], [900] * 3, [False] * 3, []) == []
    assert tracker.open["M1"]["outage"].state() == before


def test_an_operator_closes_an_open_incident_once():
    tracker = IncidentTracker()
    opened = feed(tracker, "M1", [0, 1], [anomaly("M1", 0), anomaly("M1", 1)])
    inc = opened[0]["incident_id"]
    closed = tracker.close(inc, T0 + 2 * Q)
    assert [(r["event"], r["closed_by"], r["ended"]) for r in closed] == [("closed", "operator", T0 + 2 * Q)]
    assert tracker.close(inc, T0 + 3 * Q) == []
    assert feed(tracker, "M1", [2], []) == []


def test_export_and_import_continue_the_same_incident():
    tracker = IncidentTracker()
    opened = feed(tracker, "M1", [0], [anomaly("M1", 0)])
    feed(tracker, "M1", [1], [])
    state = tracker.export_feeder("F1")
    assert tracker.export_feeder("F2") == []
    successor = IncidentTracker()
    successor.import_feeder("F1", state)
    grown = feed(successor, "M1", [2], [anomaly("M1", 2)])
    assert grown[0]["incident_id"] == opened[0]["incident_id"]
    assert grown[0]["revision"] == 4 and grown[0]["readings"] == 2
    # import replaces: a feeder taken over again forgets what it knew
    successor.import_feeder("F1", [])
    assert len(successor) == 0


def test_ids_are_deterministic_and_safe_for_any_meter_id():
    hostile = '"><img src=x onerror=alert(1)>'
    ident = incident_id(hostile, "spike", T0)
    assert ident == incident_id(hostile, "spike", T0)
    assert ident.startswith("inc-") and ident[4:].isalnum() and len(ident) == 24


def test_an_event_suppressed_by_feedback_stays_silent_until_it_outgrows_what_was_dismissed():
    tracker = IncidentTracker()
    quiet = [suppressed(anomaly("M1", i)) for i in range(4)]
    assert feed(tracker, "M1", list(range(4)), quiet, tolerated=tolerating(4)) == []
    assert len(tracker) == 0 and all(a["suppressed_by"] == SUPPRESSED_IN_SCOPE for a in quiet)

    fifth = suppressed(anomaly("M1", 4, severity="CRITICAL"))
    records = feed(tracker, "M1", [4], [fifth], tolerated=tolerating(4))
    assert fifth["suppressed_by"] is None  # it stands: the event outgrew the mark
    assert [(r["event"], r["readings"], r["started"], r["peak_severity"]) for r in records] == [
        ("opened", 5, T0, "CRITICAL")]
    assert records[0]["incident_id"] == incident_id("M1", "outage", T0)
    later = suppressed(anomaly("M1", 5))
    assert [r["event"] for r in feed(tracker, "M1", [5], [later], tolerated=tolerating(4))] == ["updated"]
    assert later["suppressed_by"] is None


def test_a_silenced_event_that_ends_in_time_leaves_no_record_and_other_suppressions_are_normal_readings():
    tracker = IncidentTracker()
    short = [suppressed(anomaly("M1", i)) for i in range(2)]
    assert feed(tracker, "M1", list(range(2 + CLOSE_AFTER_NORMAL_READINGS)), short, tolerated=tolerating(4)) == []
    assert not tracker.open and all(a["suppressed_by"] == SUPPRESSED_IN_SCOPE for a in short)

    below = [suppressed(anomaly("M2", i), SUPPRESSED_BELOW_RAISED_SEVERITY) for i in range(10)]
    assert feed(tracker, "M2", list(range(10)), below, tolerated=tolerating(1)) == []
    assert not tracker.open and all(a["suppressed_by"] == SUPPRESSED_BELOW_RAISED_SEVERITY for a in below)


def test_a_silenced_event_outlasting_its_scope_opens_when_its_anomalies_stand_again():
    tracker = IncidentTracker()
    feed(tracker, "M1", [0, 1], [suppressed(anomaly("M1", 0)), suppressed(anomaly("M1", 1))])
    records = feed(tracker, "M1", [2], [anomaly("M1", 2)])  # the scope ended: it stands
    assert [(r["event"], r["readings"], r["started"]) for r in records] == [("opened", 3, T0)]


def test_silenced_incidents_are_kept_with_the_feeder_state():
    tracker = IncidentTracker()
    feed(tracker, "M1", [0, 1], [suppressed(anomaly("M1", 0)), suppressed(anomaly("M1", 1))], tolerated=tolerating(3))
    restored = IncidentTracker()
    restored.import_feeder("F1", tracker.export_feeder("F1"))
    records = feed(restored, "M1", [2, 3], [suppressed(anomaly("M1", 2)), suppressed(anomaly("M1", 3))],
                   tolerated=tolerating(3))
    assert [(r["event"], r["readings"]) for r in records] == [("opened", 4)]
