"""The page under attack, in Debian's headless Chromium (Playwright, never a downloaded browser), no broker:
a meter id that is HTML must show as text and run nothing, and the Content-Security-Policy must let the
page work while refusing injected script."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import uvicorn

from dashboard.app import create_app
from dashboard.store import IngestBatch, incident_row, store_batch
from deploy.kafka.launcher import free_port
from foundation.kafka_settings import KafkaConnection
from tests.dashboard.conftest import anomaly_record, reading_row
from tests.dashboard.incident_records import incident
from tests.waiting import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
XSS = '"><img src=x onerror=alert(document.domain)>'
EXAMPLE = Path(__file__).resolve().parents[2] / "dashboard" / "example_readings.csv"

sync_api = pytest.importorskip("playwright.sync_api")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (make test installs Debian's chromium)", allow_module_level=True)

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(`${e.effectiveDirective} ${e.blockedURI}`));
"""


@pytest.fixture
def served(dashboard_factory) -> Iterator[tuple[str, object]]:
    """The dashboard on a real port (its database shared with the harness, which stores the records)."""
    # No broker at its Kafka address (and a short wait for one): a write that needs Kafka fails fast, as it
    # must be shown when the broker is down.
    harness = dashboard_factory(ingest_ack_timeout_seconds=1,
                                kafka=KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    app = create_app(harness.settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="uvicorn start")
    yield f"http://127.0.0.1:{port}", harness
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def page(tmp_path):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            context.add_init_script(RECORD_VIOLATIONS)
            yield context.new_page()
        finally:
            browser.close()


def test_a_meter_id_made_of_html_is_shown_as_text_and_runs_nothing(served, page, tmp_path):
    base, dash = served
    now = int(datetime.now(timezone.utc).timestamp() * 1000) // 900_000 * 900_000
    dash.store(readings=[reading_row(XSS, now - i * 900_000, 1.0, feeder=XSS) for i in range(8)],
               anomalies=[anomaly_record(XSS, now - 900_000, "CRITICAL", feeder=XSS, kind="spike",
                                         causes=[{"feature": "ratio", "contribution": 1.0, "text": XSS}])])
    hostile_incident = {**incident("inc-" + "e" * 20, meter=XSS, feeder=XSS, kind="spike", severity="CRITICAL"),
                        "started": now - 900_000, "last_seen": now - 900_000, "worst_timestamp": now - 900_000,
                        "causes": [{"feature": "ratio", "contribution": 1.0, "text": XSS}]}
    with dash.service.sessions.begin() as session:
        store_batch(session, IngestBatch(incidents=[incident_row(hostile_incident)]))
    assert dash.client.post("/api/v1/alert-rules", headers=dash.auth,
                            json={"name": XSS, "meter_id": XSS, "email_to": "ops@example.org"}).status_code == 201
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(base + "/")
    page.wait_for_selector("body[data-ready='true']")
    page.fill("[data-testid='token-input']", dash.token)
    page.click("[data-testid='signin-button']")
    page.wait_for_selector("[data-testid='signed-in']:not([hidden])")
    row = page.locator("[data-testid='anomaly-row']").first
    row.wait_for()
    assert row.get_attribute("data-meter") == XSS and XSS in row.inner_text()
    row.hover()
    assert XSS in page.inner_text("[data-testid='anomaly-tooltip']")
    wait_until(lambda: XSS in page.inner_text("[data-testid='key-select']"), 10, what="the meter in the chart's select")
    assert page.eval_on_selector("#meter-list", "d => [...d.options].map((o) => o.value)") == [XSS]
    page.locator("[data-testid='alert-rule']").first.wait_for()
    assert XSS in page.inner_text("[data-testid='alert-rule']")

    # The incident of that meter: its row, its detail (title, causes, chart) show the markup as text ...
    incident_row_ = page.locator("[data-testid='incident-row']").first
    assert incident_row_.get_attribute("data-meter") == XSS and XSS in incident_row_.inner_text()
    assert XSS in page.inner_text("[data-testid='incident-feeder']")
    incident_row_.click()
    page.wait_for_selector("[data-testid='incident-detail'][data-loaded]")
    assert XSS in page.inner_text("[data-testid='incident-title']") and XSS in page.inner_text("[data-testid='incident-causes']")
    assert page.evaluate("() => wattsupCharts.incident.data.datasets[4].data.length") == 1
    # ... and marking it while the broker is down says so, with the service's reason and status.
    page.click("[data-testid='incident-mark']")
    failed = page.locator("[data-testid='incident-feedback-result'][data-outcome='error']")
    failed.wait_for(timeout=20_000)
    assert "Not sent" in failed.inner_text() and "HTTP 503" in failed.inner_text() and "retry" in failed.inner_text()

    # An upload whose meter id is the same markup (quoted in the CSV, as a spreadsheet writes it).
    quoted = '"' + XSS.replace('"', '""') + '"'
    upload = tmp_path / "fleet.csv"
    upload.write_text(EXAMPLE.read_text().replace("M0001", quoted))
    page.set_input_files("[data-testid='upload-input']", str(upload))
    page.wait_for_selector("[data-testid='upload-result']:not([hidden])", timeout=60_000)
    assert any(XSS in text for text in page.locator("[data-testid='upload-key'] option").all_inner_texts())

    assert page.locator("img").count() == 0, "markup from data became an element"
    assert dialogs == [] and errors == []
    # The page did all that without tripping its own policy (no inline script or style, no foreign fetch)...
    assert page.evaluate("window.__violations") == []
    with page.expect_download() as png:
        page.click("[data-testid='download-png']")
    assert Path(png.value.path()).read_bytes().startswith(b"\x89PNG")
    # ... and the policy stops markup that does get in: an injected handler never runs.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.__ran = 1\">')")
    wait_until(lambda: page.evaluate("window.__violations").__len__() > 0, 10, what="a CSP violation")
    assert page.evaluate("window.__ran") is None
    assert any(v.startswith("script-src") for v in page.evaluate("window.__violations"))
