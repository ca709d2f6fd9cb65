// Anomaly tables: rows newest first, a tooltip with the causes in plain words, click to focus.
import { USUAL_HINT, causeTexts, escapeHtml, expectedOrUsual, formatKwh, formatTime } from "./format.js";

const tooltip = () => document.getElementById("row-tooltip");

function showTooltip(row, anomaly) {
  const tip = tooltip();
  const texts = causeTexts(anomaly);
  const shares = (anomaly.causes || []).map((c) => c.contribution);
  tip.innerHTML = `<strong>${escapeHtml(anomaly.severity)} ${escapeHtml(anomaly.kind || "anomaly")} · ${escapeHtml(anomaly.meter_id)} · ${escapeHtml(formatTime(anomaly.timestamp))}</strong>`
    + `<span class="tip-values">${escapeHtml(comparisonText(anomaly))}</span>`
    + (texts.length
      ? `<ul>${texts.map((t, i) => `<li>${escapeHtml(t)}${shares[i] != null ? ` <span class="share">(${Math.round(shares[i] * 100)}%)</span>` : ""}</li>`).join("")}</ul>`
      : "<span>No cause recorded.</span>");
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
  if (value == null) return `<td class="num opt" data-testid="expected-cell" data-source="none">–</td>`;
  if (!usual) {
    return `<td class="num opt" data-testid="expected-cell" data-source="forecast" title="Forecast's expected usage">${formatKwh(value)}</td>`;
  }
  return `<td class="num opt usual" data-testid="expected-cell" data-source="usual" title="${escapeHtml(USUAL_HINT)}">`
    + `<span class="usual-tag">usual</span> ${formatKwh(value)}</td>`;
}

const severityBadge = (s) => `<span class="sev sev-${escapeHtml(s)}">${escapeHtml(s)}</span>`;

/**
 * Render `anomalies` into `tbody`. `columns` picks the layout ("fleet" or "upload").
 * `onSelect(anomaly)` runs on click or Enter. Rows whose key is in `fresh` flash once.
 */
export function renderAnomalyRows(tbody, anomalies, { columns = "fleet", onSelect, focusedKey, fresh } = {}) {
  const rows = anomalies.map((a) => {
    const key = anomalyKey(a);
    const classes = [key === focusedKey ? "focused" : "", fresh && fresh.has(key) ? "fresh" : ""].join(" ").trim();
    const cells = columns === "upload"
      ? `<td>${formatTime(a.timestamp)}</td><td>${escapeHtml(a.meter_id)}</td><td>${severityBadge(a.severity)}</td>`
        + `<td>${escapeHtml(a.kind || "")}</td><td class="num">${formatKwh(a.observed)}</td>`
        + `${expectedCell(a)}<td class="cause">${escapeHtml(causeTexts(a)[0] || "")}</td>`
      : `<td>${formatTime(a.timestamp)}</td><td>${escapeHtml(a.meter_id)}</td><td class="wide">${escapeHtml(a.feeder_id)}</td>`
        + `<td>${severityBadge(a.severity)}</td><td>${escapeHtml(a.kind || "")}</td>`
        + `<td class="num">${formatKwh(a.observed)}</td>${expectedCell(a)}`
        + `<td class="num wide">${a.score != null ? Number(a.score).toFixed(3) : "–"}</td>`;
    return `<tr tabindex="0" data-testid="anomaly-row" data-key="${escapeHtml(key)}" data-meter="${escapeHtml(a.meter_id)}" `
      + `data-timestamp="${escapeHtml(a.timestamp)}" data-severity="${escapeHtml(a.severity)}"${classes ? ` class="${classes}"` : ""}>${cells}</tr>`;
  });
  tbody.innerHTML = rows.join("");
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
