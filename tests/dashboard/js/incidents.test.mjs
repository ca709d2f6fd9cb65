// The incidents view's logic (incident-logic.js): durations, energy in words, the chart window and
// the feedback body sent to POST /api/v1/incidents/{id}/feedback.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  energyText, feedbackBody, formatDuration, incidentWindow,
} from "../../../dashboard/frontend/src/js/incident-logic.js";

const H = 3600e3;

test("durations read at a glance", () => {
  assert.equal(formatDuration(900), "15 min");
  assert.equal(formatDuration(3600), "1 h");
  assert.equal(formatDuration(5 * 3600 + 15 * 60), "5 h 15 min");
  assert.equal(formatDuration(47 * 3600), "47 h");
  assert.equal(formatDuration(50 * 3600), "2 d 2 h");
  assert.equal(formatDuration(3 * 86400), "3 d");
  assert.equal(formatDuration(null), "–");
});

test("energy: positive an excess, negative a shortfall", () => {
  assert.deepEqual(energyText(12.34), { value: "+12.3", text: "12.3 kWh excess", direction: "excess" });
  assert.deepEqual(energyText(-6.4), { value: "−6.40", text: "6.40 kWh shortfall", direction: "shortfall" });
  assert.equal(energyText(0).direction, "none");
  assert.equal(energyText(undefined).value, "–");
});

test("the chart window is the incident with as much context as it lasted, 12 h to 3 days each side", () => {
  const open = { started: "2026-03-01T10:00:00Z", last_seen: "2026-03-01T15:00:00Z", ended: null, interval_seconds: 3600 };
  const w = incidentWindow(open);
  assert.equal(w.end - w.start, 6 * H); // to the end of its latest anomalous interval
  assert.equal(w.start - w.min, 12 * H);
  assert.equal(w.since, "2026-02-28T22:00:00Z");
  assert.equal(w.until, "2026-03-02T04:00:00Z");
  const long = { started: "2026-03-01T00:00:00Z", last_seen: "2026-03-08T00:00:00Z", ended: "2026-03-09T00:00:00Z",
    interval_seconds: 900 };
  const lw = incidentWindow(long);
  assert.equal(lw.end, Date.parse("2026-03-09T00:00:00Z")); // a closed one: to its end
  assert.equal(lw.max - lw.end, 72 * H);
  const mid = incidentWindow({ ...open, last_seen: "2026-03-02T09:00:00Z" });
  assert.equal(mid.start - mid.min, 24 * H);
});

test("the feedback body: a scope in days or until revoked, none for a confirmed mark", () => {
  assert.deepEqual(feedbackBody({ verdict: "false_alarm", scope: "days", days: "7", note: "  " }),
    { verdict: "false_alarm", days: 7 });
  assert.deepEqual(feedbackBody({ verdict: "expected", scope: "revoked", days: "7", note: "heat pump test" }),
    { verdict: "expected", days: null, note: "heat pump test" });
  assert.deepEqual(feedbackBody({ verdict: "confirmed", scope: "days", days: "nonsense" }), { verdict: "confirmed" });
  for (const days of ["", "0", "-1", "4000", "x"]) {
    assert.throws(() => feedbackBody({ verdict: "false_alarm", scope: "days", days }), /number of days/);
  }
  assert.throws(() => feedbackBody({ verdict: "maybe" }), /Choose/);
});
