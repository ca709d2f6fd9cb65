// Sensitivity (fleet-wide and per meter, PUT /api/v1/sensitivity: the service publishes it on the
// control topic every stream worker follows) and alert rules with their history.
import { api, query } from "./api.js";
import { escapeHtml, formatTime } from "./format.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
let ctx;

// ---------------------------------------------------------------- sensitivity
function renderSensitivity(settings) {
  $("fleet-sensitivity").value = settings.fleet;
  $("fleet-sensitivity-range").value = settings.fleet;
  const entries = Object.entries(settings.meters || {}).sort(([a], [b]) => a.localeCompare(b));
  $("sensitivity-overrides").innerHTML = entries.length
    ? entries.map(([meter, value]) => `<li data-meter="${escapeHtml(meter)}"><span>${escapeHtml(meter)}: <strong>${value}</strong></span>`
      + `<button type="button" class="ghost write" data-clear="${escapeHtml(meter)}" aria-label="Clear the override for ${escapeHtml(meter)}">Clear</button></li>`).join("")
    : '<li class="muted">No per-meter overrides.</li>';
}

async function loadSensitivity() {
  renderSensitivity(await api("/sensitivity"));
}

function initSensitivity() {
  const number = $("fleet-sensitivity");
  const range = $("fleet-sensitivity-range");
  range.addEventListener("input", () => { number.value = range.value; });
  number.addEventListener("input", () => { range.value = number.value; });
  $("fleet-sensitivity-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = Number(number.value);
    const settings = await ctx.writeAction("change the sensitivity",
      () => api("/sensitivity", { method: "PUT", json: { value, meter_id: null } }));
    if (settings) {
      renderSensitivity(settings);
      ctx.notify(`Fleet sensitivity is now ${settings.fleet}.`);
    }
  });
  $("meter-sensitivity-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const meterId = $("meter-sensitivity-meter").value.trim();
    const value = Number($("meter-sensitivity").value);
    const settings = await ctx.writeAction(`change the sensitivity of ${meterId}`,
      () => api("/sensitivity", { method: "PUT", json: { value, meter_id: meterId } }));
    if (settings) {
      renderSensitivity(settings);
      ctx.notify(`Sensitivity of ${meterId} is now ${value}.`);
    }
  });
  $("sensitivity-overrides").addEventListener("click", async (event) => {
    const meterId = event.target.dataset.clear;
    if (!meterId) return;
    const done = await ctx.writeAction(`clear the override of ${meterId}`,
      () => api(`/sensitivity/${encodeURIComponent(meterId)}`, { method: "DELETE" }).then(() => true));
    if (done) await loadSensitivity().catch(() => {});
  });
}

// ---------------------------------------------------------------- alert rules and history
function describeRule(rule) {
  const scope = rule.meter_id ? `meter ${rule.meter_id}` : rule.feeder_id ? `feeder ${rule.feeder_id}` : "all meters";
  const channels = [rule.webhook_url && `webhook ${rule.webhook_url}`, rule.email_to && `e-mail ${rule.email_to}`].filter(Boolean);
  const quiet = rule.quiet_hours ? `, quiet ${rule.quiet_hours.start}–${rule.quiet_hours.end}` : "";
  return `${rule.min_severity} and above on ${scope} → ${channels.join(" and ") || "no channel"}${quiet}${rule.enabled ? "" : " (disabled)"}`;
}

async function loadRules() {
  const rules = (await api("/alert-rules")).items;
  $("alert-rules").innerHTML = rules.length
    ? rules.map((r) => `<li data-testid="alert-rule" data-rule-id="${r.id}"><span><strong>${escapeHtml(r.name)}</strong>`
      + `<small>${escapeHtml(describeRule(r))}</small></span>`
      + `<button type="button" class="ghost write" data-delete="${r.id}" aria-label="Delete rule ${escapeHtml(r.name)}">Delete</button></li>`).join("")
    : '<li class="muted">No alert rules yet.</li>';
}

async function loadHistory() {
  const page = await api(`/alerts${query({ limit: 50 })}`);
  $("alert-history").querySelector("tbody").innerHTML = page.items.map((a) => `<tr data-testid="alert-row">`
    + `<td>${formatTime(a.sent_at)}</td><td>${escapeHtml(a.rule_name)}</td><td>${escapeHtml(a.meter_id)}</td>`
    + `<td>${escapeHtml(a.channel)}</td><td class="status-${escapeHtml(a.status)}">${escapeHtml(a.status)}</td>`
    + `<td class="opt">${escapeHtml(a.detail || "")}</td></tr>`).join("");
  $("alert-empty").hidden = page.items.length > 0;
}

let historyTimer = null;
/** Refresh the alert history now, or (soon: true) once a burst of anomalies has settled. */
export function refreshAlertHistory({ soon = false } = {}) {
  if (soon) {
    if (historyTimer) return;
    historyTimer = setTimeout(() => {
      historyTimer = null;
      loadHistory().catch(() => {});
    }, 3000);
    return;
  }
  loadHistory().catch(() => {});
}

function initRules() {
  const form = $("alert-rule-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const text = (name) => (data.get(name) || "").toString().trim() || null;
    const quietStart = text("quiet_start");
    const quietEnd = text("quiet_end");
    if (Boolean(quietStart) !== Boolean(quietEnd)) {
      ctx.notify("Quiet hours need both a start and an end.", { error: true });
      return;
    }
    if (!text("webhook_url") && !text("email_to")) {
      ctx.notify("Give the rule a webhook URL or an e-mail address to send to.", { error: true });
      return;
    }
    const rule = {
      name: text("name"), min_severity: data.get("min_severity"), meter_id: text("meter_id"), feeder_id: text("feeder_id"),
      quiet_hours: quietStart ? { start: quietStart, end: quietEnd } : null,
      webhook_url: text("webhook_url"), email_to: text("email_to"), enabled: data.get("enabled") === "on",
    };
    const created = await ctx.writeAction("add an alert rule", () => api("/alert-rules", { method: "POST", json: rule }));
    if (created) {
      form.reset();
      ctx.notify(`Alert rule "${created.name}" added.`);
      await loadRules().catch(() => {});
    }
  });
  $("alert-rules").addEventListener("click", async (event) => {
    const id = event.target.dataset.delete;
    if (!id) return;
    const done = await ctx.writeAction("delete the alert rule",
      () => api(`/alert-rules/${encodeURIComponent(id)}`, { method: "DELETE" }).then(() => true));
    if (done) await loadRules().catch(() => {});
  });
  setInterval(() => refreshAlertHistory(), 30_000);
}

export function refreshControls() {
  return Promise.all([loadSensitivity(), loadRules(), loadHistory()].map((p) => p.catch(() => {})));
}

export function initControls(context) {
  ctx = context;
  initSensitivity();
  initRules();
}
