// Upload panel: drop a readings CSV, the service scores it (POST /api/v1/detect), the page shows
// its chart with anomalies in red and its table, and offers the result as a CSV download.
import { api } from "./api.js";
import { applyChartTheme, createUsageChart, focusAnomalyPoint, setSeries, showRange } from "./charts.js";
import { option } from "./dom.js";
import { causeTexts, downloadBlob, formatNumber, toCsv } from "./format.js";
import { anomalyKey, compareNewestFirst, renderAnomalyRows } from "./table.js";
import { onThemeChange } from "./theme.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
const ms = (iso) => new Date(iso).getTime();

let chart;
let result = null;
let fileName = "readings.csv";
let focusedKey = null;

function ensureChart() {
  if (!chart) {
    chart = createUsageChart($("upload-chart"), { lineLabel: "Usual usage" });
    window.wattsupCharts = { ...(window.wattsupCharts || {}), upload: chart };
    onThemeChange(() => applyChartTheme(chart));
  }
  return chart;
}

function anomalyCounts() {
  const counts = new Map();
  for (const a of result.anomalies) counts.set(a.meter_id, (counts.get(a.meter_id) || 0) + 1);
  return counts;
}

function showMeter(meterId, { around } = {}) {
  const points = result.series[meterId] || [];
  $("upload-key").value = meterId;
  setSeries(ensureChart(), {
    readings: points.map((p) => ({ timestamp: p.timestamp, kwh: p.kwh })),
    // The dashed line is the meter's usual usage (a file has no forecast), drawn without a band.
    forecast: points.filter((p) => p.baseline != null).map((p) => ({ timestamp: p.timestamp, expected: p.baseline })),
    anomalies: result.anomalies.filter((a) => a.meter_id === meterId),
  });
  chart.resetZoom("none");
  delete chart.options.scales.x.min;
  delete chart.options.scales.x.max;
  if (around) {
    const t = ms(around);
    focusAnomalyPoint(chart, t);
    showRange(chart, t - 24 * 3600e3, t + 24 * 3600e3);
  }
  chart.update("none");
}

const UPLOAD_TABLE_LIMIT = 500; // a big file can have thousands; the download has them all

function renderTable() {
  const anomalies = [...result.anomalies].sort(compareNewestFirst).slice(0, UPLOAD_TABLE_LIMIT);
  renderAnomalyRows($("upload-table").querySelector("tbody"), anomalies, {
    columns: "upload",
    focusedKey,
    onSelect: (anomaly) => {
      focusedKey = anomalyKey(anomaly);
      renderTable();
      showMeter(anomaly.meter_id, { around: anomaly.timestamp });
    },
  });
}

function render() {
  const counts = anomalyCounts();
  const meters = Object.keys(result.series).sort((a, b) => (counts.get(b) || 0) - (counts.get(a) || 0) || a.localeCompare(b));
  // Elements, never HTML: the meter ids come from the uploaded file.
  $("upload-key").replaceChildren(...meters.map((m) => option(m,
    `${m}${counts.get(m) ? ` · ${counts.get(m)} ${counts.get(m) === 1 ? "anomaly" : "anomalies"}` : ""}`)));
  const rejected = result.rejected_rows || [];
  const dropped = result.duplicates_dropped || 0;
  const conflicting = result.duplicates_rejected || 0;
  $("upload-summary").textContent = `${fileName}: ${formatNumber(result.readings)} readings from ${meters.length} `
    + `meter${meters.length === 1 ? "" : "s"}, ${result.anomalies.length} flagged`
    + (result.anomalies.length > UPLOAD_TABLE_LIMIT ? ` (the table shows the newest ${UPLOAD_TABLE_LIMIT})` : "")
    + (rejected.length ? `, ${rejected.length} rows rejected (first: row ${rejected[0].row}, ${rejected[0].reason})` : "")
    + (dropped ? `, ${dropped} exact duplicate row${dropped === 1 ? "" : "s"} dropped` : "")
    + (conflicting ? `, ${conflicting} conflicting duplicate row${conflicting === 1 ? "" : "s"} rejected (the first of each kept)` : "")
    + ` · model ${result.model_version || "fitted on the file"}.`;
  $("upload-result").hidden = false;
  focusedKey = null;
  renderTable();
  if (meters.length) showMeter(meters[0]);
}

/**
 * The file's rows with their scores and flags, and each flagged row's kind, severity and causes;
 * then the repeated rows that were not scored, each with what happened to it in `note`.
 */
function resultCsv() {
  const byReading = new Map(result.anomalies.map((a) => [`${a.meter_id}@${ms(a.timestamp)}`, a]));
  const rows = [];
  for (const [meterId, points] of Object.entries(result.series)) {
    for (const p of points) {
      const anomaly = byReading.get(`${meterId}@${ms(p.timestamp)}`);
      rows.push([p.timestamp, meterId, p.kwh, p.baseline, p.score, p.flag, p.severity ?? "",
        anomaly ? anomaly.kind ?? "" : "", anomaly ? causeTexts(anomaly).join("; ") : "", ""]);
    }
  }
  rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1].localeCompare(b[1])));
  for (const d of result.duplicate_rows || []) {
    rows.push([d.timestamp, d.meter_id, d.kwh, "", "", "", "", "", "", `row ${d.row} ${d.action}: ${d.reason}`]);
  }
  return toCsv(["timestamp", "meter_id", "kwh", "baseline", "score", "flag", "severity", "kind", "causes", "note"], rows);
}

export function initUpload({ notify, writeAction }) {
  const zone = $("dropzone");
  const input = $("upload-input");

  async function upload(file) {
    if (!file) return;
    fileName = file.name;
    zone.classList.add("busy");
    try {
      const form = new FormData();
      form.append("file", file, file.name);
      const response = await writeAction(`check ${file.name}`, () => api("/detect", { method: "POST", form }));
      if (response) {
        result = response;
        render();
        const n = response.anomalies.length;
        notify(`${file.name}: ${n} ${n === 1 ? "anomaly" : "anomalies"} found in ${formatNumber(response.readings)} readings.`);
      }
    } finally {
      zone.classList.remove("busy");
      input.value = "";
    }
  }

  input.addEventListener("change", () => upload(input.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    upload(event.dataTransfer.files[0]);
  });
  $("upload-key").addEventListener("change", (event) => showMeter(event.target.value));
  $("upload-download").addEventListener("click", () => {
    if (!result) return;
    downloadBlob(new Blob([resultCsv()], { type: "text/csv" }), fileName.replace(/(\.csv)?$/i, "-anomalies.csv"));
  });
}
