"""Operator feedback on incidents, and what it changes in detection.

An operator marks an incident (or a kind on a meter) as one of :data:`VERDICTS`:

* ``confirmed``: it was a real problem. Kept as a label (``wattsup feedback export``, and
  ``wattsup model train`` leaves those readings out of its training history); it **never changes
  a threshold**: a confirmed anomaly is what the detector is for.
* ``false_alarm`` or ``expected`` (normal for this meter): within the mark's scope (until
  ``expires_at``, data time, or until revoked) every anomaly of that kind on that meter is
  **suppressed**, unless its event outgrows what the operator dismissed (:data:`OUTGROWN_FACTOR`,
  decided by :class:`detection.incidents.IncidentTracker`, which follows events); after the scope, the meter stays **less sensitive for that kind**: each such mark
  raises the severity an anomaly of that kind on that meter needs by one level (see
  :data:`SEVERITY_STEPS_MAX`). Revoking the mark undoes both.

A suppressed anomaly is not hidden: :meth:`FeedbackPolicy.judge` names the reason, the stream
worker counts it in a metric and publishes it with that reason (``suppressed_by``), and the API
shows it on request. Knows nothing of Kafka: the stream worker feeds it the feedback topic's records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from foundation.timeutil import epoch_ms

log = logging.getLogger(__name__)

VERDICTS = ("confirmed", "false_alarm", "expected")
SUPPRESSING = frozenset({"false_alarm", "expected"})
SEVERITIES = ("INFO", "WARNING", "CRITICAL")

SEVERITY_STEPS_MAX = 2
"""At most this many severity levels are added to what a kind on a meter needs, however many marks.

Each false-alarm or expected mark of a kind on a meter adds one level: an INFO anomaly of that kind
no longer alerts after one mark, a WARNING one no longer after two. A level is a fixed factor of
tail probability on every meter (INFO 1.2 %, WARNING 0.05 %, CRITICAL 0.01 % per reading, see
:mod:`detection.thresholds`), so one step is about 24 times less sensitive and two steps 120 times,
whatever the meter's usage. Capped at two so a CRITICAL anomaly is never silenced by feedback
beyond a mark's scope: the worst of a meter's readings always reaches the operator again."""

SUPPRESSED_IN_SCOPE = "feedback_scope"
"""``suppressed_by`` of an anomaly inside a false-alarm or expected mark's scope."""
SUPPRESSED_BELOW_RAISED_SEVERITY = "feedback_severity"
"""``suppressed_by`` of an anomaly below the severity its kind needs on its meter after feedback."""


OUTGROWN_FACTOR = 2
"""An event of a marked kind stands again once it lasts this many times the longest incident the
operator dismissed for that meter and kind (plus :data:`OUTGROWN_EXTRA_READINGS`).

Why: a mark judges an event the operator saw, a pump's usual run, a planned shutdown of a few hours;
the same habit recurs with about the same length, while an event twice as long as anything they
accepted is no longer what they judged (a leak behind the pump, the shutdown that did not end). It is
relative to the dismissed event, so it holds on any meter's interval and habits."""
OUTGROWN_EXTRA_READINGS = 2
"""Readings added to the tolerated length: the gap an incident may bridge
(:data:`detection.incidents.MAX_GAP_READINGS`), so a dismissed one-reading spike is not outgrown by a
three-reading run that the same habit, cut by one lower reading, makes."""


@dataclass(frozen=True)
class FeedbackMark:
    """One mark: the fields of the ``io.wattsup.feedback.FeedbackMark`` Avro record."""

    meter_id: str
    kind: str
    verdict: str
    created_at: int
    """Wall clock (epoch ms) when the operator made it."""
    feeder_id: str | None = None
    incident_id: str | None = None
    started: int | None = None
    """The marked incident's first and last anomalous readings (data time, epoch ms), for labels."""
    ended: int | None = None
    expires_at: int | None = None
    """End of the scope (data time, epoch ms; readings stamped before it are in scope); None: until revoked."""
    revoked: bool = False
    close_incident: bool = True
    operator: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")

    @property
    def key(self) -> str:
        """The topic key: one mark per incident (or per kind, without an incident) of a meter, so
        compaction keeps every incident's latest mark, not only a meter's latest."""
        return f"{self.meter_id}|{self.incident_id or 'kind:' + self.kind}"

    def record(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class FeedbackPolicy:
    """The latest mark per key, and what they decide for each anomaly."""

    marks: dict[str, FeedbackMark] = field(default_factory=dict)
    _suppressing: dict[tuple[str, str], list[FeedbackMark]] = field(default_factory=dict)

    def apply(self, mark: FeedbackMark) -> None:
        """A mark replaces the previous one of its key (a revocation is a mark with ``revoked``)."""
        self.marks[mark.key] = mark
        target = (mark.meter_id, mark.kind)
        kept = [m for m in self._suppressing.get(target, []) if m.key != mark.key]
        if mark.verdict in SUPPRESSING and not mark.revoked:
            kept.append(mark)
        if kept:
            self._suppressing[target] = kept
        else:
            self._suppressing.pop(target, None)

    def remove(self, key: str) -> None:
        """A tombstone: forget the mark of ``key``."""
        mark = self.marks.pop(key, None)
        if mark is not None:
            self.apply(FeedbackMark(**{**mark.record(), "revoked": True}))  # type: ignore[arg-type]
            self.marks.pop(key, None)

    def severity_steps(self, meter_id: str, kind: str) -> int:
        return min(len(self._suppressing.get((meter_id, kind), ())), SEVERITY_STEPS_MAX)

    def judge(self, meter_id: str, kind: str, severity: str, timestamp_ms: int) -> str | None:
        """Why an anomaly is suppressed (:data:`SUPPRESSED_IN_SCOPE`,
        :data:`SUPPRESSED_BELOW_RAISED_SEVERITY`), or None when it stands."""
        marks = self._suppressing.get((meter_id, kind))
        if not marks:
            return None
        if any(m.expires_at is None or timestamp_ms < m.expires_at for m in marks):
            return SUPPRESSED_IN_SCOPE
        needed = min(len(marks), SEVERITY_STEPS_MAX)
        if SEVERITIES.index(severity) < needed:
            return SUPPRESSED_BELOW_RAISED_SEVERITY
        return None

    def tolerated_readings(self, meter_id: str, kind: str, timestamp_ms: int, interval_s: int) -> float:
        """How many readings long an event of ``kind`` on the meter may run and stay suppressed in scope.

        :data:`OUTGROWN_FACTOR` times the longest dismissed incident among the marks whose scope covers
        ``timestamp_ms``, plus :data:`OUTGROWN_EXTRA_READINGS`; unbounded when one of them names no
        incident (a mark on the kind itself: "this kind is expected here").
        """
        longest = 0.0
        for m in self._suppressing.get((meter_id, kind), ()):
            if m.expires_at is not None and timestamp_ms >= m.expires_at:
                continue
            if m.started is None or m.ended is None:
                return float("inf")
            longest = max(longest, (m.ended - m.started) / (interval_s * 1000) + 1)
        return OUTGROWN_FACTOR * longest + OUTGROWN_EXTRA_READINGS

    def confirmed(self) -> list[FeedbackMark]:
        """Confirmed, not revoked marks: real anomalies, kept as labels."""
        return [m for m in self.marks.values() if m.verdict == "confirmed" and not m.revoked]


DAY_MS = 86_400_000

DEFAULT_SCOPE_DAYS = 7.0
"""Scope of a false-alarm or expected mark when the operator gives none: a week covers every hour of the
week once, so a habit the detector did not know (a weekly pump, a Saturday market) is silenced until it
has been seen again in every slot; after the scope the severity step keeps it quieter (until revoked)."""


def mark_for_incident(incident: dict[str, Any], verdict: str, *, created_at: int, days: float | None = DEFAULT_SCOPE_DAYS,
                      close: bool | None = None, operator: str | None = None, note: str | None = None) -> FeedbackMark:
    """The mark an operator's verdict on an incident record makes: its scope runs ``days`` from the incident's
    last anomalous reading (data time; None: until revoked); a false alarm or expected mark closes the
    incident unless ``close`` says otherwise, a confirmed one keeps it open (it is real and may go on)."""
    if days is not None and not 0 < days <= 3650:
        raise ValueError(f"days must be between 0 and 3650, got {days}")
    last = int(incident["last_seen"])
    return FeedbackMark(
        meter_id=incident["meter_id"], kind=incident["kind"], verdict=verdict, created_at=created_at,
        feeder_id=incident.get("feeder_id"), incident_id=incident["incident_id"], started=int(incident["started"]),
        ended=last, expires_at=None if days is None else last + int(days * DAY_MS),
        close_incident=(verdict != "confirmed") if close is None else close, operator=operator, note=note,
    )


def confirmed_readings(meter_ids: np.ndarray, timestamps_ms: np.ndarray, marks: list[FeedbackMark]) -> np.ndarray:
    """Which readings fall inside a confirmed (not revoked) incident of their meter: its first to its
    last anomalous reading. Those are real anomalies: training leaves them out, labels mark them 1."""
    inside = np.zeros(len(meter_ids), dtype=bool)
    for m in marks:
        if m.verdict != "confirmed" or m.revoked or m.started is None:
            continue
        end = m.ended if m.ended is not None else m.started
        inside |= (meter_ids == m.meter_id) & (timestamps_ms >= m.started) & (timestamps_ms <= end)
    return inside


def labelled_readings(frame: pd.DataFrame, marks: list[FeedbackMark]) -> pd.DataFrame:
    """The marked meters' readings as ``timestamp,meter_id,kwh,label,event_id`` (the columns
    ``wattsup evaluate`` reads): label 1 inside a confirmed incident, with its id as the event, 0 elsewhere."""
    import pandas as pd

    meters = {m.meter_id for m in marks if not m.revoked}
    out = frame.loc[frame["meter_id"].isin(meters), ["timestamp", "meter_id", "kwh"]].copy()
    ts = epoch_ms(out["timestamp"])
    ids = out["meter_id"].to_numpy()
    out["label"] = 0
    out["event_id"] = ""
    for m in marks:
        if m.verdict != "confirmed" or m.revoked or m.started is None:
            continue
        inside = confirmed_readings(ids, ts, [m])
        out.loc[inside, "label"] = 1
        out.loc[inside, "event_id"] = m.incident_id or f"{m.meter_id}|{m.kind}"
    return out.sort_values(["timestamp", "meter_id"]).reset_index(drop=True)
