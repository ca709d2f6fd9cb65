"""Incidents in the stream scorer: kept with the meter state, never repeated by a successor, and
operator feedback applied live."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from detection.feedback import SUPPRESSED_IN_SCOPE, FeedbackMark
from stream_processors.incidents import StreamIncidents
from stream_processors.scoring import StreamScorer
from tests.stream_processors.scoring_fleet import (
    WorkerTable,
    fresh_tables,
    model_and_messages,
    run_in_batches,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return model_and_messages(tmp_path_factory.mktemp("models"))


def run(scorer: StreamScorer, serde, messages, batch: int = 40) -> tuple[list[dict], list[dict]]:
    """(anomalies, incident records) of the messages, in micro-batches, state persisted after each."""
    return run_in_batches(scorer, serde, messages, batch)


def latest(records: list[dict]) -> dict[str, dict]:
    """The newest record of each incident: what the compacted topic keeps."""
    out: dict[str, dict] = {}
    for r in records:
        assert r["revision"] > out.get(r["incident_id"], {"revision": -1})["revision"]
        out[r["incident_id"]] = r
    return out


def test_every_anomaly_that_stands_belongs_to_one_incident(setup):
    model_dir, serde, messages = setup
    scorer = StreamScorer(model_dir, serde)
    scorer.attach_tables(*fresh_tables())
    anomalies, records = run(scorer, serde, messages)
    final = latest(records)
    assert anomalies and final
    assert sum(r["readings"] for r in final.values()) == len(anomalies)
    assert len(final) < len(anomalies)  # grouping happened
    opened = [r for r in records if r["event"] == "opened"]
    assert len(opened) == len(final)  # exactly one opening per incident
    assert len([r for r in records if r["event"] == "closed"]) == sum(r["status"] == "closed" for r in final.values())


def cut_inside_an_incident(model_dir, serde, messages, batch: int = 40) -> int:
    """The first batch boundary past a third of the messages where some incident is open."""
    scorer = StreamScorer(model_dir, serde)
    scorer.attach_tables(*fresh_tables())
    for s in range(0, len(messages), batch):
        if s >= len(messages) // 3 and scorer.incidents.open_count:
            return s
        run(scorer, serde, messages[s:s + batch])
    raise AssertionError("no incident open at any batch boundary")


def test_a_restored_worker_continues_the_same_incidents(setup):
    model_dir, serde, messages = setup
    cut = cut_inside_an_incident(model_dir, serde, messages)
    uninterrupted = StreamScorer(model_dir, serde)
    uninterrupted.attach_tables(*fresh_tables())
    run(uninterrupted, serde, messages[:cut])
    _, after = run(uninterrupted, serde, messages[cut:])

    first = StreamScorer(model_dir, serde)
    state: dict = {}
    first.attach_tables(WorkerTable(state), WorkerTable({}))
    run(first, serde, messages[:cut])
    open_at_cut = {i.incident_id for i in first.incidents.tracker.open_incidents()}
    assert open_at_cut, "the cut should fall inside some incident"
    restored = StreamScorer(model_dir, serde)
    restored.attach_tables(WorkerTable(dict(state), recover=True), WorkerTable({}))
    _, got = run(restored, serde, messages[cut:])
    assert got == after
    continued = {r["incident_id"] for r in got if r["event"] != "opened"}
    assert open_at_cut & continued


def test_a_successor_does_not_repeat_incident_records_emitted_before_the_state_was_saved(setup):
    model_dir, serde, messages = setup
    cut = cut_inside_an_incident(model_dir, serde, messages)
    first = StreamScorer(model_dir, serde)
    state: dict = {}
    first.attach_tables(WorkerTable(state), WorkerTable({}))
    _, before = run(first, serde, messages[:cut])
    saved = dict(state)
    _, emitted_after_save = run(first, serde, messages[cut:cut + 40])  # out, then the crash
    assert emitted_after_save
    on_topic: dict[str, int] = {}
    for r in emitted_after_save:
        on_topic[r["incident_id"]] = max(on_topic.get(r["incident_id"], -1), r["revision"])

    def incidents_since(feeder: str, since_ms: int) -> dict[str, int]:
        return {i: rev for i, rev in on_topic.items()
                if any(r["incident_id"] == i and r["feeder_id"] == feeder for r in emitted_after_save)}

    successor = StreamScorer(model_dir, serde, incidents=StreamIncidents(incidents_since))
    successor.attach_tables(WorkerTable(dict(saved), recover=True), WorkerTable({}))
    _, again = run(successor, serde, messages[cut:], batch=25)  # delivered again, cut differently
    topic = before + emitted_after_save + again
    for incident in {r["incident_id"] for r in topic}:
        events = [r["event"] for r in topic if r["incident_id"] == incident]
        assert events.count("opened") <= 1 and events.count("closed") <= 1, events
        revisions = [r["revision"] for r in topic if r["incident_id"] == incident]
        assert revisions == sorted(set(revisions)), revisions  # never twice, never backwards

    uninterrupted = StreamScorer(model_dir, serde)
    uninterrupted.attach_tables(*fresh_tables())
    _, whole = run(uninterrupted, serde, messages)
    assert {k: (v["revision"], v["status"]) for k, v in latest(topic).items()} == \
        {k: (v["revision"], v["status"]) for k, v in latest(whole).items()}


def test_a_false_alarm_mark_suppresses_the_kind_on_the_meter_live_and_counts_it(setup):
    model_dir, serde, messages = setup
    scorer = StreamScorer(model_dir, serde)
    scorer.attach_tables(*fresh_tables())
    cut = len(messages) // 3
    anomalies, records = run(scorer, serde, messages[:cut])
    target = next(r for r in records if r["event"] == "opened")
    mark = FeedbackMark(meter_id=target["meter_id"], kind=target["kind"], verdict="false_alarm",
                        created_at=int(time.time() * 1000), incident_id=target["incident_id"],
                        feeder_id=target["feeder_id"], expires_at=None)
    scorer.incidents.on_mark(mark.key, mark)

    def suppressed() -> float:
        return sum(REGISTRY.get_sample_value("wattsup_stream_anomalies_suppressed_total",
                                             {"kind": target["kind"], "reason": r}) or 0.0
                   for r in ("feedback_scope", "feedback_severity"))

    before = suppressed()
    later, later_records = run(scorer, serde, messages[cut:])
    on_meter = [a for a in later if a["meter_id"] == target["meter_id"] and a["kind"] == target["kind"]]
    assert all(a["suppressed_by"] == SUPPRESSED_IN_SCOPE for a in on_meter)
    assert suppressed() - before == len(on_meter)
    assert all(a["suppressed_by"] is None for a in later if a["meter_id"] != target["meter_id"])
    mine = [r for r in later_records if r["meter_id"] == target["meter_id"] and r["kind"] == target["kind"]]
    if target["incident_id"] in {i.incident_id for i in scorer.incidents.tracker.open_incidents()}:
        pytest.fail("the marked incident should have been closed by the operator's mark")
    # it was open at the mark (unless it had closed already): closed by the operator, no new incident of the kind
    assert all(r["event"] == "closed" and r["incident_id"] == target["incident_id"] for r in mine)
