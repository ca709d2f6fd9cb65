// WattsUp dashboard page: fleet summary, incidents (marked from their detail), usage chart, live
// anomaly table, upload check, downloads, sensitivity and alert rules. Everything comes from the service's /api/v1.
import { api, ApiError, API, query } from "./api.js";
import {
  addAnomaly, addReading, applyChartTheme, createUsageChart, dataExtent, DATASET, focusAnomalyPoint,
  pinAnomaliesToLine, setSeries, showRange,
} from "./charts.js";
import { initControls, refreshAlertHistory, refreshControls } from "./controls.js";
import { el, option } from "./dom.js";
import { downloadBlob, formatNumber, formatTime, inputToIso, isoShift } from "./format.js";
import { initIncidents, loadIncidents, refreshIncidents, setIncidentFeeders } from "./incidents.js";
import { anomalyKey, compareNewestFirst, renderAnomalyRows } from "./table.js";
import { initThemeToggle, onThemeChange } from "./theme.js";
import { initUpload } from "./upload.js";

const TABLE_LIMIT = 100;
const DEFAULT_SPAN_MS = 3 * 24 * 3600e3; // what live mode shows
const LOADED_SPAN_MS = 7 * 24 * 3600e3; // what the chart loads (pan back to see it)
const FOLLOW_THROTTLE_MS = 4000;
const SERIES_REFRESH_MS = 10_000;
const FOLLOW_CONTEXT_MS = 2 * 24 * 3600e3; // history shown before a followed anomaly
const MAX_EXTRA_MS = 30 * 24 * 3600e3; // at most this much more than LOADED_SPAN_MS
const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

const state = {
  session: { authenticated: false, name: null, read_public: true },
  summary: null,
  meters: [],
  key: null, // {type: "meter" | "feeder", id}
  keyPickedByPerson: false, // until someone picks, the chart follows the meter of the newest anomaly
  followedAt: 0, // when the chart last moved to follow an anomaly (ms, page clock)
  followedTimestamp: 0, // reading time of the anomaly it follows
  seriesLoadedAt: 0,
  latestSeen: null, // newest reading time in the last summary
  seriesAnomalies: [],
  liveKeyAnomalies: [], // anomalies of the charted key that arrived live (kept even outside the loaded range)
  anomalies: [],
  total: 0,
  focusedKey: null,
  fresh: new Set(),
  liveSpan: DEFAULT_SPAN_MS,
  events: null, // the charted key's reading stream
  fleetEvents: null, // anomalies and summary
  received: { anomaly: 0, reading: 0, summary: 0 }, // live events seen, for the status line and tests
};

let usageChart;

// ---------------------------------------------------------------- notices and session
let noticeTimer;
export function notify(message, { error = false, sticky = false } = {}) {
  const box = $("notice");
  box.textContent = message;
  box.classList.toggle("error", error);
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (!sticky) noticeTimer = setTimeout(() => { box.hidden = true; }, 7000);
}

export function isAuthenticated() {
  return state.session.authenticated;
}

/** Run a writing action; explain instead of failing when nobody is signed in. */
export async function writeAction(what, fn) {
  if (!state.session.authenticated) {
    notify(`Sign in with an API token to ${what}.`, { error: true });
    $("token-input").focus();
    return undefined;
  }
  try {
    return await fn();
  } catch (error) {
    notify(`Could not ${what}: ${error.message}`, { error: true });
    if (error instanceof ApiError && error.status === 401) await loadSession();
    return undefined;
  }
}

function renderSession() {
  const { authenticated, name } = state.session;
  document.body.classList.toggle("authenticated", authenticated);
  $("signin-form").hidden = authenticated;
  $("signed-in").hidden = !authenticated;
  $("signed-in-name").textContent = authenticated ? name || "signed in" : "";
}

async function loadSession() {
  try {
    state.session = await api("/session");
  } catch {
    state.session = { authenticated: false, name: null, read_public: true };
  }
  renderSession();
}

function initSignIn() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("token-input");
    try {
      const result = await api("/session", { method: "POST", json: { token: input.value.trim() } });
      state.session = { ...state.session, authenticated: true, name: result.name };
      input.value = "";
      renderSession();
      notify(`Signed in as ${result.name}.`);
      connectFleetEvents();
      await loadEverything();
      if (state.key && (!state.events || state.events.readyState === EventSource.CLOSED)) connectEvents();
    } catch (error) {
      notify(error.status === 401 ? "That token is not valid." : `Sign-in failed: ${error.message}`, { error: true });
    }
  });
  $("signout-button").addEventListener("click", async () => {
    await api("/session", { method: "DELETE" }).catch(() => {});
    await loadSession();
    notify("Signed out.");
  });
}

// ---------------------------------------------------------------- filters
function selectedSeverities() {
  return [...document.querySelectorAll('[data-testid="severity-filter"] input:checked')].map((i) => i.value);
}

function dateFilters() {
  return { since: inputToIso($("since-input").value), until: inputToIso($("until-input").value) };
}

function keyParams() {
  if (!state.key) return {};
  return state.key.type === "feeder" ? { feeder_id: state.key.id } : { meter_id: state.key.id };
}

/** The anomaly-table filters, also used for the CSV export and the PDF report. */
function tableFilters() {
  const severities = selectedSeverities();
  return {
    ...($("table-scope").checked ? keyParams() : {}),
    severity: severities.length === 3 ? "" : severities.join(",") || "NONE",
    ...dateFilters(),
  };
}

function matchesTable(anomaly) {
  const f = tableFilters();
  if (f.meter_id && anomaly.meter_id !== f.meter_id) return false;
  if (f.feeder_id && anomaly.feeder_id !== f.feeder_id) return false;
  if (!selectedSeverities().includes(anomaly.severity)) return false;
  const t = new Date(anomaly.timestamp).getTime();
  if (f.since && t < new Date(f.since).getTime()) return false;
  if (f.until && t > new Date(f.until).getTime()) return false;
  return true;
}

function matchesKey(item) {
  if (!state.key) return false;
  return state.key.type === "feeder" ? item.feeder_id === state.key.id : item.meter_id === state.key.id;
}

function updateCsvLink() {
  const f = tableFilters();
  $("download-csv").href = `${API}/anomalies.csv${query({ ...f, severity: f.severity === "NONE" ? "" : f.severity })}`;
}

// ---------------------------------------------------------------- summary and meters
function renderSummary(summary) {
  state.summary = summary;
  $("summary-meters").textContent = formatNumber(summary.meters);
  $("summary-feeders").textContent = formatNumber(summary.feeders);
  $("summary-readings").textContent = formatNumber(summary.readings_last_hour);
  const counts = summary.anomalies_24h || {};
  const badges = $("summary-anomalies").querySelectorAll(".sev");
  ["CRITICAL", "WARNING", "INFO"].forEach((s, i) => {
    badges[i].textContent = formatNumber(counts[s] ?? 0);
    badges[i].title = `${counts[s] ?? 0} ${s.toLowerCase()} in the last 24 h`;
  });
  $("summary-latest").textContent = summary.latest_reading_at ? formatTime(summary.latest_reading_at) : "–";
  $("summary-model").textContent = summary.model_version || "–";
  if (summary.meters !== state.meters.length) loadMeters();
  // Live mode reloads the charted series now and then while data arrives, so forecasts and
  // anomalies stored since (a forecast run, a reconnect) show up without a click.
  const newData = summary.latest_reading_at !== state.latestSeen;
  state.latestSeen = summary.latest_reading_at;
  // New readings can close an incident (the meter is back to normal) without any anomaly event.
  if (newData) refreshIncidents({ soon: true });
  if (newData && state.key && $("live-toggle").checked && Date.now() - state.seriesLoadedAt > SERIES_REFRESH_MS) {
    loadSeries().catch(() => {});
  }
}

async function loadSummary() {
  renderSummary(await api("/summary"));
}

let metersLoading = false;
async function loadMeters() {
  if (metersLoading) return;
  metersLoading = true;
  try {
    state.meters = (await api("/meters")).items;
  } finally {
    metersLoading = false;
  }
  renderKeyOptions();
  if (!state.key && state.meters.length) {
    // First view: the meter of the newest anomaly, else the meter with most anomalies today.
    const newest = state.anomalies[0];
    if (newest) state.followedTimestamp = new Date(newest.timestamp).getTime();
    const busiest = [...state.meters].sort((a, b) => b.anomalies_24h - a.anomalies_24h)[0];
    selectKey({ type: "meter", id: newest ? newest.meter_id : busiest.meter_id });
  }
}

function renderKeyOptions() {
  const select = $("key-select");
  const feeders = [...new Set(state.meters.map((m) => m.feeder_id))].sort();
  const meters = [...state.meters].sort((a, b) => a.meter_id.localeCompare(b.meter_id));
  if (state.key && state.key.type === "meter" && !meters.some((m) => m.meter_id === state.key.id)) {
    meters.push({ meter_id: state.key.id, anomalies_24h: 0 });
  }
  // Built as elements, never as HTML: meter and feeder ids come from meters and gateways.
  select.replaceChildren(
    ...(meters.length || feeders.length ? [] : [option("", "(no data yet)")]),
    el("optgroup", { label: "Meters" }, meters.map((m) => option(`meter:${m.meter_id}`,
      `${m.meter_id}${m.anomalies_24h ? ` · ${m.anomalies_24h} in 24 h` : ""}`))),
    el("optgroup", { label: "Feeders (sum of meters)" }, feeders.map((f) => option(`feeder:${f}`, f))),
  );
  select.value = state.key ? `${state.key.type}:${state.key.id}` : "";
  setIncidentFeeders(feeders);
  document.getElementById("meter-list").replaceChildren(...meters.map((m) => el("option", { value: m.meter_id })));
}

// ---------------------------------------------------------------- chart
function filteredSeriesAnomalies() {
  const severities = selectedSeverities();
  return state.seriesAnomalies.filter((a) => severities.includes(a.severity));
}

let seriesRequest = 0;
/** Load the charted key's series; `around` (ISO) centres the view on one anomaly. */
async function loadSeries({ around } = {}) {
  if (!state.key) return;
  const request = ++seriesRequest;
  state.seriesLoadedAt = Date.now();
  const dates = dateFilters();
  const fetchSeries = (range) => api(`/series${query({ ...keyParams(), ...range })}`);
  let series;
  if (dates.since || dates.until) {
    series = await fetchSeries(dates);
  } else if (around) {
    series = await fetchSeries({ since: isoShift(around, -36), until: isoShift(around, 36) });
  } else {
    // The last days of the fleet's data; a key whose data ended before that gets the service's
    // default instead (the last 48 h of its own data).
    const latest = state.summary && state.summary.latest_reading_at;
    if (latest) {
      let since = new Date(latest).getTime() - LOADED_SPAN_MS;
      // Following an anomaly older than that (a backlog being replayed): load back to it too.
      if (following()) since = Math.max(Math.min(since, state.followedTimestamp - FOLLOW_CONTEXT_MS), since - MAX_EXTRA_MS);
      series = await fetchSeries({ since: new Date(since).toISOString().replace(/\.\d{3}Z$/, "Z") });
    }
    if (!series || !series.readings.length) series = await fetchSeries({});
  }
  if (request !== seriesRequest) return; // a newer selection won
  const loaded = series.anomalies || [];
  const seen = new Set(loaded.map(anomalyKey));
  state.seriesAnomalies = [...loaded, ...state.liveKeyAnomalies.filter((a) => !seen.has(anomalyKey(a)))];
  pinAnomaliesToLine(usageChart, state.key.type === "feeder");
  setSeries(usageChart, { ...series, anomalies: filteredSeriesAnomalies() });
  $("table-scope-key").textContent = state.key.type === "feeder" ? `feeder ${state.key.id}` : state.key.id;
  $("chart-key").textContent = `· ${state.key.type === "feeder" ? "feeder " : ""}${state.key.id}`
    + (state.keyPickedByPerson ? "" : " (following the newest anomaly; pick a meter to stay)");
  if (around) {
    const t = new Date(around).getTime();
    focusAnomalyPoint(usageChart, t);
    showRange(usageChart, t - 12 * 3600e3, t + 12 * 3600e3);
  } else {
    delete usageChart.options.scales.x.min;
    delete usageChart.options.scales.x.max;
    if ($("live-toggle").checked) followLatest();
  }
  usageChart.update("none");
}

/**
 * Live mode: the newest reading near the right edge with the span the person last chose, and a
 * little of the forecast ahead of it (the band shows what the next readings should look like).
 */
function followLatest() {
  const extent = dataExtent(usageChart);
  if (!extent) return;
  const ahead = usageChart.data.datasets[DATASET.UPPER].data;
  const forecastEnd = ahead.length ? ahead[ahead.length - 1].x : extent.max;
  let max = Math.max(extent.max, Math.min(forecastEnd, extent.max + state.liveSpan / 6));
  // Following an anomaly: keep it in view even when the readings have run far ahead of it (a
  // replayed backlog); live, the newest anomaly is near the newest reading anyway.
  if (following() && state.followedTimestamp + state.liveSpan / 4 < extent.max) {
    max = state.followedTimestamp + state.liveSpan / 4;
  }
  usageChart.options.scales.x.min = Math.max(extent.min, max - state.liveSpan);
  usageChart.options.scales.x.max = max;
}

function selectKey(key, { around } = {}) {
  const changed = !state.key || state.key.type !== key.type || state.key.id !== key.id;
  state.key = key;
  renderKeyOptions();
  if (changed) {
    state.liveKeyAnomalies = [];
    connectEvents();
    if ($("table-scope").checked) loadAnomalies();
  }
  updateCsvLink();
  return loadSeries({ around }).catch((error) => notify(`Could not load the chart: ${error.message}`, { error: true }));
}

let chartUpdatePending = false;
function scheduleChartUpdate() {
  if (chartUpdatePending) return;
  chartUpdatePending = true;
  setTimeout(() => {
    chartUpdatePending = false;
    if ($("live-toggle").checked) followLatest();
    usageChart.update("none");
  }, 300);
}

function initChart() {
  usageChart = createUsageChart($("usage-chart"), {
    onUserPan: () => {
      if ($("live-toggle").checked) {
        $("live-toggle").checked = false;
        notify("Live scrolling paused while you look around; tick Live to follow new readings again.");
      }
    },
  });
  usageChart.options.plugins.zoom.zoom.onZoomComplete = ({ chart }) => {
    const { min, max } = chart.scales.x;
    if (max > min) state.liveSpan = max - min;
  };
  window.wattsupCharts = { ...(window.wattsupCharts || {}), usage: usageChart };
  window.wattsupState = state;
  onThemeChange(() => applyChartTheme(usageChart));

  $("key-select").addEventListener("change", (event) => {
    const [type, ...rest] = event.target.value.split(":");
    if (type) {
      state.keyPickedByPerson = true;
      selectKey({ type, id: rest.join(":") });
    }
  });
  $("anomaly-toggle").addEventListener("change", (event) => {
    usageChart.setDatasetVisibility(DATASET.ANOMALIES, event.target.checked);
    usageChart.update("none");
  });
  $("live-toggle").addEventListener("change", (event) => {
    if (event.target.checked) {
      state.focusedKey = null;
      loadSeries().catch(() => {});
      renderTable();
    }
  });
  $("reset-zoom").addEventListener("click", () => {
    usageChart.resetZoom("none");
    state.liveSpan = DEFAULT_SPAN_MS;
    delete usageChart.options.scales.x.min;
    delete usageChart.options.scales.x.max;
    if ($("live-toggle").checked) followLatest();
    usageChart.update("none");
  });
  $("download-png").addEventListener("click", () => {
    // canvas.toBlob, not fetch(dataURL): the page's Content-Security-Policy allows fetch to the service only.
    usageChart.canvas.toBlob((blob) => downloadBlob(blob, `wattsup-${state.key ? state.key.id : "chart"}.png`), "image/png");
  });
}

// ---------------------------------------------------------------- anomaly table
function renderTable() {
  renderAnomalyRows($("anomaly-table").querySelector("tbody"), state.anomalies, {
    onSelect: focusAnomaly, focusedKey: state.focusedKey, fresh: state.fresh,
  });
  state.fresh = new Set();
  const empty = $("anomaly-empty");
  empty.hidden = state.anomalies.length > 0;
  const filtered = Object.values(tableFilters()).some(Boolean);
  empty.textContent = filtered ? "No anomalies match these filters."
    : "No anomalies yet. New ones appear here as the stream finds them.";
  $("anomaly-total").textContent = state.total > state.anomalies.length
    ? `· newest ${state.anomalies.length} of ${formatNumber(state.total)}` : `· ${formatNumber(state.total)}`;
}

let anomaliesRequest = 0;
async function loadAnomalies() {
  const request = ++anomaliesRequest;
  const filters = tableFilters();
  updateCsvLink();
  if (filters.severity === "NONE") {
    state.anomalies = [];
    state.total = 0;
  } else {
    const page = await api(`/anomalies${query({ ...filters, limit: TABLE_LIMIT })}`);
    if (request !== anomaliesRequest) return;
    state.anomalies = page.items;
    state.total = page.total;
  }
  renderTable();
}

/** Click on a row: chart that meter, zoomed around the anomaly, with the point enlarged. */
function focusAnomaly(anomaly) {
  state.focusedKey = anomalyKey(anomaly);
  state.keyPickedByPerson = true;
  $("live-toggle").checked = false;
  renderTable();
  selectKey({ type: "meter", id: anomaly.meter_id }, { around: anomaly.timestamp });
  if (window.innerWidth <= 1100) $("usage-chart").scrollIntoView({ behavior: "smooth", block: "center" });
}

let tableRenderPending = false;
function scheduleTableRender() {
  if (tableRenderPending) return;
  tableRenderPending = true;
  setTimeout(() => {
    tableRenderPending = false;
    renderTable();
  }, 250);
}

// ---------------------------------------------------------------- live events
function onAnomalyEvent(anomaly) {
  if (matchesTable(anomaly) && !state.anomalies.some((a) => a.id === anomaly.id)) {
    state.total += 1;
    const oldest = state.anomalies[state.anomalies.length - 1];
    if (state.anomalies.length < TABLE_LIMIT || compareNewestFirst(anomaly, oldest) < 0) {
      state.anomalies.push(anomaly);
      state.anomalies.sort(compareNewestFirst);
      state.anomalies.length = Math.min(state.anomalies.length, TABLE_LIMIT);
      state.fresh.add(anomalyKey(anomaly));
    }
    scheduleTableRender();
  }
  const at = new Date(anomaly.timestamp).getTime();
  if (!state.keyPickedByPerson && matchesKey(anomaly)) state.followedTimestamp = Math.max(state.followedTimestamp, at);
  if (!state.key) {
    followAnomaly(anomaly);
  } else if (!state.keyPickedByPerson && !matchesKey(anomaly) && at > state.followedTimestamp) {
    scheduleFollowNewest();
  } else if (matchesKey(anomaly)) {
    state.liveKeyAnomalies.push(anomaly);
    if (state.liveKeyAnomalies.length > 1000) state.liveKeyAnomalies.shift();
    state.seriesAnomalies.push(anomaly);
    if (selectedSeverities().includes(anomaly.severity)) {
      addAnomaly(usageChart, anomaly);
      scheduleChartUpdate();
    }
  }
  refreshAlertHistory({ soon: true });
  refreshIncidents({ soon: true });
}

/** True while the chart follows the newest anomaly (nobody has picked a meter yet). */
function following() {
  return !state.keyPickedByPerson && state.followedTimestamp > 0;
}

/** Chart the meter of `anomaly` (the page follows the action until someone picks a meter). */
function followAnomaly(anomaly) {
  state.followedAt = Date.now();
  state.followedTimestamp = new Date(anomaly.timestamp).getTime();
  selectKey({ type: "meter", id: anomaly.meter_id });
  state.liveKeyAnomalies.push(anomaly);
}

let followTimer = null;
/** Move to the newest anomaly's meter, at most once every few seconds so a burst does not flicker. */
function scheduleFollowNewest() {
  if (followTimer) return;
  const wait = Math.max(0, state.followedAt + FOLLOW_THROTTLE_MS - Date.now());
  followTimer = setTimeout(() => {
    followTimer = null;
    const newest = state.anomalies[0];
    if (!state.keyPickedByPerson && newest && new Date(newest.timestamp).getTime() > state.followedTimestamp
        && !matchesKey(newest)) followAnomaly(newest);
  }, wait);
}

function onReadingEvent(reading) {
  if (!matchesKey(reading)) return;
  addReading(usageChart, reading);
  scheduleChartUpdate();
}

/**
 * Two event streams. The fleet stream (anomalies, summary) stays open for the page's life, so
 * changing the charted meter never drops an anomaly; after a reconnect the table is reloaded to
 * cover the gap (SSE has no replay). The key stream carries the charted key's readings and is
 * replaced when the key changes; its copies of anomaly and summary events are ignored.
 */
function parseWith(handler) {
  return (event) => {
    state.received[event.type] = (state.received[event.type] || 0) + 1;
    try {
      handler(JSON.parse(event.data));
    } catch (error) {
      console.warn("bad event", event.type, error);
    }
  };
}

function connectFleetEvents() {
  if (state.fleetEvents && state.fleetEvents.readyState !== EventSource.CLOSED) return;
  const source = new EventSource(`${API}/events`);
  state.fleetEvents = source;
  const indicator = $("connection-state");
  let dropped = false;
  source.addEventListener("anomaly", parseWith(onAnomalyEvent));
  source.addEventListener("summary", parseWith(renderSummary));
  source.onopen = () => {
    indicator.dataset.state = "open";
    indicator.textContent = "live";
    if (dropped) {
      dropped = false;
      loadAnomalies().catch(() => {});
      loadIncidents().catch(() => {});
      if (state.key) loadSeries().catch(() => {});
    }
  };
  source.onerror = () => {
    // EventSource reconnects by itself, except after an HTTP error such as 401 (reading needs a
    // token): then signing in connects again.
    dropped = true;
    indicator.dataset.state = "error";
    indicator.textContent = source.readyState === EventSource.CLOSED ? "offline" : "reconnecting";
  };
}

function connectEvents() {
  if (state.events) state.events.close();
  state.events = null;
  if (!state.key) return;
  const source = new EventSource(`${API}/events${query(keyParams())}`);
  state.events = source;
  source.addEventListener("reading", parseWith(onReadingEvent));
  // Readings stored between the series request and this stream's start would be missing: in
  // live mode, load the series again once the stream is open (and after each reconnect).
  source.onopen = () => {
    if ($("live-toggle").checked) loadSeries().catch(() => {});
  };
}

// ---------------------------------------------------------------- filters wiring and downloads
function initFilters() {
  const reload = () => {
    loadAnomalies().catch((error) => notify(`Could not load anomalies: ${error.message}`, { error: true }));
  };
  document.querySelectorAll('[data-testid="severity-filter"] input').forEach((input) => input.addEventListener("change", () => {
    reload();
    setSeries(usageChart, {
      readings: usageChart.data.datasets[DATASET.USAGE].data.map((p) => ({ timestamp: p.x, kwh: p.y })),
      forecast: bandFromChart(),
      anomalies: filteredSeriesAnomalies(),
    });
    usageChart.update("none");
  }));
  for (const id of ["since-input", "until-input"]) {
    $(id).addEventListener("change", () => {
      reload();
      loadSeries().catch((error) => notify(`Could not load the chart: ${error.message}`, { error: true }));
    });
  }
  $("clear-dates").addEventListener("click", () => {
    $("since-input").value = "";
    $("until-input").value = "";
    reload();
    loadSeries().catch(() => {});
  });
  $("table-scope").addEventListener("change", reload);
  $("download-pdf").addEventListener("click", async () => {
    const button = $("download-pdf");
    button.disabled = true;
    try {
      const { buildReport } = await import("./report.js");
      await buildReport({
        chart: usageChart, key: state.key, summary: state.summary, filters: tableFilters(),
        anomalies: state.anomalies, total: state.total,
      });
    } catch (error) {
      notify(`Could not build the PDF report: ${error.message}`, { error: true });
    } finally {
      button.disabled = false;
    }
  });
}

/** The band and expected line as forecast rows, to redraw the chart without refetching. */
function bandFromChart() {
  const ds = usageChart.data.datasets;
  const rows = new Map();
  ds[DATASET.EXPECTED].data.forEach((p) => rows.set(p.x, { timestamp: p.x, expected: p.y }));
  ds[DATASET.UPPER].data.forEach((p) => rows.set(p.x, { ...(rows.get(p.x) || { timestamp: p.x }), upper: p.y, lower: p.lower }));
  return [...rows.values()].sort((a, b) => a.timestamp - b.timestamp);
}

// ---------------------------------------------------------------- start
async function loadEverything() {
  try {
    await Promise.all([loadSummary(), loadAnomalies(), loadIncidents()]);
    await Promise.all([loadMeters(), refreshControls()]);
    $("notice").hidden = true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      notify("This dashboard needs an API token to read data: sign in above.", { sticky: true });
      $("anomaly-empty").textContent = "Sign in to see the anomalies.";
    } else {
      notify(`Could not reach the service: ${error.message}`, { error: true, sticky: true });
    }
  }
}

async function start() {
  initThemeToggle($("theme-toggle"));
  initSignIn();
  initChart();
  initFilters();
  initUpload({ notify, writeAction });
  initControls({ notify, writeAction, isAuthenticated });
  initIncidents({ notify, isAuthenticated, onUnauthorized: loadSession });
  await loadSession();
  connectFleetEvents();
  await loadEverything();
  document.body.dataset.ready = "true";
}

start();
