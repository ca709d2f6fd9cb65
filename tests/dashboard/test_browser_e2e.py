"""The dashboard page end to end: Debian's headless Chromium (driven by Playwright, never a downloaded
browser) against the running pipeline: a real Kafka broker, a real ``wattsup stream`` worker with a
trained model, the ``wattsup dashboard`` service as a subprocess, and a simulated fleet with
labelled anomalies produced while the page is open.

Screenshots of every step go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from deploy.kafka.launcher import free_port
from feedback.topic import read_marks
from foundation.sensitivity import SensitivityWatcher
from models.training import train_and_save
from readings.producer import ReadingProducer
from schemas.serde import SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet
from tests.waiting import stop_process
from tests.webhook_receiver import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HISTORY_DAYS = 7
UPLOAD_CSV = Path(__file__).with_name("upload_with_spike.csv")
UPLOAD_SPIKE = ("U002", "2026-03-08T19:00:00Z")  # the one 10x reading in UPLOAD_CSV
ANOMALY_RED = "#d62728"
CSV_COLUMNS = ["timestamp", "meter_id", "feeder_id", "observed", "expected", "lower", "upper", "residual", "score",
               "severity", "kind", "causes", "model_version", "band_residual", "baseline"]

sync_api = pytest.importorskip("playwright.sync_api")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (make test installs Debian's chromium)", allow_module_level=True)


@dataclass
class RunningDashboard:
    url: str
    token: str
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path

    def get(self, path: str) -> dict:
        # With the token: alert rules and alert history need sign-in even where reads are public.
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e-models")
    history = simulate_fleet(FleetConfig(meters=60, days=10, interval=timedelta(hours=1), seed=5101)).readings
    train_and_save(history, path, n_estimators=100, source="e2e test history")
    return path


@contextmanager
def running_dashboard(kafka, topics, tmp_path: Path, **settings: str) -> Iterator[RunningDashboard]:
    """``wattsup dashboard`` as a subprocess on a free port with a temp SQLite DB and one API token."""
    port = free_port()
    env = {
        **os.environ,
        "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
        "WATTSUP_DASHBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'dashboard.db'}",
        "WATTSUP_DASHBOARD_SUMMARY_SECONDS": "2",
        "WATTSUP_FORECAST_DATA_DIR": str(tmp_path / "forecaster"),
        "WATTSUP_DASHBOARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",  # this test's webhook receiver
        **{f"WATTSUP_DASHBOARD_{k.upper()}": v for k, v in settings.items()},
    }
    created = subprocess.run([sys.executable, "-m", "wattsup.cli", "dashboard", "create-token", "e2e-browser"],
                             env=env, capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert created.returncode == 0, created.stdout + created.stderr
    token = created.stdout.strip().splitlines()[-1].strip()
    log_path = tmp_path / "dashboard.log"
    process = subprocess.Popen([sys.executable, "-m", "wattsup.cli", "dashboard", "--port", str(port)], env=env,
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                               start_new_session=True)
    dashboard = RunningDashboard(f"http://127.0.0.1:{port}", token, env, process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"dashboard exited:\n{dashboard.log_tail()}"
            try:
                if dashboard.get("/healthz")["status"] == "ok":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"dashboard not healthy in 60 s:\n{dashboard.log_tail()}"
            time.sleep(0.3)
        yield dashboard
    finally:
        stop_process(process, 15)


@pytest.fixture
def pipeline(kafka, stream_workers, model_dir, tmp_path) -> Iterator[tuple[object, object, RunningDashboard]]:
    """Fresh topics, a stream worker and the dashboard service."""
    topics = kafka.fresh_topics(partitions=4)
    worker = stream_workers.start(topics, model_dir, app_id=f"e2e-{os.urandom(3).hex()}")
    with running_dashboard(kafka, topics, tmp_path, model_dir=str(model_dir)) as dashboard:
        yield topics, worker, dashboard


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A local HTTP endpoint that records the alert POSTs the dashboard sends."""
    with webhook_receiver() as server:
        yield server


@pytest.fixture
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


def wait_until(predicate, timeout: float, message) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(0.5)


def all_api_anomalies(dashboard: RunningDashboard) -> list[dict]:
    items, offset = [], 0
    while True:
        page = dashboard.get(f"/api/v1/anomalies?limit=1000&offset={offset}")
        items += page["items"]
        offset += len(page["items"])
        if offset >= page["total"] or not page["items"]:
            return items


CHART_STATE_JS = """() => {
  const chart = window.wattsupCharts.usage;
  const index = chart.data.datasets.findIndex((d) => d.label === 'Anomalies');
  const ds = chart.data.datasets[index];
  const band = chart.data.datasets.find((d) => d.label === 'Forecast band');
  return {key: document.querySelector("[data-testid='key-select']").value, visible: chart.isDatasetVisible(index),
          color: ds.backgroundColor, pointStyle: ds.pointStyle, band: band.data.length,
          meters: [...new Set(ds.data.map((p) => p.anomaly.meter_id))]};
}"""


LIVE_STATE_JS = """() => {
  const chart = window.wattsupCharts.usage, usage = chart.data.datasets[3].data;
  return {meter: document.querySelector("[data-testid='key-select']").value.split(":")[1],
          last: usage.length ? usage[usage.length - 1].x : null, min: chart.scales.x.min, max: chart.scales.x.max};
}"""


FEEDER_STATE_JS = """() => {
  const chart = window.wattsupCharts.usage;
  const usage = chart.data.datasets[3].data, anomalies = chart.data.datasets[4].data;
  const y = new Map(usage.map((p) => [p.x, p.y]));
  return {readings: usage.length, anomalies: anomalies.length, band: chart.data.datasets[1].data.length,
          meters: [...new Set(anomalies.map((p) => p.anomaly.meter_id))],
          pinned: anomalies.every((p) => !y.has(p.x) || y.get(p.x) === p.y)};
}"""


def chart_shows_own_anomalies(page) -> bool:
    """The usage chart has anomaly points, all of the meter it charts."""
    state = page.evaluate(CHART_STATE_JS)
    return state["key"].startswith("meter:") and state["meters"] == [state["key"].split(":", 1)[1]]


EXPECTED_CELLS_JS = """rs => rs.map((r) => {
  const cell = r.querySelector("[data-testid='expected-cell']");
  return {source: cell.dataset.source, title: cell.title || "", tagged: !!cell.querySelector(".usual-tag"), text: cell.innerText};
})"""

LINE_DATASET_JS = """(name) => {
  const line = window.wattsupCharts[name].data.datasets[2];
  return {label: line.label, points: line.data.length};
}"""


ANOMALY_DATASET_JS = """(name) => {
  const chart = window.wattsupCharts && window.wattsupCharts[name];
  if (!chart) return null;
  const index = chart.data.datasets.findIndex((d) => d.label === 'Anomalies');
  const ds = chart.data.datasets[index];
  return {visible: chart.isDatasetVisible(index), color: ds.backgroundColor, pointStyle: ds.pointStyle,
          points: ds.data.map((p) => ({x: p.x, y: p.y, meter: p.anomaly.meter_id, timestamp: p.anomaly.timestamp,
                                         focused: !!p.focused}))};
}"""


INCIDENT_CHART_JS = """() => {
  const chart = window.wattsupCharts.incident;
  const byLabel = (label) => chart.data.datasets.find((d) => d.label === label);
  const anomalies = byLabel('Anomalies');
  return {color: anomalies.backgroundColor, pointStyle: anomalies.pointStyle, visible: chart.isDatasetVisible(4),
          anomalies: anomalies.data.map((p) => p.x), readings: byLabel('Usage').data.length,
          usual: byLabel('Usual for the hour').data.length, band: byLabel('Forecast band').data.length,
          shaded: chart.options.plugins.highlightWindow.range, min: chart.scales.x.min, max: chart.scales.x.max};
}"""


def to_ms(iso: str) -> int:
    return pd.Timestamp(iso).value // 10**6


def check_incidents_view_detail_and_marking(page, kafka, topics, worker, dashboard: RunningDashboard,
                                            artifacts: Path) -> None:
    """The incidents view against the API (filters, open first), one incident's chart with its anomalous
    readings in red, and a false-alarm mark sent from the page that the stream worker applies."""
    rows = page.locator("[data-testid='incident-row']")
    listed: dict = {}

    def page_lists(params: str = "") -> bool:
        listed.update(dashboard.get(f"/api/v1/incidents?limit=200{params}"))
        shown = rows.evaluate_all("rs => rs.map(r => r.dataset.id)")
        return bool(listed["items"]) and shown == [i["incident_id"] for i in listed["items"]]

    # Filters (each change reloads the list): each narrows it to what the API returns for it.
    everything = dashboard.get("/api/v1/incidents?limit=200")["items"]
    assert everything, "the stream made no incidents"
    target = max(everything, key=lambda i: (i["readings"], i["status"] == "open"))
    page.select_option("[data-testid='incident-feeder']", target["feeder_id"])
    wait_until(lambda: page_lists(f"&feeder_id={target['feeder_id']}"), 15, lambda: f"the feeder filter: {listed}")
    page.select_option("[data-testid='incident-kind']", target["kind"])
    wait_until(lambda: page_lists(f"&feeder_id={target['feeder_id']}&kind={target['kind']}"), 15, "the kind filter")
    page.select_option("[data-testid='incident-state']", target["status"])
    wait_until(lambda: page_lists(f"&feeder_id={target['feeder_id']}&kind={target['kind']}&state={target['status']}"),
               15, "the state filter")
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.state)")) == {target["status"]}

    # The detail: the meter's chart over the incident, its anomalous readings as red triangles.
    page.locator(f"[data-testid='incident-row'][data-id='{target['incident_id']}']").click()
    page.wait_for_selector(f"[data-testid='incident-detail'][data-loaded='{target['incident_id']}']")
    detail = dashboard.get(f"/api/v1/incidents/{target['incident_id']}")
    chart = page.evaluate(INCIDENT_CHART_JS)
    assert chart["color"].lower() == ANOMALY_RED and chart["pointStyle"] == "triangle" and chart["visible"]
    assert chart["anomalies"] == [to_ms(a["timestamp"]) for a in detail["anomalies"]] and chart["anomalies"], chart
    assert chart["readings"] > target["readings"] and chart["usual"] == len(detail["anomalies"]), chart
    assert chart["shaded"]["min"] == to_ms(target["started"]) and chart["min"] < chart["shaded"]["min"], chart
    assert chart["max"] > chart["shaded"]["max"] >= max(chart["anomalies"]), chart
    assert target["meter_id"] in page.inner_text("[data-testid='incident-title']")
    page.locator("[data-testid='incidents']").scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "05d-incident-detail.png", full_page=True)

    # Mark it a false alarm for 3 days: the page shows the 202, the mark is on the feedback topic, and the
    # stream worker applied it (its metric moves).
    applied = worker.metric("wattsup_stream_feedback_marks_applied_total")
    page.check("[data-testid='incident-feedback-form'] input[value='false_alarm']")
    page.fill("[data-testid='incident-days']", "3")
    page.fill("[data-testid='incident-note']", "e2e: planned work")
    page.click("[data-testid='incident-mark']")
    result = page.locator("[data-testid='incident-feedback-result'][data-outcome='accepted'][data-status='202']")
    result.wait_for()
    assert "Accepted (202)" in result.inner_text() and target["meter_id"] in result.inner_text()
    page.screenshot(path=artifacts / "05e-incident-marked.png", full_page=True)
    worker.wait_for("wattsup_stream_feedback_marks_applied_total", applied + 1, timeout=60)
    marks = [m for m in read_marks(kafka.connection, topics, SingleObjectSerde()) if m.incident_id == target["incident_id"]]
    assert [(m.verdict, m.operator, m.note, m.close_incident) for m in marks] == [
        ("false_alarm", "e2e-browser", "e2e: planned work", True)]
    assert marks[0].expires_at == to_ms(target["last_seen"]) + 3 * 86_400_000

    # Without filters: every incident, open ones first, each row with the API's figures.
    for testid in ("incident-feeder", "incident-kind", "incident-state"):
        page.select_option(f"[data-testid='{testid}']", "")
    wait_until(page_lists, 15, lambda: f"incidents in the page differ from the API's {listed.get('total')}")
    states = rows.evaluate_all("rs => rs.map(r => r.dataset.state)")
    assert states == sorted(states, key=lambda s: s != "open"), "open incidents are not listed first"
    first = listed["items"][0]
    cells = rows.first.evaluate("r => [...r.cells].map(c => c.innerText)")
    assert cells[3:6] == [first["meter_id"], first["feeder_id"], first["kind"]] and cells[6] == first["peak_severity"]
    assert cells[7].startswith("+" if first["energy_delta_kwh"] > 0 else "−"), (cells, first)


def test_dashboard_page_against_the_running_pipeline(kafka, pipeline, browser, webhook, artifacts):
    topics, worker, dashboard = pipeline
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme="light",
                                  accept_downloads=True, timezone_id="UTC")
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(("data:", "blob:", dashboard.url))
            else outside.append(request.url))

    # 1. The page opens on an empty fleet: nothing to show yet, the live connection is open.
    page.goto(dashboard.url + "/")
    page.wait_for_selector("body[data-ready='true']")
    page.wait_for_selector("[data-testid='connection-state'][data-state='open']")
    assert page.locator("[data-testid='anomaly-row']").count() == 0
    page.screenshot(path=artifacts / "01-empty.png", full_page=True)

    # Sign in with the API token (the writing controls need it) and add an alert rule in the page,
    # sending every anomaly to a webhook this test receives.
    page.fill("[data-testid='token-input']", dashboard.token)
    page.click("[data-testid='signin-button']")
    page.wait_for_selector("[data-testid='signed-in']:not([hidden])")
    assert page.inner_text("[data-testid='signed-in-name']") == "e2e-browser"
    page.locator(".alerts-card details summary").click()
    form = page.locator("[data-testid='alert-rule-form']")
    form.locator("input[name='name']").fill("all anomalies")
    form.locator("select[name='min_severity']").select_option("INFO")
    form.locator("input[name='webhook_url']").fill(webhook.url)
    form.locator("button[type='submit']").click()
    page.wait_for_selector("[data-testid='alert-rule']")
    assert [r["name"] for r in dashboard.get("/api/v1/alert-rules")["items"]] == ["all anomalies"]

    # 2. Produce a small simulated fleet with labelled anomalies while the page is open.
    fleet = simulate_fleet(FleetConfig(meters=60, days=HISTORY_DAYS + 2, interval=timedelta(hours=1), seed=5202,
                                       anomaly_rate=0.1))
    readings = fleet.readings
    cut = readings["timestamp"].min() + pd.Timedelta(days=HISTORY_DAYS) - pd.Timedelta(hours=1)
    history, recent = readings[readings["timestamp"] <= cut], readings[readings["timestamp"] > cut]
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(history, batch_by_feeder=True)

    # 3. Live anomalies appear in the table without a reload.
    rows = page.locator("[data-testid='anomaly-table'] [data-testid='anomaly-row']")
    try:
        rows.first.wait_for(timeout=120_000)
    finally:
        (artifacts / "console.log").write_text("\n".join(console + errors))
    page.screenshot(path=artifacts / "02-live-anomalies.png", full_page=True)

    # 4. ... and in red on the chart, which follows the meter of the newest anomaly until someone picks one.
    wait_until(lambda: chart_shows_own_anomalies(page), 60,
               lambda: f"no anomalies of the charted meter on the chart: {page.evaluate(CHART_STATE_JS)}")
    usage = page.evaluate(CHART_STATE_JS)
    assert usage["visible"] and usage["color"].lower() == ANOMALY_RED and usage["pointStyle"] == "triangle"

    # A forecast run (Prophet, 48 h ahead) while the page is open, then the next two days of readings:
    # the chart gets its forecast band, the stream scores the new readings against it.
    worker.wait_for("wattsup_stream_readings_processed_total", len(history), timeout=180)
    forecast = subprocess.run([sys.executable, "-m", "wattsup.cli", "forecast", "run", "--history", f"{HISTORY_DAYS}d",
                               "--horizon", "48h", "--workers", "1"], env=dashboard.env, capture_output=True, text=True,
                              timeout=300, cwd=PROJECT_ROOT)
    assert forecast.returncode == 0, forecast.stderr[-3000:]
    wait_until(lambda: dashboard.get(f"/api/v1/series?meter_id={readings['meter_id'].iloc[0]}")["forecast"], 30,
               "the dashboard never stored the forecasts")
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(recent, batch_by_feeder=True)

    # Everything produced is processed and stored before the rest compares page and API.
    worker.wait_for("wattsup_stream_readings_processed_total", len(readings), timeout=180)
    settled: list[int] = []

    def stored_total_is_stable() -> bool:
        settled.append(dashboard.get("/api/v1/anomalies?limit=1")["total"])
        return len(settled) >= 4 and len(set(settled[-4:])) == 1 and settled[-1] > 0
    wait_until(stored_total_is_stable, 60, lambda: f"anomaly total never settled: {settled[-10:]}")
    wait_until(lambda: chart_shows_own_anomalies(page), 30, lambda: f"chart: {page.evaluate(CHART_STATE_JS)}")
    # Live mode refreshes the charted series as new data arrives: the forecast band appears.
    wait_until(lambda: page.evaluate(CHART_STATE_JS)["band"] > 0, 30,
               lambda: f"no forecast band on the chart: {page.evaluate(CHART_STATE_JS)}")
    api_anomalies = all_api_anomalies(dashboard)
    by_id = {str(a["id"]): a for a in api_anomalies}
    received = page.evaluate("() => wattsupState.received")
    assert received["anomaly"] >= len(api_anomalies), (received, len(api_anomalies))  # all of them came live
    wait_until(lambda: f"· {len(api_anomalies):,}" in page.inner_text("[data-testid='anomaly-total']")
               or f"of {len(api_anomalies):,}" in page.inner_text("[data-testid='anomaly-total']"), 20,
               lambda: f"table total {page.inner_text('[data-testid=anomaly-total]')!r}, API {len(api_anomalies)}")
    # Newest first, exactly as the API orders them.
    shown = rows.evaluate_all("rs => rs.map(r => r.dataset.key)")
    assert shown == [str(a["id"]) for a in api_anomalies[:len(shown)]]
    # The expected column shows the forecast's value, or else the usual one, tagged so it is not read as a forecast.
    assert all(a["baseline"] is not None for a in api_anomalies), "a version 2 anomaly without its baseline"
    cells = rows.evaluate_all(EXPECTED_CELLS_JS)
    for key, cell in zip(shown, cells):
        a = by_id[key]
        assert cell["source"] == ("forecast" if a["expected"] is not None else "usual"), (a, cell)
        assert cell["tagged"] == (a["expected"] is None) and ("no forecast" in cell["title"]) == (a["expected"] is None)
    # Nobody has picked a meter: the chart has moved on to the meter of the newest anomaly.
    wait_until(lambda: page.evaluate(CHART_STATE_JS)["key"] == f"meter:{api_anomalies[0]['meter_id']}"
               and chart_shows_own_anomalies(page), 20,
               lambda: f"chart did not follow the newest anomaly {api_anomalies[0]}: {page.evaluate(CHART_STATE_JS)}")
    # Pick the newest anomaly's meter: live mode keeps its newest reading in view, at the right edge.
    page.select_option("[data-testid='key-select']", f"meter:{api_anomalies[0]['meter_id']}")
    live: dict = {}

    def live_view_is_current() -> bool:
        live.update(page.evaluate(LIVE_STATE_JS))
        newest = dashboard.get(f"/api/v1/series?meter_id={live['meter']}")["readings"][-1]["timestamp"]
        live["newest"] = pd.Timestamp(newest).value // 10**6
        return live["last"] == live["newest"] and live["min"] < live["last"] <= live["max"]
    wait_until(live_view_is_current, 30, lambda: f"live view is not at the newest reading: {live}")
    page.screenshot(path=artifacts / "03-stream-done.png", full_page=True)

    # The rule made in the page alerted: the webhook got the incidents' events (the default: one alarm per
    # event, never one per reading), the page shows the history.
    wait_until(lambda: webhook.received, 30, "the alert webhook received nothing")
    alert_rows = page.locator("[data-testid='alert-history'] [data-testid='alert-row']")
    wait_until(lambda: alert_rows.count() > 0, 40, "no alert history in the page")
    history: list[dict] = []

    def page_shows_alert_history() -> bool:
        history[:] = dashboard.get("/api/v1/alerts?limit=50")["items"]
        shown = alert_rows.evaluate_all("rs => rs.map(r => [...r.cells].map(c => c.innerText))")
        return [(row[1], row[2], row[3], row[4], row[5]) for row in shown] == [
            (a["rule_name"], a["meter_id"], f"incident {a['incident_event']}", a["channel"], a["status"])
            for a in history]
    wait_until(page_shows_alert_history, 45, lambda: f"alert history in the page differs from the API's {history[:3]}")
    assert {a["status"] for a in history} <= {"sent", "suppressed"} and any(a["status"] == "sent" for a in history)
    assert all(body["rule"]["name"] == "all anomalies" for body in webhook.received)
    events = [(body["incident"]["incident_id"], body["event"]) for body in webhook.received]
    assert all(event in ("opened", "closed") or event.startswith("escalated:") for _, event in events), events
    assert len(events) == len(set(events)), "an incident event was alerted twice"
    assert all(a["anomaly_id"] is None for a in history)

    check_incidents_view_detail_and_marking(page, kafka, topics, worker, dashboard, artifacts)

    # The show-anomalies toggle hides and shows the red points.
    page.locator("[data-testid='anomaly-toggle']").uncheck()
    assert page.evaluate(ANOMALY_DATASET_JS, "usage")["visible"] is False
    page.locator("[data-testid='anomaly-toggle']").check()
    assert page.evaluate(ANOMALY_DATASET_JS, "usage")["visible"] is True

    # 5. Hover a row: its tooltip gives the causes in plain words.
    row = rows.nth(2)
    anomaly = by_id[row.get_attribute("data-key")]
    row.hover()
    tooltip = page.locator("[data-testid='anomaly-tooltip']")
    tooltip.wait_for(state="visible")
    text = tooltip.inner_text()
    assert anomaly["causes"] and all(cause["text"] in text for cause in anomaly["causes"]), (text, anomaly["causes"])
    assert anomaly["meter_id"] in text
    assert "usual for this hour" in text and ("expected (forecast)" in text) == (anomaly["expected"] is not None), text
    page.screenshot(path=artifacts / "04-row-tooltip.png")

    # Click the row: the chart shows that meter, zoomed around the anomaly, its point enlarged.
    row.click()
    meter_id = anomaly["meter_id"]
    wait_until(lambda: page.locator("[data-testid='key-select']").input_value() == f"meter:{meter_id}", 10,
               "the row click did not select its meter")
    wait_until(lambda: any(p["focused"] and p["timestamp"] == anomaly["timestamp"]
                           for p in page.evaluate(ANOMALY_DATASET_JS, "usage")["points"]), 10,
               lambda: f"focused point missing: {page.evaluate(ANOMALY_DATASET_JS, 'usage')}")
    x_range = page.evaluate("() => [wattsupCharts.usage.scales.x.min, wattsupCharts.usage.scales.x.max]")
    at = page.evaluate("(iso) => new Date(iso).getTime()", anomaly["timestamp"])
    assert x_range[0] < at < x_range[1] and x_range[1] - x_range[0] <= 25 * 3600e3, x_range
    page.screenshot(path=artifacts / "05-row-focused.png", full_page=True)

    # A feeder: the sum of its meters, its meters' anomalies drawn on that line.
    feeder_id = anomaly["feeder_id"]
    page.select_option("[data-testid='key-select']", f"feeder:{feeder_id}")
    feeder_meters = {a["meter_id"] for a in api_anomalies if a["feeder_id"] == feeder_id}

    def feeder_charted() -> bool:
        state = page.evaluate(FEEDER_STATE_JS)
        return f"feeder {feeder_id}" in page.inner_text("[data-testid='chart-key']") and state["readings"] > 0 and state["anomalies"] > 0 and set(state["meters"]) <= feeder_meters
    wait_until(feeder_charted, 15, lambda: f"feeder chart: {page.evaluate(FEEDER_STATE_JS)}")
    feeder_state = page.evaluate(FEEDER_STATE_JS)
    assert feeder_state["pinned"], "feeder anomalies are not drawn on the feeder's line"
    page.screenshot(path=artifacts / "05b-feeder.png", full_page=True)

    # Filters: a date range and severities narrow the table to what the API returns for them.
    page.locator("[data-testid='table-scope']").check()
    since, until = (pd.Timestamp(anomaly["timestamp"]) + pd.Timedelta(hours=h) for h in (-24, 24))
    page.fill("[data-testid='since-input']", since.strftime("%Y-%m-%dT%H:%M"))
    page.fill("[data-testid='until-input']", until.strftime("%Y-%m-%dT%H:%M"))
    expected = dashboard.get(f"/api/v1/anomalies?feeder_id={feeder_id}&since={since:%Y-%m-%dT%H:%M:%SZ}"
                             f"&until={until:%Y-%m-%dT%H:%M:%SZ}&limit=1000")
    wait_until(lambda: rows.evaluate_all("rs => rs.map(r => r.dataset.key)") == [str(a["id"]) for a in expected["items"][:100]],
               15, lambda: f"filtered table {rows.count()} rows, API {expected['total']}")
    assert "since=" in page.get_attribute("[data-testid='download-csv']", "href")
    page.locator("[data-testid='severity-filter'] input[value='INFO']").uncheck()
    wait_until(lambda: all(sev != "INFO" for sev in rows.evaluate_all("rs => rs.map(r => r.dataset.severity)"))
               and rows.count() == sum(a["severity"] != "INFO" for a in expected["items"]), 15,
               "the severity filter did not narrow the table")
    assert all(p["anomaly"]["severity"] != "INFO" for p in page.evaluate(
        "() => wattsupCharts.usage.data.datasets[4].data.map((p) => ({anomaly: {severity: p.anomaly.severity}}))"))
    page.screenshot(path=artifacts / "05c-filtered.png", full_page=True)
    page.locator("[data-testid='severity-filter'] input[value='INFO']").check()
    page.click("[data-testid='clear-dates']")
    page.locator("[data-testid='table-scope']").uncheck()
    wait_until(lambda: rows.count() == min(100, len(api_anomalies)), 15, "filters did not clear")

    # 6. Upload a CSV with a known 10x spike: it is flagged.
    page.set_input_files("[data-testid='upload-input']", str(UPLOAD_CSV))
    upload_rows = page.locator("[data-testid='upload-table'] [data-testid='anomaly-row']")
    upload_rows.first.wait_for(timeout=60_000)
    flagged = upload_rows.evaluate_all("rs => rs.map(r => [r.dataset.meter, r.dataset.timestamp])")
    assert list(UPLOAD_SPIKE) in flagged, flagged
    # A file has no forecast: every expected cell is the usual value, marked as such, and so is the chart's line.
    upload_cells = upload_rows.evaluate_all(EXPECTED_CELLS_JS)
    assert all(c["source"] == "usual" and c["tagged"] and "no forecast" in c["title"] for c in upload_cells), upload_cells
    spike_row = page.locator(f"[data-testid='upload-table'] [data-testid='anomaly-row'][data-meter='{UPLOAD_SPIKE[0]}']"
                             f"[data-timestamp='{UPLOAD_SPIKE[1]}']")
    spike_row.click()
    assert page.locator("[data-testid='upload-key']").input_value() == UPLOAD_SPIKE[0]
    upload_chart = page.evaluate(ANOMALY_DATASET_JS, "upload")
    assert upload_chart["color"].lower() == ANOMALY_RED
    assert any(p["timestamp"] == UPLOAD_SPIKE[1] and p["focused"] for p in upload_chart["points"]), upload_chart
    upload_line = page.evaluate(LINE_DATASET_JS, "upload")
    assert upload_line["label"] == "Usual usage" and upload_line["points"] > 0, upload_line
    page.locator("[data-testid='upload-result']").scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "06-upload-flagged.png", full_page=True)
    with page.expect_download() as result_download:
        page.click("[data-testid='upload-download']")
    result_rows = list(csv.DictReader(io.StringIO(Path(result_download.value.path()).read_text())))
    assert len(result_rows) == sum(1 for _ in UPLOAD_CSV.open()) - 1
    spike = [r for r in result_rows if (r["meter_id"], r["timestamp"]) == UPLOAD_SPIKE]
    assert len(spike) == 1 and spike[0]["flag"] == "1" and spike[0]["causes"], spike
    assert "expected" not in result_rows[0] and 0 < float(spike[0]["baseline"]) < float(spike[0]["kwh"]), spike

    # Sensitivity, fleet-wide and per meter, through the page (the service publishes it to the control topic).
    page.fill("[data-testid='fleet-sensitivity']", "1.5")
    page.locator("[data-testid='fleet-sensitivity-form'] button").click()
    wait_until(lambda: dashboard.get("/api/v1/sensitivity")["fleet"] == 1.5, 10,
               lambda: f"fleet sensitivity not applied: {dashboard.get('/api/v1/sensitivity')}")
    page.fill("[data-testid='meter-sensitivity-meter']", meter_id)
    page.fill("[data-testid='meter-sensitivity']", "3")
    page.locator("[data-testid='meter-sensitivity-form'] button").click()
    page.wait_for_selector(f"[data-testid='sensitivity-overrides'] li[data-meter='{meter_id}']")
    assert dashboard.get("/api/v1/sensitivity")["meters"] == {meter_id: 3.0}

    # The page's settings reach the control topic every stream worker follows.
    watcher = SensitivityWatcher(kafka.connection, topics, poll_seconds=0.2)
    watcher.start()
    try:
        wait_until(lambda: watcher.fleet == 1.5 and watcher.for_meter(meter_id) == 3.0, 20,
                   lambda: f"control topic: fleet {watcher.fleet}, meters {watcher.per_meter}")
    finally:
        watcher.stop()

    # A second alert rule, with scope and quiet hours, is listed by the API and deleted again.
    form.locator("input[name='name']").fill("night crew")
    form.locator("select[name='min_severity']").select_option("CRITICAL")
    form.locator("input[name='feeder_id']").fill(anomaly["feeder_id"])
    form.locator("input[name='quiet_start']").fill("22:00")
    form.locator("input[name='quiet_end']").fill("06:00")
    form.locator("input[name='webhook_url']").fill("http://127.0.0.1:9/hook")
    form.locator("button[type='submit']").click()
    night_crew = page.locator("[data-testid='alert-rule']", has_text="night crew")
    night_crew.wait_for()
    rules = {r["name"]: r for r in dashboard.get("/api/v1/alert-rules")["items"]}
    assert sorted(rules) == ["all anomalies", "night crew"]
    assert (rules["night crew"]["min_severity"], rules["night crew"]["feeder_id"], rules["night crew"]["quiet_hours"]) == (
        "CRITICAL", anomaly["feeder_id"], {"start": "22:00", "end": "06:00"})
    page.locator(".thresholds-card").scroll_into_view_if_needed()
    page.screenshot(path=artifacts / "07-controls.png", full_page=True)
    night_crew.locator("button").click()
    night_crew.wait_for(state="detached")
    assert [r["name"] for r in dashboard.get("/api/v1/alert-rules")["items"]] == ["all anomalies"]

    # 7. Download the anomalies CSV export: its header and rows are the API's anomalies.
    with page.expect_download() as csv_download:
        page.click("[data-testid='download-csv']")
    assert csv_download.value.suggested_filename == "anomalies.csv"
    exported_text = Path(csv_download.value.path()).read_text()
    (artifacts / "anomalies.csv").write_text(exported_text)
    reader = csv.DictReader(io.StringIO(exported_text))
    assert reader.fieldnames == CSV_COLUMNS
    exported = list(reader)
    assert len(exported) == len(api_anomalies)
    for line, item in zip(exported, api_anomalies):
        assert (line["timestamp"], line["meter_id"], line["feeder_id"], line["severity"]) == (
            item["timestamp"], item["meter_id"], item["feeder_id"], item["severity"])
        assert line["causes"] == "; ".join(c["text"] for c in item["causes"])
        assert float(line["observed"]) == pytest.approx(item["observed"])

    # PDF report and chart PNG download too.
    with page.expect_download(timeout=60_000) as pdf_download:
        page.click("[data-testid='download-pdf']")
    pdf = Path(pdf_download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF") and b"/Subtype /Image" in pdf, "no chart image in the PDF"
    # jsPDF writes text uncompressed: the title, the summary and the table's rows are in the file as text.
    assert b"WattsUp anomaly report" in pdf and b"Fleet: 60 meters" in pdf
    assert api_anomalies[0]["meter_id"].encode() in pdf
    (artifacts / "report.pdf").write_bytes(pdf)
    with page.expect_download() as png_download:
        page.click("[data-testid='download-png']")
    assert Path(png_download.value.path()).read_bytes().startswith(b"\x89PNG")

    # 8. Dark mode: the toggle switches the theme, and the choice survives a reload.
    assert page.get_attribute("html", "data-theme") == "light"
    page.click("[data-testid='theme-toggle']")
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.evaluate("() => localStorage.getItem('wattsup-theme')") == "dark"
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    assert page.get_attribute("html", "data-theme") == "dark"
    page.locator("[data-testid='anomaly-row']").first.wait_for()
    wait_until(lambda: bool(page.evaluate(ANOMALY_DATASET_JS, "usage")["points"]), 20, "no anomalies after reload")
    page.screenshot(path=artifacts / "08-dark.png", full_page=True)

    # A phone: one column, nothing wider than the screen.
    phone = context.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(dashboard.url + "/")
    phone.wait_for_selector("body[data-ready='true']")
    phone.locator("[data-testid='anomaly-row']").first.wait_for()
    wait_until(lambda: chart_shows_own_anomalies(phone), 20, "no anomalies on the phone's chart")
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=artifacts / "08-phone-dark.png", full_page=True)

    assert not errors, errors
    assert not outside, f"the page loaded something from outside the service: {outside}"
    context.close()

    # A first visit (nothing stored) follows the system's preference; a bad token is refused.
    first_visit = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = first_visit.new_page()
    page.goto(dashboard.url + "/")
    page.wait_for_selector("body[data-ready='true']")
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.evaluate("() => localStorage.getItem('wattsup-theme')") is None
    page.fill("[data-testid='token-input']", "not-a-token")
    page.click("[data-testid='signin-button']")
    notice = page.locator("[data-testid='notice']")
    notice.wait_for(state="visible")
    assert "not valid" in notice.inner_text()
    assert page.locator("[data-testid='signed-in']").is_hidden()
    page.screenshot(path=artifacts / "09-first-visit-dark-phone.png", full_page=True)
    first_visit.close()



def test_private_dashboard_asks_for_a_token_then_goes_live(kafka, browser, artifacts, tmp_path):
    """With WATTSUP_DASHBOARD_READ_PUBLIC=false the page says to sign in, then loads and connects."""
    topics = kafka.fresh_topics(partitions=1)
    with running_dashboard(kafka, topics, tmp_path, read_public="false", consume="false") as dashboard:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(dashboard.url + "/")
        notice = page.locator("[data-testid='notice']")
        notice.wait_for(state="visible")
        assert "needs an API token" in notice.inner_text()
        assert page.inner_text("[data-testid='summary-meters']") == "–"
        assert page.inner_text("[data-testid='anomaly-empty']") == "Sign in to see the anomalies."
        page.screenshot(path=artifacts / "10-private-signed-out.png")
        page.fill("[data-testid='token-input']", dashboard.token)
        page.click("[data-testid='signin-button']")
        page.wait_for_selector("[data-testid='connection-state'][data-state='open']")
        wait_until(lambda: page.inner_text("[data-testid='summary-meters']") == "0", 20, "the summary did not load")
        assert page.locator("[data-testid='anomaly-empty']").is_visible()
        # A file that is not a readings CSV: the page shows the service's reason.
        not_readings = tmp_path / "notes.csv"
        not_readings.write_text("name,colour\nkettle,blue\n")
        page.set_input_files("[data-testid='upload-input']", str(not_readings))
        wait_until(lambda: "Could not check notes.csv" in notice.inner_text(), 20, lambda: notice.inner_text())
        assert page.locator("[data-testid='upload-result']").is_hidden()
        page.screenshot(path=artifacts / "11-private-signed-in.png")
        assert not errors, errors
        context.close()
