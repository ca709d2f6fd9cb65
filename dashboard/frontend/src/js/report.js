// PDF report (loaded only when asked for): the chart as shown, the fleet summary, the filters
// and the anomaly table with causes. jsPDF's built-in Helvetica covers Latin-1 only, so text is
// folded to it first.
import { jsPDF } from "jspdf";
import { autoTable } from "jspdf-autotable";
import { applyChartTheme } from "./charts.js";
import { causeTexts, formatKwh, formatTime } from "./format.js";

const latin1 = (text) => String(text ?? "")
  .replace(/[–—]/g, "-").replace(/[‘’]/g, "'").replace(/[“”]/g, '"').replace(/…/g, "...").replace(/[×]/g, "x")
  .replace(/[^\x20-\xff]/g, "?");

/** The chart drawn in light colours (a report is read on paper), whatever the page's theme. */
function lightChartImage(chart) {
  const root = document.documentElement;
  const theme = root.getAttribute("data-theme");
  if (theme !== "dark") return chart.toBase64Image("image/png", 1);
  root.setAttribute("data-theme", "light"); // synchronous: the page is not repainted in between
  applyChartTheme(chart);
  const image = chart.toBase64Image("image/png", 1);
  root.setAttribute("data-theme", theme);
  applyChartTheme(chart);
  return image;
}

export async function buildReport({ chart, key, summary, filters, anomalies, total }) {
  const doc = new jsPDF({ orientation: "landscape", unit: "pt", format: "a4" });
  const width = doc.internal.pageSize.getWidth();
  const margin = 36;
  let y = margin + 6;

  doc.setFont("helvetica", "bold").setFontSize(18).text("WattsUp anomaly report", margin, y);
  doc.setFont("helvetica", "normal").setFontSize(9).setTextColor(90)
    .text(`Generated ${formatTime(new Date().toISOString())} (browser time)`, width - margin, y, { align: "right" });
  y += 20;

  doc.setTextColor(20).setFontSize(10);
  if (summary) {
    const counts = summary.anomalies_24h || {};
    const lines = [
      `Fleet: ${summary.meters} meters on ${summary.feeders} feeders; ${summary.readings_last_hour} readings in the last hour; `
        + `latest reading ${summary.latest_reading_at ? formatTime(summary.latest_reading_at) : "none"}; model ${summary.model_version || "none"}.`,
      `Anomalies in the last 24 h: ${counts.CRITICAL ?? 0} critical, ${counts.WARNING ?? 0} warning, ${counts.INFO ?? 0} info.`,
    ];
    lines.forEach((line) => { doc.text(latin1(line), margin, y); y += 14; });
  }
  const scope = [
    filters.meter_id && `meter ${filters.meter_id}`, filters.feeder_id && `feeder ${filters.feeder_id}`,
    filters.severity && filters.severity !== "NONE" ? `severity ${filters.severity}` : "all severities",
    filters.since && `from ${formatTime(filters.since)}`, filters.until && `to ${formatTime(filters.until)}`,
  ].filter(Boolean).join(", ");
  doc.text(latin1(`Table: ${scope}; ${anomalies.length} newest of ${total} anomalies.`), margin, y);
  y += 12;

  if (key && chart) {
    const image = lightChartImage(chart);
    const imageWidth = width - 2 * margin;
    const imageHeight = Math.min(260, imageWidth * (chart.height / chart.width));
    doc.setFont("helvetica", "bold").text(latin1(`Usage of ${key.type} ${key.id}`), margin, y + 6);
    doc.addImage(image, "PNG", margin, y + 12, imageWidth, imageHeight, undefined, "FAST");
    y += imageHeight + 24;
  }

  autoTable(doc, {
    startY: y,
    margin: { left: margin, right: margin },
    // The forecast and the meter's usual usage are separate columns: "-" in Forecast means no forecast covered it.
    head: [["Time", "Meter", "Feeder", "Severity", "Kind", "Observed kWh", "Forecast kWh", "Usual kWh", "Causes"]],
    body: anomalies.map((a) => [formatTime(a.timestamp), a.meter_id, a.feeder_id, a.severity, a.kind || "",
      formatKwh(a.observed), formatKwh(a.expected), formatKwh(a.baseline), causeTexts(a).join("; ")].map(latin1)),
    styles: { fontSize: 8, cellPadding: 3, overflow: "linebreak" },
    headStyles: { fillColor: [31, 95, 174] },
    columnStyles: { 5: { halign: "right" }, 6: { halign: "right" }, 7: { halign: "right" }, 8: { cellWidth: 270 } },
    didParseCell(data) {
      if (data.section === "body" && data.column.index === 3 && data.cell.raw === "CRITICAL") data.cell.styles.textColor = [214, 39, 40];
    },
  });
  doc.save(`wattsup-report${key ? `-${key.id}` : ""}.pdf`);
}
