"""Issue 13 findings on the API (no broker): each test reproduces one finding and checks the fix."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dashboard.store import prune_readings
from schemas.limits import FUTURE_TOLERANCE
from tests.dashboard.conftest import reading_row
from tests.waiting import wait_until
from tests.webhook_receiver import WebhookReceiver

MINUTE = 60_000


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- 1. timestamps ----------------------------------------------------------------------------
@pytest.mark.parametrize("timestamp", ["9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z",
                                       1, 1795000000, "1795000000", 1.5, "2126-01-01T00:00:00Z"])
def test_readings_outside_the_sane_time_window_are_rejected(timestamp):
    from dashboard.api_write import validate_readings

    valid, rejected, _ = validate_readings([{"meter_id": "M1", "timestamp": timestamp, "kwh": 1.0}])
    assert valid == [] and [e["field"] for e in rejected[0]["errors"]] == ["timestamp"], rejected


def test_readings_inside_the_window_are_accepted():
    from dashboard.api_write import validate_readings

    now = datetime.now(timezone.utc)
    stamps = ["2000-01-01T00:00:00Z", _iso(now), _iso(now + FUTURE_TOLERANCE - timedelta(minutes=5)),
              (now + timedelta(hours=2)).astimezone(timezone(timedelta(hours=5))).isoformat()]
    valid, rejected, _ = validate_readings([{"meter_id": "M1", "timestamp": t, "kwh": 1.0} for t in stamps])
    assert rejected == [] and len(valid) == len(stamps)


def test_negative_energy_is_accepted_and_non_finite_energy_refused():
    """Net meters of solar prosumers read below zero while they export; NaN and infinity are no reading."""
    from dashboard.api_write import validate_readings

    at = _iso(datetime.now(timezone.utc))
    valid, rejected, _ = validate_readings([{"meter_id": "PV-1", "timestamp": at, "kwh": -0.85},
                                           {"meter_id": "PV-2", "timestamp": at, "kwh": "NaN"},
                                           {"meter_id": "PV-3", "timestamp": at, "kwh": "-Infinity"}])
    assert [(v.meter_id, v.record()["energy_kwh"]) for v in valid] == [("PV-1", -0.85)]
    assert [(r["index"], [e["field"] for e in r["errors"]]) for r in rejected] == [(1, ["kwh"]), (2, ["kwh"])]


def test_one_reading_far_in_the_future_does_not_prune_stored_readings(dash):
    """The issue's reproduction: 1,440 readings, then one at 2126-01-01 (as a bad clock could deliver it
    through Kafka before this fix), then the ingest's prune: every one of the 1,440 is still served."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = int(now.timestamp() * 1000) - 1440 * MINUTE
    dash.store(readings=[reading_row("M1", start + i * MINUTE, 1.0) for i in range(1440)])
    future = int(datetime(2126, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    dash.store(readings=[reading_row("CLOCK", future, 1.0)])
    with dash.service.sessions.begin() as session:
        removed = prune_readings(session, int(dash.settings.readings_retention_days * 86_400_000))
    assert removed == 0
    assert len(dash.client.get("/api/v1/series", params={"meter_id": "M1"}).json()["readings"]) == 1440


# -- 2. security headers ------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [("get", "/"), ("get", "/api/v1/summary"), ("get", "/healthz"),
                                         ("get", "/api/v1/nope"), ("get", "/api/v1/openapi.json"),
                                         ("post", "/api/v1/alert-rules"), ("get", "/app.js")])
def test_every_response_carries_a_strict_content_security_policy(dash, method, path):
    headers = getattr(dash.client, method)(path).headers
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert "strict-transport-security" not in headers  # plain HTTP: no HSTS


def test_api_docs_admit_only_their_own_inline_script(dash):
    response = dash.client.get("/api/v1/docs")
    assert response.status_code == 200 and "swagger-ui" in response.text
    policy = response.headers["content-security-policy"]
    assert "'sha256-" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy


# -- 4. cross-site requests, content types and the session cookie ------------------------------
def _signed_in(dash):
    assert dash.client.post("/api/v1/session", json={"token": dash.token}).status_code == 200
    return dash


RULE = {"name": "r", "email_to": "ops@example.org"}


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Referer": "https://evil.example/page"},
                                     {"Origin": "null"}, {}, {"Origin": "http://testserver.evil.example"}])
def test_cookie_writes_from_another_site_or_nowhere_are_403(dash, headers):
    _signed_in(dash)
    response = dash.client.post("/api/v1/alert-rules", json=RULE, headers=headers)
    assert response.status_code == 403 and "cross-site" in response.json()["detail"]
    assert dash.client.get("/api/v1/alert-rules").json()["items"] == []


@pytest.mark.parametrize("headers", [{"Origin": "http://testserver"}, {"Referer": "http://testserver/"},
                                     {"Origin": "http://TESTSERVER:80"}])
def test_cookie_writes_from_the_page_itself_are_allowed(dash, headers):
    _signed_in(dash)
    assert dash.client.post("/api/v1/alert-rules", json=RULE, headers=headers).status_code == 201


def test_bearer_writes_need_no_origin_but_a_foreign_one_is_refused(dash):
    assert dash.client.post("/api/v1/alert-rules", json=RULE, headers=dash.auth).status_code == 201
    refused = dash.client.post("/api/v1/alert-rules", json=RULE, headers={**dash.auth, "Origin": "https://evil.example"})
    assert refused.status_code == 403


def test_an_extra_allowed_origin_may_write(dashboard_factory):
    dash = _signed_in(dashboard_factory(allowed_origins="https://dash.example.org"))
    headers = {"Origin": "https://dash.example.org"}
    assert dash.client.post("/api/v1/alert-rules", json=RULE, headers=headers).status_code == 201


@pytest.mark.parametrize("method,path,body", [
    ("post", "/api/v1/alert-rules", RULE), ("post", "/api/v1/readings", {"meter_id": "M1", "kwh": 1}),
    ("put", "/api/v1/sensitivity", {"value": 2}), ("post", "/api/v1/session", {"token": "x"}),
])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_endpoints_refuse_other_content_types_with_415(dash, method, path, body, content_type):
    import json

    headers = {**dash.auth, **({"Content-Type": content_type} if content_type else {})}
    response = dash.client.request(method.upper(), path, content=json.dumps(body).encode(), headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


def test_session_cookie_is_secure_over_tls_and_behind_a_trusted_proxy_only(dashboard_factory):
    from fastapi.testclient import TestClient

    def cookie(dash, base="http://testserver", **headers):
        client = TestClient(dash.client.app, base_url=base)  # the same app and service, another scheme
        response = client.post("/api/v1/session", json={"token": dash.token}, headers=headers)
        assert response.status_code == 200
        return response.headers["set-cookie"].lower()

    plain = dashboard_factory()
    assert "secure" not in cookie(plain)
    assert "; secure" in cookie(plain, "https://testserver")  # TLS straight to the service
    assert "secure" not in cookie(plain, **{"X-Forwarded-Proto": "https"})  # anyone can send that header
    proxied = dashboard_factory(trusted_proxies="testclient")
    behind = cookie(proxied, **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert "; secure" in behind and "httponly" in behind and "samesite=strict" in behind
    assert "; secure" in cookie(dashboard_factory(cookie_secure=True))
    tls = proxied.client.get("/healthz", headers={"X-Forwarded-Proto": "https"}).headers
    assert tls["strict-transport-security"].startswith("max-age=")


def test_small_writing_bodies_have_a_size_limit(dash):
    big = {"name": "x" * 100_000, "email_to": "ops@example.org"}
    response = dash.client.post("/api/v1/alert-rules", json=big, headers=dash.auth)
    assert response.status_code == 413 and "64 KB" in response.json()["detail"]


# -- 3. what anonymous readers see ----------------------------------------------------------------
def test_reads_are_public_on_loopback_only_unless_configured(dashboard_factory):
    assert dashboard_factory().client.get("/api/v1/summary").status_code == 200  # 127.0.0.1: the demo
    exposed = dashboard_factory(host="0.0.0.0")
    assert exposed.client.get("/api/v1/summary").status_code == 401
    assert exposed.client.get("/api/v1/session").json()["read_public"] is False
    assert dashboard_factory(host="127.0.0.1", trusted_proxies="127.0.0.1").client.get("/api/v1/summary").status_code == 401
    assert dashboard_factory(host="0.0.0.0", read_public=True).client.get("/api/v1/summary").status_code == 200


def test_alert_rules_and_history_need_sign_in_even_when_reads_are_public(dash):
    created = dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
        "name": "secret", "webhook_url": "https://hooks.example.org/T0?token=s3cr3t", "email_to": "ops@example.org"})
    assert created.status_code in (201, 422)
    for path in ("/api/v1/alert-rules", "/api/v1/alerts"):
        anonymous = dash.client.get(path)
        assert anonymous.status_code == 401 and "s3cr3t" not in anonymous.text and "ops@" not in anonymous.text
        assert dash.client.get(path, headers=dash.auth).status_code == 200


# -- 3. webhook destinations ------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/x", "http://169.254.169.254/latest/meta-data/",
                                 "http://[::1]/x", "http://10.0.0.7/x", "http://192.168.1.1/x", "http://0.0.0.0/x",
                                 "http://224.0.0.1/x", "http://[fe80::1]/x", "http://[::ffff:127.0.0.1]/x",
                                 "http://100.64.0.1/x", "http://localhost:9/x"])
def test_webhooks_to_internal_addresses_are_refused_by_default(dash, url):
    response = dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "r", "webhook_url": url})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "webhook_url"]
    assert dash.client.get("/api/v1/alert-rules", headers=dash.auth).json()["items"] == []


def test_webhooks_to_public_addresses_and_listed_destinations_are_allowed(dashboard_factory):
    public = dashboard_factory()
    ok = public.client.post("/api/v1/alert-rules", headers=public.auth,
                            json={"name": "r", "webhook_url": "https://93.184.216.34/hook?token=s"})
    assert ok.status_code == 201, ok.text
    listed = dashboard_factory(webhook_allowed_hosts="10.1.2.0/24, 127.0.0.1")
    for url, code in (("http://10.1.2.9:8080/x", 201), ("http://127.0.0.1:9/x", 201), ("http://10.1.3.9/x", 422),
                      ("https://93.184.216.34/x", 422)):  # a list allows only what it names
        response = listed.client.post("/api/v1/alert-rules", headers=listed.auth, json={"name": "r", "webhook_url": url})
        assert response.status_code == code, (url, response.text)


def test_dns_rebinding_is_caught_at_send_time_and_the_checked_address_is_used():
    from dashboard.webhooks import DestinationRefused, WebhookPolicy

    answers = iter([["93.184.216.34"], ["127.0.0.1"], ["93.184.216.34", "10.0.0.1"]])
    policy = WebhookPolicy([], resolve=lambda host, port: next(answers))
    first = policy.check("https://hooks.example.org:8443/in?token=t")  # at creation: a public address
    assert str(first.url) == "https://93.184.216.34:8443/in?token=t"
    assert first.headers == {"Host": "hooks.example.org:8443"} and first.extensions == {"sni_hostname": "hooks.example.org"}
    with pytest.raises(DestinationRefused, match="loopback"):
        policy.check("https://hooks.example.org:8443/in?token=t")  # later: rebound to loopback
    with pytest.raises(DestinationRefused, match="private"):
        policy.check("https://hooks.example.org/in")  # any one bad address refuses the lot
    named = WebhookPolicy(["*.corp.example"], resolve=lambda host, port: ["10.9.8.7"])
    assert str(named.check("http://alerts.corp.example/x").url) == "http://10.9.8.7/x"  # an internal receiver by name
    metadata = WebhookPolicy(["*.corp.example"], resolve=lambda host, port: ["169.254.169.254"])
    with pytest.raises(DestinationRefused, match="link-local"):
        metadata.check("http://alerts.corp.example/x")  # a listed name still never reaches the metadata service


class _Receiver(WebhookReceiver):
    """A local HTTP endpoint answering ``status``; keeps the raw bodies it gets."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.start()

    def keep(self, headers, body: bytes) -> None:
        self.received.append(body)


def test_a_rule_stored_before_the_check_is_refused_at_send_time_without_disclosure(dashboard_factory):
    from dashboard.models import AlertRule
    from tests.dashboard.conftest import T0, anomaly_record

    dash = dashboard_factory(alert_on="anomalies")
    receiver = _Receiver(200)
    try:
        with dash.service.sessions.begin() as session:  # as an older version stored it, unchecked
            session.add(AlertRule(name="old", min_severity="INFO", webhook_url=f"http://127.0.0.1:{receiver.port}/a",
                                  enabled=True, created_at_ms=T0))
        stored = dash.store(anomalies=[anomaly_record("M1", T0)])
        dash.service.alerts.submit(stored.anomalies)
        assert dash.service.alerts.wait_idle()
        assert receiver.received == []
        [alert] = dash.client.get("/api/v1/alerts", headers=dash.auth).json()["items"]
        assert alert["status"] in ("failed", "retrying") and "not allowed" in alert["detail"]
        assert str(receiver.port) not in alert["detail"] and "127.0.0.1" not in alert["detail"]
    finally:
        receiver.close()


def test_delivery_failures_are_stored_as_generic_text(dashboard_factory):
    from deploy.kafka.launcher import free_port
    from tests.dashboard.conftest import T0, anomaly_record

    dash = dashboard_factory(alert_on="anomalies", webhook_allowed_hosts="127.0.0.1", alert_delivery_attempts=1)
    broken = _Receiver(500)
    closed = free_port()
    try:
        for name, port in (("broken", broken.port), ("closed", closed)):
            assert dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
                "name": name, "min_severity": "INFO", "webhook_url": f"http://127.0.0.1:{port}/secret-path"}
            ).status_code == 201
        stored = dash.store(anomalies=[anomaly_record("M1", T0)])
        dash.service.alerts.submit(stored.anomalies)
        assert dash.service.alerts.wait_idle()
        details = {a["rule_name"]: a["detail"] for a in
                   dash.client.get("/api/v1/alerts", headers=dash.auth).json()["items"]}
        assert details == {"broken": "delivery failed (status 500)", "closed": "delivery failed: connection error"}
    finally:
        broken.close()


# -- 5. CSV injection ------------------------------------------------------------------------------
INJECTIONS = ["M7\r=cmd|' /C calc'!A0", "M8\n=HYPERLINK(\"http://evil\")", "  =1+2", "\t=1", "\r=1", " +SUM(A1)",
              "-2+3", "@SUM(A1)", "ok\r\n@x", "plain"]


def test_csv_export_neutralises_formulas_and_never_splits_a_row(dash):
    import csv
    import io

    from tests.dashboard.conftest import T0, anomaly_record

    dash.store(anomalies=[anomaly_record(text, T0 + i * 900_000, feeder=text, kind=text[:32],
                                         causes=[{"feature": "f", "contribution": 1.0, "text": text}])
                          for i, text in enumerate(INJECTIONS)])
    body = dash.client.get("/api/v1/anomalies.csv").content.decode()
    lines = body.splitlines()  # what a naive line-based reader sees: one line per row
    assert len(lines) == 1 + len(INJECTIONS), lines
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert len(rows) == len(INJECTIONS)
    for row in rows:
        for column in ("meter_id", "feeder_id", "kind", "causes"):
            cell = row[column]
            assert "\r" not in cell and "\n" not in cell
            assert not cell.lstrip(" \t")[:1] in ("=", "+", "-", "@"), (column, cell)
    assert {r["meter_id"] for r in rows} >= {"plain", "'-2+3", "'  =1+2"}
    assert float(rows[0]["residual"]) == 4.0  # numbers stay numbers


def test_the_pages_csv_writer_has_the_same_guard(tmp_path):
    """format.js ``toCsv`` (the upload result download) run by node's own test runner."""
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (make dashboard-assets needs it too)")
    script = Path(__file__).with_name("js") / "format.test.mjs"
    result = subprocess.run([node, "--test", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "# pass 3" in result.stdout and "# fail 0" in result.stdout


# -- 6. bad uploads are a clear 4xx, fast ------------------------------------------------------------
def _upload(dash, data: bytes, name: str = "u.csv"):
    return dash.client.post("/api/v1/detect", headers=dash.auth, files={"file": (name, data, "text/csv")})


@pytest.mark.parametrize("rows", [
    ["2026-10-01T00:00:00Z,M1,1.0"],
    ["2026-10-01T00:00:00Z,M1,1.0", "2026-10-01T00:15:00Z,M1,1.2"],
    [f"2026-10-01T{h:02d}:00:00Z,M1,0" for h in range(24)],
])
def test_too_little_data_to_learn_from_without_a_model_is_422(dash, rows):
    response = _upload(dash, ("timestamp,meter_id,kwh\n" + "\n".join(rows) + "\n").encode())
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    assert "3 days" in detail and "Traceback" not in detail


def test_a_header_field_over_the_csv_field_limit_is_400(dash):
    response = _upload(dash, b"timestamp" + b"x" * 131_073 + b",meter_id,kwh\n2026-10-01T00:00:00Z,M1,1\n")
    assert response.status_code == 400 and "header" in response.json()["detail"]


@pytest.mark.timing
def test_a_header_of_200000_columns_is_refused_fast(dash):
    import time

    data = (",".join(f"c{i}" for i in range(200_000)) + "\n").encode()
    started = time.perf_counter()
    response = _upload(dash, data)
    assert response.status_code == 400 and "columns" in response.json()["detail"]
    assert time.perf_counter() - started < 2


def test_an_upload_names_ids_over_the_limit_and_a_bad_file_name(dash):
    text = "timestamp,meter_id,kwh\n" + "".join(f"2026-10-01T{h:02d}:00:00Z,{'M' * 200},1\n" for h in range(3))
    response = _upload(dash, text.encode())
    assert response.status_code == 400 and "characters long" in response.text
    single = _upload(dash, b"timestamp,consumption\n2026-10-01T00:00:00Z,1\n", name="x" * 200 + ".csv")
    assert single.status_code == 400 and "meter id" in single.json()["detail"]


# -- 7. hostile JSON and a broker outage -------------------------------------------------------------
@pytest.mark.parametrize("body", [b"[" * 200_000, b'[{"meter_id": ' + b"[" * 900 + b"]" * 900 + b"}]",
                                  b'{"a": ' * 5000 + b"1" + b"}" * 5000])
def test_deeply_nested_json_is_400_not_a_recursion_error(dash, body):
    response = dash.client.post("/api/v1/readings", headers={**dash.auth, "Content-Type": "application/json"},
                                content=body)
    assert response.status_code == 400, response.text[:300]
    assert "nested" in response.json()["detail"]


def test_brackets_inside_strings_do_not_count_as_nesting(dash):
    from dashboard.api_write import json_depth

    assert json_depth(b'[{"meter_id": "[[[[[[[[[[[[", "x": "\\\\\\"[[[["}]') == 2
    assert json_depth(b'{"a": [1, {"b": [2]}]}') == 4


@pytest.fixture
def outage(dashboard_factory):
    """A dashboard whose broker address has nothing listening (an outage from the start)."""
    import threading

    import uvicorn

    from dashboard.app import create_app
    from deploy.kafka.launcher import free_port
    from foundation.kafka_settings import KafkaConnection

    harness = dashboard_factory(kafka=KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}"),
                                ingest_ack_timeout_seconds=3.0)
    app = create_app(harness.settings)  # served for real, on the harness's database (and token)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="uvicorn start")
    yield f"http://127.0.0.1:{port}", harness.auth
    server.should_exit = True
    thread.join(30)


@pytest.mark.timing
def test_during_an_outage_invalid_only_batches_are_422_at_once_and_valid_ones_503_in_bounded_time(outage):
    import time

    import httpx

    base, auth = outage
    started = time.perf_counter()
    invalid = httpx.post(f"{base}/api/v1/readings", headers=auth, json=[{"meter_id": "X"}, {"kwh": -1}], timeout=30)
    assert invalid.status_code == 422 and time.perf_counter() - started < 1.5, (invalid.text, time.perf_counter() - started)
    started = time.perf_counter()
    valid = httpx.post(f"{base}/api/v1/readings", headers=auth, timeout=30,
                       json={"meter_id": "M1", "timestamp": _iso(datetime.now(timezone.utc)), "kwh": 1.0})
    took = time.perf_counter() - started
    assert valid.status_code == 503 and int(valid.headers["retry-after"]) >= 1 and took < 6, (valid.text, took)


def _awaiting(base: str) -> float:
    import httpx

    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith("wattsup_dashboard_readings_awaiting_ack "):
            return float(line.split()[-1])
    return -1.0


@pytest.mark.timing
def test_concurrent_posts_during_an_outage_do_not_slow_other_requests(outage):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    base, auth = outage
    body = [{"meter_id": f"M{i}", "timestamp": _iso(datetime.now(timezone.utc)), "kwh": 1.0} for i in range(20)]

    def post(_):
        return httpx.post(f"{base}/api/v1/readings", headers=auth, json=body, timeout=60).status_code

    with ThreadPoolExecutor(45) as pool:
        futures = [pool.submit(post, i) for i in range(45)]
        wait_until(lambda: _awaiting(base) == 45 * 20, timeout=10, what="all 45 POSTs waiting for the broker")
        started = time.perf_counter()
        summary = httpx.get(f"{base}/api/v1/summary", timeout=10)
        took = time.perf_counter() - started
        codes = [f.result(timeout=60) for f in futures]
    assert summary.status_code == 200 and took < 1.0, took
    assert codes == [503] * 45


# -- 8. duplicates and corrections ---------------------------------------------------------------------
def test_duplicates_in_a_post_and_corrections_of_stored_readings_are_reported(dash):
    """Checked before anything is produced: exact repeats are dropped and listed, a conflicting repeat in
    the same body is rejected (the first is kept), a correction of a stored reading is rejected (stored
    readings are never replaced) and an exact re-send of a stored one is reported as already stored."""
    from dashboard.api_write import check_duplicates, validate_readings

    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    stored_at = int(now.timestamp() * 1000) - 3_600_000
    dash.store(readings=[reading_row("M1", stored_at, 0.7), reading_row("M2", stored_at, 0.4)])
    at = _iso(datetime.fromtimestamp(stored_at / 1000, timezone.utc))
    later = _iso(now)
    body = [{"meter_id": "M3", "timestamp": later, "kwh": 1.0},
            {"meter_id": "M3", "timestamp": later, "kwh": 1.0},   # exact repeat: dropped
            {"meter_id": "M3", "timestamp": later, "kwh": 50.0},  # conflicting repeat: rejected
            {"meter_id": "M1", "timestamp": at, "kwh": 50.0},     # correction of a stored reading: rejected
            {"meter_id": "M2", "timestamp": at, "kwh": 0.4}]      # already stored: reported, not sent again
    valid, rejected, raw = validate_readings(body)
    with dash.service.sessions() as session:
        keep, duplicates, conflicts = check_duplicates(session, valid, [i for i in range(len(body))])
    assert [r.meter_id for r in keep] == ["M3"]
    assert duplicates == [{"index": 1, "of": 0, "action": "dropped", "detail": "exact repeat of reading 0"},
                          {"index": 4, "of": None, "action": "already stored",
                           "detail": "this reading is already stored (0.4 kWh)"}]
    assert [(c["index"], c["errors"][0]["field"]) for c in conflicts] == [(2, "kwh"), (3, "kwh")]
    assert "reading 0 of this request (1 kWh) is kept" in conflicts[0]["errors"][0]["message"]
    assert "0.7 kWh is already stored" in conflicts[1]["errors"][0]["message"]


def test_a_body_of_only_already_stored_readings_is_an_idempotent_202(dash):
    at = int(datetime.now(timezone.utc).timestamp() * 1000) // 60_000 * 60_000 - 3_600_000
    dash.store(readings=[reading_row("M1", at, 0.7)])
    response = dash.client.post("/api/v1/readings", headers=dash.auth, json=[
        {"meter_id": "M1", "timestamp": _iso(datetime.fromtimestamp(at / 1000, timezone.utc)), "kwh": 0.7}])
    assert response.status_code == 202, response.text  # nothing to send: no broker needed
    assert response.json()["accepted"] == 0 and response.json()["duplicates"][0]["action"] == "already stored"


def test_duplicates_in_an_upload_are_reported_not_silently_merged(dash):
    from dashboard.detect import EXAMPLE_CSV

    lines = EXAMPLE_CSV.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    exact, conflicting = rows[100], rows[200]
    ts, meter, kwh = conflicting.split(",")
    text = "\n".join([header, *rows, exact, f"{ts},{meter},50"]) + "\n"
    response = _upload(dash, text.encode(), name="fleet.csv")
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    assert body["readings"] == len(rows)  # the repeats are not scored twice
    assert (body["duplicates_dropped"], body["duplicates_rejected"]) == (1, 1)
    n = len(rows) + 1  # line number of the last original row
    assert body["duplicate_rows"] == [
        {"row": n + 1, "of_row": 102, "meter_id": exact.split(",")[1], "timestamp": exact.split(",")[0].replace(" ", "T"),
         "kwh": float(exact.split(",")[2]), "action": "dropped", "reason": "exact duplicate of row 102"},
        {"row": n + 2, "of_row": 202, "meter_id": meter, "timestamp": ts.replace(" ", "T"), "kwh": 50.0,
         "action": "rejected", "reason": f"same meter and time as row 202, which is kept ({float(kwh):g} kWh)"},
    ]
    point = next(p for p in body["series"][meter] if p["timestamp"] == ts.replace(" ", "T"))
    assert point["kwh"] == float(kwh)  # the first reading is the one scored


# -- 2. stored XSS: the page's sources -------------------------------------------------------------------
def test_the_page_never_parses_data_as_html():
    """Only theme.js writes markup (its two constant icons); everything else builds elements (js/dom.js)."""
    import re
    from pathlib import Path

    sources = Path(__file__).resolve().parents[2] / "dashboard" / "frontend" / "src"
    sinks = re.compile(r"\.innerHTML\s*=|\.outerHTML\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function")
    found = {path.name: len(sinks.findall(path.read_text())) for path in sorted(sources.rglob("*.js"))}
    assert {name: n for name, n in found.items() if n} == {"theme.js": 1}, found


# -- 9. the alert dispatcher loses nothing ---------------------------------------------------------------
def _alert_page(dash):
    return dash.client.get("/api/v1/alerts", headers=dash.auth).json()


def _cursor(dash) -> int:
    from dashboard.models import AlertCursor

    with dash.service.sessions() as session:
        return session.get(AlertCursor, 1).last_anomaly_id


def test_an_anomaly_whose_check_fails_on_a_locked_database_is_retried_and_holds_the_cursor(dashboard_factory):
    """The issue's case: the database refuses the alert rows for a while; the anomaly is alerted once it
    is back, and meanwhile the cursor never moves past it (a restart would check it again)."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    from tests.dashboard.conftest import T0, anomaly_record

    dash = dashboard_factory(alert_on="anomalies", webhook_allowed_hosts="127.0.0.1")
    receiver = _Receiver(200)
    locked = {"on": True, "refused": 0}

    def refuse_alert_rows(conn, cursor, statement, parameters, context, executemany):
        if locked["on"] and statement.lstrip().upper().startswith("INSERT INTO ALERTS"):
            locked["refused"] += 1
            raise OperationalError(statement, parameters, Exception("database is locked"))

    try:
        assert dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
            "name": "all", "min_severity": "INFO", "webhook_url": f"http://127.0.0.1:{receiver.port}/h"}
        ).status_code == 201
        before = _cursor(dash)
        event.listen(dash.service.engine, "before_cursor_execute", refuse_alert_rows)
        stored = dash.store(anomalies=[anomaly_record("M1", T0), anomaly_record("M2", T0)])
        dash.service.alerts.submit(stored.anomalies)
        wait_until(lambda: locked["refused"] >= 3, timeout=20, what="the check retried while the database refuses")
        assert receiver.received == [] and _cursor(dash) == before
        assert _alert_page(dash)["checks_awaiting_retry"] == 2
        metrics = dash.client.get("/metrics").text
        assert 'wattsup_dashboard_alerts_awaiting_retry{what="check"} 2.0' in metrics
        assert "wattsup_dashboard_alert_check_failures_total" in metrics
        locked["on"] = False
        wait_until(lambda: len(receiver.received) == 2, timeout=30, what="both alerts after the database is back")
        wait_until(lambda: _cursor(dash) == max(a["id"] for a in stored.anomalies), timeout=20, what="cursor advanced")
        page = _alert_page(dash)
        assert page["checks_awaiting_retry"] == 0 and [a["status"] for a in page["items"]] == ["sent", "sent"]
    finally:
        event.remove(dash.service.engine, "before_cursor_execute", refuse_alert_rows)
        receiver.close()


class _FlakyReceiver(_Receiver):
    """Answers 500 to the first ``failures`` requests, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        super().__init__(200)

    def answer(self, requests: int) -> int:
        return 500 if requests <= self.failures else 200


@pytest.mark.parametrize("failures,attempts,final", [(2, 5, "sent"), (10, 3, "failed")])
def test_failed_deliveries_are_retried_with_backoff_and_bounded(dashboard_factory, failures, attempts, final):
    from tests.dashboard.conftest import T0, anomaly_record

    dash = dashboard_factory(alert_on="anomalies", webhook_allowed_hosts="127.0.0.1", alert_delivery_attempts=attempts,
                             alert_retry_first_seconds=0.3, alert_retry_max_seconds=1.0)
    receiver = _FlakyReceiver(failures)
    try:
        assert dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
            "name": "flaky", "min_severity": "INFO", "webhook_url": f"http://127.0.0.1:{receiver.port}/h"}
        ).status_code == 201
        stored = dash.store(anomalies=[anomaly_record("M1", T0)])
        dash.service.alerts.submit(stored.anomalies)
        assert dash.service.alerts.wait_idle()
        [first] = _alert_page(dash)["items"]
        assert first["status"] == "retrying" and first["attempts"] == 1 and first["next_attempt_at"]
        assert "delivery failed (status 500); attempt 1 of" in first["detail"]
        wait_until(lambda: _alert_page(dash)["items"][0]["status"] == final, timeout=30, what=f"the alert {final}")
        [alert] = _alert_page(dash)["items"]
        expected = failures + 1 if final == "sent" else attempts
        assert alert["attempts"] == expected and len(receiver.received) == expected and alert["next_attempt_at"] is None
        assert 'wattsup_dashboard_alerts_total{channel="webhook",status="retrying"}' in dash.client.get("/metrics").text
    finally:
        receiver.close()
