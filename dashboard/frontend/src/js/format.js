// Display helpers: times in the browser's zone, numbers with sensible precision, CSV text.
import { format } from "date-fns";

export function toDate(iso) {
  return iso ? new Date(iso) : null;
}

export function formatTime(iso) {
  const date = toDate(iso);
  return date && !Number.isNaN(date.getTime()) ? format(date, "yyyy-MM-dd HH:mm") : "–";
}

export function formatKwh(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  return abs >= 100 ? value.toFixed(0) : abs >= 10 ? value.toFixed(1) : value.toFixed(2);
}

export function formatNumber(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en");
}

/** A datetime-local input's value (browser zone) as an ISO UTC string for the API, or "". */
export function inputToIso(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function isoShift(iso, hours) {
  return new Date(new Date(iso).getTime() + hours * 3600e3).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** The causes of an anomaly as plain sentences (the service writes them). */
export function causeTexts(anomaly) {
  return (anomaly.causes || []).map((c) => c.text).filter(Boolean);
}

export const USUAL_HINT = "Usual for this hour (the meter's own history); no forecast covers this reading";

/**
 * What an anomaly's "expected" column shows: the forecast's expected kWh when a forecast covers the
 * reading, else the meter's usual kWh for the hour (`baseline`), marked `usual` so the page never
 * presents the one as the other. Anomalies stored before the two were split have only `expected`.
 */
export function expectedOrUsual(anomaly) {
  if (anomaly.expected != null) return { value: anomaly.expected, usual: false };
  if (anomaly.baseline != null) return { value: anomaly.baseline, usual: true };
  return { value: null, usual: false };
}

/**
 * A text cell a spreadsheet will not run (CSV formula injection): line breaks become spaces, so
 * no text starts a row of its own, and a cell whose first non-blank character starts a formula
 * (= + - @), or that starts with a tab, gets a leading ' (shown as text). Numbers stay numbers.
 */
export function csvSafe(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return String(value);
  const text = String(value).replace(/[\r\n\u2028\u2029\v\f\u0085]+/g, " ");
  return /^[ \t]*[=+\-@]/.test(text) || text.startsWith("\t") ? `'${text}` : text;
}

/** RFC 4180 CSV text from rows of values, every cell guarded by csvSafe. */
export function toCsv(header, rows) {
  const cell = (v) => {
    const text = csvSafe(v);
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  return [header, ...rows].map((r) => r.map(cell).join(",")).join("\r\n") + "\r\n";
}

export function downloadBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
