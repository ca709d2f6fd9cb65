// Chart.js set-up shared by the fleet chart and the upload chart: a time axis, the forecast band
// (filled between lower and upper), the readings line, anomalies as red triangles, zoom and pan.
import { Chart, registerables } from "chart.js";
import zoomPlugin from "chartjs-plugin-zoom";
import "chartjs-adapter-date-fns";
import { causeTexts, formatKwh } from "./format.js";

Chart.register(...registerables, zoomPlugin);

export const ANOMALY_RED = "#d62728";
export const DATASET = { LOWER: 0, UPPER: 1, EXPECTED: 2, USAGE: 3, ANOMALIES: 4, BASELINE: 5 };

/** Paints the card colour under the chart so a PNG export is not transparent. */
const canvasBackground = {
  id: "canvasBackground",
  beforeDraw(chart, _args, options) {
    const { ctx } = chart;
    ctx.save();
    ctx.globalCompositeOperation = "destination-over";
    ctx.fillStyle = options.color || "#ffffff";
    ctx.fillRect(0, 0, chart.width, chart.height);
    ctx.restore();
  },
};

/**
 * Shades one stretch of the time axis (an incident, on the incident chart) behind the lines:
 * `options.range` is {min, max} in ms, or null for nothing.
 */
const highlightWindow = {
  id: "highlightWindow",
  beforeDatasetsDraw(chart, _args, options) {
    const range = options && options.range;
    const { ctx, chartArea, scales } = chart;
    if (!range || !chartArea || !scales.x) return;
    const left = Math.max(chartArea.left, scales.x.getPixelForValue(range.min));
    const right = Math.min(chartArea.right, scales.x.getPixelForValue(range.max));
    if (!(right > left)) return;
    ctx.save();
    ctx.fillStyle = options.color || "rgba(214, 39, 40, 0.08)";
    ctx.fillRect(left, chartArea.top, right - left, chartArea.bottom - chartArea.top);
    ctx.restore();
  },
};

function palette() {
  const style = getComputedStyle(document.documentElement);
  const read = (name) => style.getPropertyValue(name).trim();
  const dark = document.documentElement.getAttribute("data-theme") === "dark";
  return {
    text: read("--text"), muted: read("--muted"), card: read("--card"), border: read("--border"),
    usage: dark ? "#7fb0f0" : "#1f5fae",
    expected: dark ? "#b8c2cf" : "#6b7685",
    band: dark ? "rgba(127, 176, 240, 0.16)" : "rgba(31, 95, 174, 0.12)",
    baseline: dark ? "#f0a04b" : "#a35a00",
    window: dark ? "rgba(255, 107, 107, 0.12)" : "rgba(214, 39, 40, 0.07)",
  };
}

function anomalyPointRadius(context) {
  const point = context.raw;
  return point && point.focused ? 10 : 6;
}

/**
 * A usage chart on `canvas`. `onUserPan` is called when the person drags the view (the page then
 * stops live scrolling, since they are looking at something on purpose). `lineLabel` names the
 * dashed line: the forecast's expected usage on the fleet chart, the meter's usual usage on the
 * upload chart (a file has no forecast). `baseline` adds a sixth dataset (DATASET.BASELINE): the
 * meter's usual usage at its anomalous readings (the incident chart, see setBaseline).
 */
export function createUsageChart(canvas, { onUserPan, lineLabel = "Expected (forecast)", baseline = false } = {}) {
  const colors = palette();
  const chart = new Chart(canvas, {
    type: "line",
    data: {
      datasets: [
        { label: "Forecast low", data: [], borderWidth: 0, pointRadius: 0, fill: false, order: 5 },
        { label: "Forecast band", data: [], borderWidth: 0, pointRadius: 0, fill: "-1", order: 4 },
        { label: lineLabel, data: [], borderWidth: 1.5, borderDash: [5, 4], pointRadius: 0, order: 3 },
        { label: "Usage", data: [], borderWidth: 1.8, pointRadius: 0, pointHoverRadius: 4, order: 2 },
        {
          label: "Anomalies", data: [], showLine: false, order: 0,
          pointStyle: "triangle", pointRadius: anomalyPointRadius, pointHoverRadius: 9,
          backgroundColor: ANOMALY_RED, borderColor: ANOMALY_RED, pointBorderWidth: 1.5,
        },
        ...(baseline ? [{ label: "Usual for the hour", data: [], borderWidth: 1.5, borderDash: [2, 3], pointRadius: 2,
          pointStyle: "circle", order: 1 }] : []),
      ],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      parsing: false,
      normalized: true,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      scales: {
        x: {
          type: "time",
          time: { tooltipFormat: "yyyy-MM-dd HH:mm", displayFormats: { hour: "HH:mm", day: "MMM d", minute: "HH:mm" } },
          // Major ticks (midnight) show the date, the others the hour.
          ticks: { maxRotation: 0, autoSkipPadding: 12, major: { enabled: true },
            font: (context) => (context.tick && context.tick.major ? { weight: "bold" } : undefined) },
        },
        y: { beginAtZero: true, title: { display: true, text: "kWh per reading" } },
      },
      plugins: {
        legend: {
          labels: { usePointStyle: true, boxHeight: 8, filter: (item, data) => item.text !== "Forecast low" && data.datasets[item.datasetIndex].data.length > 0 },
        },
        tooltip: {
          callbacks: {
            label(context) {
              const raw = context.raw || {};
              if (context.datasetIndex === DATASET.ANOMALIES && raw.anomaly) {
                const a = raw.anomaly;
                // The forecast and the usual are named apart: they are different numbers.
                return `${a.severity} ${a.kind || "anomaly"} at ${a.meter_id}: ${formatKwh(a.observed)} kWh`
                  + (a.expected != null ? ` (forecast expected ${formatKwh(a.expected)} kWh)` : "")
                  + (a.baseline != null ? ` (usual for this hour ${formatKwh(a.baseline)} kWh`
                    + `${a.expected == null ? "; no forecast covers this reading" : ""})` : "");
              }
              if (context.datasetIndex === DATASET.LOWER) return null;
              if (context.datasetIndex === DATASET.UPPER) {
                return raw.lower != null ? `Forecast band: ${formatKwh(raw.lower)}–${formatKwh(raw.y)} kWh` : null;
              }
              return `${context.dataset.label}: ${formatKwh(context.parsed.y)} kWh`;
            },
            afterLabel(context) {
              const raw = context.raw || {};
              if (context.datasetIndex !== DATASET.ANOMALIES || !raw.anomaly) return "";
              return causeTexts(raw.anomaly).map((t) => `• ${t}`);
            },
          },
        },
        zoom: {
          zoom: { wheel: { enabled: true }, pinch: { enabled: true }, mode: "x" },
          pan: { enabled: true, mode: "x", onPanComplete: () => onUserPan && onUserPan() },
          limits: { x: { minRange: 2 * 3600e3 } },
        },
        canvasBackground: { color: colors.card },
        highlightWindow: { range: null, color: colors.window },
      },
    },
    plugins: [canvasBackground, highlightWindow],
  });
  applyChartTheme(chart);
  return chart;
}

/** Re-colour a chart after the theme changed (Chart.js does not read CSS variables itself). */
export function applyChartTheme(chart) {
  const colors = palette();
  const [lower, upper, expected, usage, anomalies, baseline] = chart.data.datasets;
  anomalies.borderColor = colors.card; // a thin outline keeps the red marks clear of the line
  lower.borderColor = "transparent";
  upper.borderColor = "transparent";
  upper.backgroundColor = colors.band;
  expected.borderColor = colors.expected;
  usage.borderColor = colors.usage;
  usage.backgroundColor = colors.usage;
  if (baseline) {
    baseline.borderColor = colors.baseline;
    baseline.backgroundColor = colors.baseline;
  }
  for (const scale of Object.values(chart.options.scales)) {
    scale.ticks = { ...scale.ticks, color: colors.muted };
    scale.grid = { ...scale.grid, color: colors.border };
    if (scale.title) scale.title.color = colors.muted;
  }
  chart.options.plugins.legend.labels.color = colors.text;
  chart.options.plugins.canvasBackground.color = colors.card;
  chart.options.plugins.highlightWindow.color = colors.window;
  chart.update("none");
}

const ms = (iso) => new Date(iso).getTime();

/** Put a series into the chart. `anomalies` are contract Anomaly objects (with or without id). */
export function setSeries(chart, { readings = [], forecast = [], anomalies = [] }) {
  const ds = chart.data.datasets;
  ds[DATASET.USAGE].data = readings.map((r) => ({ x: ms(r.timestamp), y: r.kwh }));
  const band = forecast.filter((f) => f.lower != null && f.upper != null);
  ds[DATASET.LOWER].data = band.map((f) => ({ x: ms(f.timestamp), y: f.lower }));
  ds[DATASET.UPPER].data = band.map((f) => ({ x: ms(f.timestamp), y: f.upper, lower: f.lower }));
  ds[DATASET.EXPECTED].data = forecast.filter((f) => f.expected != null).map((f) => ({ x: ms(f.timestamp), y: f.expected }));
  ds[DATASET.ANOMALIES].data = anomalies.map((a) => anomalyPoint(chart, a)).sort((a, b) => a.x - b.x);
}

/** The usual usage (`baseline`) at each anomalous reading that has one, on a chart made with `baseline`. */
export function setBaseline(chart, anomalies) {
  const ds = chart.data.datasets[DATASET.BASELINE];
  if (!ds) return;
  ds.data = anomalies.filter((a) => a.baseline != null).map((a) => ({ x: ms(a.timestamp), y: a.baseline }))
    .sort((a, b) => a.x - b.x);
}

/** Shade [min, max] (ms) behind the lines; null clears it. */
export function highlightRange(chart, range) {
  chart.options.plugins.highlightWindow.range = range;
}

/**
 * On a feeder's chart (the sum of its meters) a meter's anomaly is drawn on the feeder's line at
 * its time, not at the meter's own kWh, which would sit far below the sum.
 */
export function pinAnomaliesToLine(chart, pin) {
  chart.$wattsupPinAnomalies = pin;
}

function anomalyPoint(chart, anomaly) {
  const x = ms(anomaly.timestamp);
  let y = anomaly.observed;
  if (chart.$wattsupPinAnomalies) {
    const reading = chart.data.datasets[DATASET.USAGE].data.find((p) => p.x === x);
    if (reading) y = reading.y;
  }
  return { x, y, anomaly };
}

const sameAnomaly = (a, b) => (a.id != null && b.id != null ? a.id === b.id
  : a.meter_id === b.meter_id && a.timestamp === b.timestamp);

/** Add one live reading (kept in time order; the same timestamp replaces the old value). */
export function addReading(chart, reading, maxPoints = 5000) {
  const data = chart.data.datasets[DATASET.USAGE].data;
  const point = { x: ms(reading.timestamp), y: reading.kwh };
  const last = data[data.length - 1];
  if (!last || point.x > last.x) data.push(point);
  else {
    const index = data.findIndex((p) => p.x >= point.x);
    if (data[index].x === point.x) data[index] = point;
    else data.splice(index, 0, point);
  }
  if (data.length > maxPoints) data.splice(0, data.length - maxPoints);
}

export function addAnomaly(chart, anomaly) {
  const data = chart.data.datasets[DATASET.ANOMALIES].data;
  const point = anomalyPoint(chart, anomaly);
  const existing = data.findIndex((p) => sameAnomaly(p.anomaly, anomaly));
  if (existing >= 0) data[existing] = point;
  else data.push(point);
  data.sort((a, b) => a.x - b.x);
}

export function dataExtent(chart) {
  const usage = chart.data.datasets[DATASET.USAGE].data;
  if (!usage.length) return null;
  return { min: usage[0].x, max: usage[usage.length - 1].x };
}

/** Show [min, max] on the x axis (a zoom the reset button undoes). */
export function showRange(chart, min, max) {
  chart.zoomScale("x", { min, max }, "none");
}

export function focusAnomalyPoint(chart, timestampMs) {
  for (const point of chart.data.datasets[DATASET.ANOMALIES].data) point.focused = point.x === timestampMs;
}
