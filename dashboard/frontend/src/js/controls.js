// Sensitivity (fleet-wide and per meter, PUT /api/v1/sensitivity: the service publishes it on the
// control topic every stream worker follows) and alert rules with their history.
import { api, query } from "./api.js";
import { el } from "./dom.js";
import { formatTime } from "./format.js";
import { settledRefresh } from "./refresh.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
let ctx;

// ---------------------------------------------------------------- sensitivity
function renderSensitivity(settings) {
  $("fleet-sensitivity").value = settings.fleet;
  $("fleet-sensitivity-range").value = settings.fleet;
  const entries = Object.entries(settings.meters || {}).sort(([a], [b]) => a.localeCompare(b));
  $("sensitivity-overrides").replaceChildren(...(entries.length
    ? entries.map(([meter, value]) => el("li", { dataset: { meter } },
      el("span", {}, `${meter}: `, el("strong", {}, String(value))),
      el("button", { type: "button", className: "ghost write", dataset: { clear: meter },
        "aria-label": `Clear the override for ${meter}` }, "Clear")))
    : [el("li", { className: "muted" }, "No per-meter overrides.")]));
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
  $("alert-rules").replaceChildren(...(rules.length
    ? rules.map((r) => el("li", { "data-testid": "alert-rule", dataset: { ruleId: r.id } },
      el("span", {}, el("strong", {}, r.name), el("small", {}, describeRule(r))),
      el("button", { type: "button", className: "ghost write", dataset: { delete: r.id },
        "aria-label": `Delete rule ${r.name}` }, "Delete")))
    : [el("li", { className: "muted" }, "No alert rules yet.")]));
}

async function loadHistory() {
  const page = await api(`/alerts${query({ limit: 50 })}`);
  $("alert-history").querySelector("tbody").replaceChildren(...page.items.map((a) => el("tr", { "data-testid": "alert-row" },
    el("td", {}, formatTime(a.sent_at)), el("td", {}, a.rule_name), el("td", {}, a.meter_id),
    el("td", {}, a.incident_event ? `incident ${a.incident_event}` : "anomaly"), el("td", {}, a.channel),
    el("td", { className: `status-${a.status}` }, a.attempts > 1 ? `${a.status} (attempt ${a.attempts})` : a.status),
    el("td", { className: "opt" }, a.detail || ""))));
  $("alert-empty").hidden = page.items.length > 0;
}

/** Refresh the alert history now, or (soon: true) once a burst of anomalies has settled. */
export const refreshAlertHistory = settledRefresh(loadHistory, 3000);

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
