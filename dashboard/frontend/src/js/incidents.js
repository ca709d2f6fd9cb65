// Incidents: the list (open first, filters by feeder, kind and state), one incident's detail with its
// meter's chart over the incident window, and marking it (confirmed, false alarm, expected), which the
// service writes to the feedback topic every stream worker follows. Every id and cause is data from
// meters and gateways: built as text (dom.js), never parsed as HTML.
import { api, ApiError, query } from "./api.js";
import { applyChartTheme, createUsageChart, highlightRange, setBaseline, setSeries, showRange } from "./charts.js";
import { el, option } from "./dom.js";
import { settledRefresh } from "./refresh.js";
import { formatNumber, formatTime } from "./format.js";
import {
  describeMark, energyText, feedbackBody, formatDuration, incidentWindow, INCIDENT_KINDS,
} from "./incident-logic.js";
import { onThemeChange } from "./theme.js";

const LIST_LIMIT = 200;
const REFRESH_SOON_MS = 3000;
const REFRESH_EVERY_MS = 30_000;
const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

const view = {
  items: [],
  total: 0,
  selectedId: null,
  selected: null, // the selected incident as last loaded
  feeders: [],
};
let ctx; // {notify, isAuthenticated, onUnauthorized}
let chart = null;

// ---------------------------------------------------------------- list
function filters() {
  return { feeder_id: $("incident-feeder").value, kind: $("incident-kind").value, state: $("incident-state").value };
}

const severityBadge = (s) => el("span", { className: `sev sev-${s}` }, s);
const stateBadge = (incident) => el("span", { className: `state state-${incident.status}` }, incident.status);

function energyCell(incident) {
  const energy = energyText(incident.energy_delta_kwh);
  return el("td", { className: `num energy ${energy.direction}`, title: energy.text }, energy.value);
}

function renderList() {
  const rows = view.items.map((i) => el("tr", {
    tabindex: "0", "data-testid": "incident-row", className: i.incident_id === view.selectedId ? "focused" : null,
    dataset: { id: i.incident_id, meter: i.meter_id, feeder: i.feeder_id, kind: i.kind, state: i.status },
  }, el("td", {}, stateBadge(i)), el("td", {}, formatTime(i.started)),
  el("td", { className: "num" }, formatDuration(i.duration_seconds)), el("td", {}, i.meter_id),
  el("td", {}, i.feeder_id), el("td", {}, i.kind), el("td", {}, severityBadge(i.peak_severity)),
  energyCell(i)));
  $("incident-table").querySelector("tbody").replaceChildren(...rows);
  const empty = $("incident-empty");
  empty.hidden = view.items.length > 0;
  const filtered = Object.values(filters()).some(Boolean);
  empty.textContent = filtered ? "No incidents match these filters."
    : "No incidents yet. A meter's anomalies of one kind become one incident, which opens, grows and closes.";
  const open = view.items.filter((i) => i.status === "open").length;
  $("incident-total").textContent = view.total > view.items.length
    ? `· first ${view.items.length} of ${formatNumber(view.total)}`
    : `· ${formatNumber(view.total)}${open ? ` (${formatNumber(open)} open)` : ""}`;
}

let listRequest = 0;
export async function loadIncidents() {
  const request = ++listRequest;
  let page;
  try {
    page = await api(`/incidents${query({ ...filters(), limit: LIST_LIMIT })}`);
  } catch (error) {
    if (request !== listRequest) return;
    if (error instanceof ApiError && error.status === 401) {
      view.items = [];
      view.total = 0;
      renderList();
      $("incident-empty").textContent = "Sign in to see the incidents.";
      return;
    }
    throw error;
  }
  if (request !== listRequest) return;
  view.items = page.items;
  view.total = page.total;
  renderList();
  // The selected incident grew or closed since: show its newest state.
  const current = view.items.find((i) => i.incident_id === view.selectedId);
  if (current && view.selected && current.revision !== view.selected.revision) {
    loadDetail(view.selectedId, { keepResult: true }).catch(() => {});
  }
}

/** Reload the list now, or (soon: true) once a burst of anomalies has settled. */
export const refreshIncidents = settledRefresh(loadIncidents, REFRESH_SOON_MS,
  (error) => ctx.notify(`Could not load the incidents: ${error.message}`, { error: true }));

/** The feeders the filter offers (the page learns them with the meters). */
export function setIncidentFeeders(feeders) {
  const sorted = [...new Set(feeders)].sort();
  if (sorted.length === view.feeders.length && sorted.every((f, i) => f === view.feeders[i])) return;
  view.feeders = sorted;
  const select = $("incident-feeder");
  const value = select.value;
  select.replaceChildren(option("", "all feeders"), ...sorted.map((f) => option(f)));
  select.value = sorted.includes(value) ? value : "";
}

// ---------------------------------------------------------------- detail
function fact(label, value, testid) {
  return el("div", {}, el("dt", {}, label), el("dd", testid ? { "data-testid": testid } : {}, value));
}

function renderDetail(incident) {
  $("incident-title").replaceChildren(
    stateBadge(incident), " ", el("span", {}, `${incident.kind} on meter `), el("strong", {}, incident.meter_id),
    el("span", { className: "muted" }, ` · feeder ${incident.feeder_id}`),
  );
  const energy = energyText(incident.energy_delta_kwh);
  const endLabel = incident.ended ? "Ended" : "Last anomaly";
  $("incident-facts").replaceChildren(
    fact("Started", formatTime(incident.started)),
    fact(endLabel, formatTime(incident.ended || incident.last_seen)),
    fact("Duration", formatDuration(incident.duration_seconds), "incident-duration"),
    fact("Energy", energy.text, "incident-energy"),
    fact("Peak severity", severityBadge(incident.peak_severity)),
    fact("Readings", formatNumber(incident.readings)),
    ...(incident.closed_by ? [fact("Closed by", incident.closed_by)] : []),
  );
  const causes = (incident.causes || []).map((c) => c.text).filter(Boolean);
  $("incident-causes").replaceChildren(...(causes.length
    ? [el("li", { className: "muted" }, `Worst reading, ${formatTime(incident.worst_timestamp)}:`),
      ...causes.map((t) => el("li", {}, t))]
    : []));
}

function ensureChart() {
  if (chart) return chart;
  chart = createUsageChart($("incident-chart"), { baseline: true });
  window.wattsupCharts = { ...(window.wattsupCharts || {}), incident: chart };
  onThemeChange(() => applyChartTheme(chart));
  return chart;
}

let detailRequest = 0;
async function loadDetail(incidentId, { keepResult = false } = {}) {
  const request = ++detailRequest;
  const detail = await api(`/incidents/${encodeURIComponent(incidentId)}`);
  const incident = detail.incident;
  const window_ = incidentWindow(incident);
  const series = await api(`/series${query({ meter_id: incident.meter_id, since: window_.since, until: window_.until })}`);
  if (request !== detailRequest) return;
  view.selected = incident;
  $("incident-placeholder").hidden = true;
  $("incident-detail").hidden = false;
  $("incident-detail").dataset.id = incident.incident_id;
  renderDetail(incident);
  if (!keepResult) showResult(null);
  updateScopeControls();
  const c = ensureChart();
  setSeries(c, { readings: series.readings, forecast: series.forecast, anomalies: detail.anomalies });
  setBaseline(c, detail.anomalies);
  highlightRange(c, { min: window_.start, max: window_.end });
  c.resetZoom("none");
  showRange(c, window_.min, window_.max);
  c.update("none");
  $("incident-detail").dataset.loaded = incident.incident_id;
}

function selectIncident(incidentId) {
  view.selectedId = incidentId;
  renderList();
  delete $("incident-detail").dataset.loaded;
  loadDetail(incidentId).then(() => {
    if (window.innerWidth <= 1100) $("incident-detail").scrollIntoView({ behavior: "smooth", block: "start" });
  }).catch((error) => ctx.notify(`Could not load the incident: ${error.message}`, { error: true }));
}

function closeDetail() {
  view.selectedId = null;
  view.selected = null;
  $("incident-detail").hidden = true;
  $("incident-placeholder").hidden = false;
  renderList();
}

// ---------------------------------------------------------------- marking
function showResult(message, { error = false, status } = {}) {
  const box = $("incident-feedback-result");
  if (!message) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  box.hidden = false;
  box.classList.toggle("error", error);
  box.dataset.outcome = error ? "error" : "accepted";
  box.dataset.status = status != null ? String(status) : "";
  box.replaceChildren(el("strong", {}, error ? "Not sent." : `Accepted (${status}).`), " ", message);
}

function formValues() {
  const form = $("incident-feedback-form");
  const data = new FormData(form);
  return { verdict: data.get("verdict"), scope: data.get("scope"), days: data.get("days"), note: data.get("note") };
}

/** The scope only applies to marks that suppress: hidden for a confirmed one, days only when chosen. */
function updateScopeControls() {
  const { verdict, scope } = formValues();
  $("incident-scope").disabled = verdict === "confirmed";
  $("incident-scope").hidden = verdict === "confirmed";
  $("incident-feedback-form").querySelector("input[name='days']").disabled = verdict === "confirmed" || scope === "revoked";
  $("incident-confirmed-hint").hidden = verdict !== "confirmed";
}

async function submitMark(event) {
  event.preventDefault();
  const incident = view.selected;
  if (!incident) return;
  if (!ctx.isAuthenticated()) {
    showResult("Sign in with an API token (top right) to mark incidents.", { error: true });
    $("token-input").focus();
    return;
  }
  let body;
  try {
    body = feedbackBody(formValues());
  } catch (error) {
    showResult(error.message, { error: true });
    return;
  }
  const button = $("incident-mark");
  button.disabled = true;
  try {
    const { status, data } = await api(`/incidents/${encodeURIComponent(incident.incident_id)}/feedback`,
      { method: "POST", json: body, withStatus: true });
    showResult(describeMark(data), { status });
    $("incident-feedback-form").querySelector("input[name='note']").value = "";
    refreshIncidents({ soon: true });
  } catch (error) {
    const status = error instanceof ApiError ? error.status : null;
    showResult(status ? `${error.message} (HTTP ${status})` : error.message, { error: true, status });
    if (status === 401) await ctx.onUnauthorized();
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- wiring
export function initIncidents(context) {
  ctx = context;
  $("incident-kind").replaceChildren(option("", "all kinds"), ...INCIDENT_KINDS.map((k) => option(k, k.replace("_", " "))));
  for (const id of ["incident-feeder", "incident-kind", "incident-state"]) {
    $(id).addEventListener("change", () => refreshIncidents());
  }
  const tbody = $("incident-table").querySelector("tbody");
  tbody.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-id]");
    if (row) selectIncident(row.dataset.id);
  });
  tbody.addEventListener("keydown", (event) => {
    const row = event.target.closest("tr[data-id]");
    if (row && event.key === "Enter") selectIncident(row.dataset.id);
  });
  $("incident-close-detail").addEventListener("click", closeDetail);
  const form = $("incident-feedback-form");
  form.addEventListener("change", updateScopeControls);
  form.addEventListener("submit", submitMark);
  updateScopeControls();
  setInterval(() => loadIncidents().catch(() => {}), REFRESH_EVERY_MS);
}
