// Incidents without the DOM: what the incidents view shows (duration, energy, chart window) and the
// feedback body it sends. Kept apart from incidents.js so node's test runner can check it
// (tests/dashboard/js/incidents.test.mjs).
import { formatKwh, formatTime } from "./format.js";

const HOUR_MS = 3600e3;
export const CONTEXT_MIN_MS = 12 * HOUR_MS;
export const CONTEXT_MAX_MS = 3 * 24 * HOUR_MS;
export const MAX_SCOPE_DAYS = 3650;

/** Kinds of anomaly an incident can be of (dashboard/store.py INCIDENT_KINDS), as the filter offers them. */
export const INCIDENT_KINDS = ["outage", "stuck", "spike", "high_load", "dip", "drift", "catch_up", "level_shift", "unknown"];

export const VERDICT_TEXT = { confirmed: "confirmed", false_alarm: "false alarm", expected: "expected" };

const ms = (iso) => new Date(iso).getTime();

/** "45 min", "5 h 15 min", "2 d 4 h": an incident's duration at a glance. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "–";
  const minutes = Math.max(0, Math.round(Number(seconds) / 60));
  if (minutes < 60) return `${minutes} min`;
  if (minutes < 48 * 60) {
    const h = Math.floor(minutes / 60);
    const m = minutes % 60;
    return m ? `${h} h ${m} min` : `${h} h`;
  }
  const hours = Math.round(minutes / 60);
  const d = Math.floor(hours / 24);
  const h = hours % 24;
  return h ? `${d} d ${h} h` : `${d} d`;
}

/**
 * Observed minus baseline over the incident's readings, in words: a positive delta is an excess, a
 * negative one a shortfall. `value` is signed text for the table, `text` says which it is.
 */
export function energyText(delta) {
  if (delta === null || delta === undefined || !Number.isFinite(Number(delta))) {
    return { value: "–", text: "–", direction: "none" };
  }
  const d = Number(delta);
  if (d === 0) return { value: "0", text: "0 kWh (as usual)", direction: "none" };
  const size = formatKwh(Math.abs(d));
  return d > 0
    ? { value: `+${size}`, text: `${size} kWh excess`, direction: "excess" }
    : { value: `−${size}`, text: `${size} kWh shortfall`, direction: "shortfall" };
}

/** An ISO string without milliseconds, as the API's other clients send. */
export function isoSeconds(timeMs) {
  return new Date(timeMs).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * What the detail chart shows: the incident (first anomalous interval to its close, or to the end of
 * its latest anomalous interval while open) with as much context before and after as it lasted,
 * at least 12 h and at most 3 days each side. Times in ms; `since`/`until` as ISO for /series.
 */
export function incidentWindow(incident) {
  const start = ms(incident.started);
  const interval = (Number(incident.interval_seconds) || 0) * 1000;
  const end = incident.ended ? ms(incident.ended) : ms(incident.last_seen) + interval;
  const pad = Math.min(CONTEXT_MAX_MS, Math.max(CONTEXT_MIN_MS, end - start));
  return { start, end, min: start - pad, max: end + pad, since: isoSeconds(start - pad), until: isoSeconds(end + pad) };
}

/**
 * The POST /incidents/{id}/feedback body from the mark form's values: `verdict`, `scope` ("days" or
 * "revoked"), `days` (text or number) and `note`. A confirmed mark has no scope (it never suppresses
 * anything). Throws an Error with a message for the person when the days are not a number in range.
 */
export function feedbackBody({ verdict, scope = "days", days, note }) {
  if (!Object.hasOwn(VERDICT_TEXT, verdict)) throw new Error("Choose confirmed, false alarm or expected.");
  const body = { verdict };
  if (verdict !== "confirmed") {
    if (scope === "revoked") {
      body.days = null;
    } else {
      const n = typeof days === "number" ? days : Number(String(days ?? "").trim() || NaN);
      if (!Number.isFinite(n) || n <= 0 || n > MAX_SCOPE_DAYS) {
        throw new Error(`Give the scope as a number of days between 1 and ${MAX_SCOPE_DAYS}, or choose "until revoked".`);
      }
      body.days = n;
    }
  }
  const text = (note ?? "").toString().trim();
  if (text) body.note = text;
  return body;
}

/** One sentence for the mark the service accepted (its 202 answer). */
export function describeMark(mark) {
  const what = `${VERDICT_TEXT[mark.verdict] || mark.verdict} for ${mark.kind} on meter ${mark.meter_id}`;
  let scope = "";
  if (mark.verdict !== "confirmed") {
    scope = mark.expires_at ? `; this kind is suppressed on this meter until ${formatTime(mark.expires_at)}`
      : "; this kind is suppressed on this meter until the mark is revoked";
  }
  const close = mark.close_incident ? "; the incident will be closed" : "";
  return `${what}${scope}${close}. The stream workers apply it live.`;
}
