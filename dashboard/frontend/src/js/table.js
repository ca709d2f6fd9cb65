// Anomaly tables: rows newest first, a tooltip with the causes in plain words, click to focus.
import { el } from "./dom.js";
import { USUAL_HINT, causeTexts, expectedOrUsual, formatKwh, formatTime } from "./format.js";

const tooltip = () => document.getElementById("row-tooltip");

function showTooltip(row, anomaly) {
  const tip = tooltip();
  const texts = causeTexts(anomaly);
  const shares = (anomaly.causes || []).map((c) => c.contribution);
  tip.replaceChildren(
    el("strong", {}, `${anomaly.severity} ${anomaly.kind || "anomaly"} · ${anomaly.meter_id} · ${formatTime(anomaly.timestamp)}`),
    el("span", { className: "tip-values" }, comparisonText(anomaly)),
    texts.length
      ? el("ul", {}, texts.map((t, i) => el("li", {}, t,
        shares[i] != null ? [" ", el("span", { className: "share" }, `(${Math.round(shares[i] * 100)}%)`)] : [])))
      : el("span", {}, "No cause recorded."),
  );
  tip.hidden = false;
  const box = row.getBoundingClientRect();
  const width = Math.min(360, window.innerWidth - 16);
  tip.style.left = `${Math.max(8, Math.min(box.left + 24, window.innerWidth - width - 8))}px`;
  const below = box.bottom + 6;
  tip.style.top = `${below + tip.offsetHeight > window.innerHeight ? Math.max(8, box.top - tip.offsetHeight - 6) : below}px`;
  row.setAttribute("aria-describedby", "row-tooltip");
}

function hideTooltip(row) {
  tooltip().hidden = true;
  row.removeAttribute("aria-describedby");
}

/** Observed against the forecast and the usual, each named: the two are different numbers. */
export function comparisonText(anomaly) {
  const parts = [`Observed ${formatKwh(anomaly.observed)} kWh`];
  if (anomaly.expected != null) parts.push(`expected (forecast) ${formatKwh(anomaly.expected)} kWh`);
  if (anomaly.baseline != null) parts.push(`usual for this hour ${formatKwh(anomaly.baseline)} kWh`);
  if (anomaly.expected == null && anomaly.baseline != null) parts.push("no forecast covers this reading");
  return parts.join(" · ");
}

/** The expected cell: the forecast's value, or the usual value tagged "usual" with a tooltip saying so. */
function expectedCell(anomaly) {
  const { value, usual } = expectedOrUsual(anomaly);
  const attrs = { className: "num opt", "data-testid": "expected-cell" };
  if (value == null) return el("td", { ...attrs, dataset: { source: "none" } }, "–");
  if (!usual) return el("td", { ...attrs, dataset: { source: "forecast" }, title: "Forecast's expected usage" }, formatKwh(value));
  return el("td", { ...attrs, className: "num opt usual", dataset: { source: "usual" }, title: USUAL_HINT },
    el("span", { className: "usual-tag" }, "usual"), ` ${formatKwh(value)}`);
}

const severityBadge = (s) => el("span", { className: `sev sev-${s}` }, s);

/**
 * Render `anomalies` into `tbody` (as elements: every value is text, never HTML). `columns` picks the
 * layout ("fleet" or "upload"). `onSelect(anomaly)` runs on click or Enter. Rows whose key is in `fresh` flash once.
 */
export function renderAnomalyRows(tbody, anomalies, { columns = "fleet", onSelect, focusedKey, fresh } = {}) {
  const rows = anomalies.map((a) => {
    const key = anomalyKey(a);
    const classes = [key === focusedKey ? "focused" : "", fresh && fresh.has(key) ? "fresh" : ""].join(" ").trim();
    const cells = columns === "upload"
      ? [el("td", {}, formatTime(a.timestamp)), el("td", {}, a.meter_id), el("td", {}, severityBadge(a.severity)),
        el("td", {}, a.kind || ""), el("td", { className: "num" }, formatKwh(a.observed)), expectedCell(a),
        el("td", { className: "cause" }, causeTexts(a)[0] || "")]
      : [el("td", {}, formatTime(a.timestamp)), el("td", {}, a.meter_id), el("td", { className: "wide" }, a.feeder_id),
        el("td", {}, severityBadge(a.severity)), el("td", {}, a.kind || ""),
        el("td", { className: "num" }, formatKwh(a.observed)), expectedCell(a),
        el("td", { className: "num wide" }, a.score != null ? Number(a.score).toFixed(3) : "–")];
    return el("tr", { tabindex: "0", "data-testid": "anomaly-row", className: classes || null,
      dataset: { key, meter: a.meter_id, timestamp: a.timestamp, severity: a.severity } }, cells);
  });
  tbody.replaceChildren(...rows);
  const byKey = new Map(anomalies.map((a) => [anomalyKey(a), a]));
  tbody.onmouseover = tbody.onfocusin = (event) => {
    const row = event.target.closest("tr");
    if (row && byKey.has(row.dataset.key)) showTooltip(row, byKey.get(row.dataset.key));
  };
  tbody.onmouseout = tbody.onfocusout = (event) => {
    const row = event.target.closest("tr");
    if (row && !row.contains(event.relatedTarget)) hideTooltip(row);
  };
  tbody.onclick = (event) => {
    const row = event.target.closest("tr");
    if (row && onSelect && byKey.has(row.dataset.key)) onSelect(byKey.get(row.dataset.key));
  };
  tbody.onkeydown = (event) => {
    const row = event.target.closest("tr");
    if (event.key === "Enter" && row && onSelect && byKey.has(row.dataset.key)) onSelect(byKey.get(row.dataset.key));
  };
}

/** Identity of an anomaly: the service's id when stored, else meter and time (upload results). */
export function anomalyKey(anomaly) {
  return anomaly.id != null ? String(anomaly.id) : `${anomaly.meter_id}@${anomaly.timestamp}`;
}

/** Newest first by timestamp, then id, as the API orders them. */
export function compareNewestFirst(a, b) {
  const byTime = new Date(b.timestamp).getTime() - new Date(a.timestamp).getTime();
  return byTime || (b.id ?? 0) - (a.id ?? 0);
}
