"""REST API on a temp SQLite database, no broker: auth, validation, paging, filters, series, CSV."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from tests.dashboard.conftest import QUARTER, T0, anomaly_record, reading_row

WRITES = [
    ("post", "/api/v1/readings", {"json": {"meter_id": "M1", "timestamp": "2026-11-25T08:00:00Z", "kwh": 1.0}}),
    ("put", "/api/v1/sensitivity", {"json": {"value": 2.0}}),
    ("delete", "/api/v1/sensitivity/M1", {}),
    ("post", "/api/v1/alert-rules", {"json": {"name": "r", "webhook_url": "http://127.0.0.1:9/x"}}),
    ("delete", "/api/v1/alert-rules/1", {}),
    ("post", "/api/v1/detect", {"files": {"file": ("a.csv", b"timestamp,meter_id,kwh\n", "text/csv")}}),
]
READS = ["/api/v1/anomalies", "/api/v1/anomalies.csv", "/api/v1/meters", "/api/v1/series?meter_id=M1",
         "/api/v1/summary", "/api/v1/models", "/api/v1/alert-rules", "/api/v1/alerts", "/api/v1/sensitivity",
         "/api/v1/detect/example.csv"]


@pytest.mark.parametrize("method,path,kwargs", WRITES)
def test_every_writing_endpoint_refuses_missing_and_bad_tokens(dash, method, path, kwargs):
    missing = getattr(dash.client, method)(path, **kwargs)
    assert missing.status_code == 401, missing.text
    assert "authentication required" in missing.json()["detail"]
    bad = getattr(dash.client, method)(path, headers={"Authorization": "Bearer not-a-token"}, **kwargs)
    assert bad.status_code == 401
    assert "invalid" in bad.json()["detail"]
    basic = getattr(dash.client, method)(path, headers={"Authorization": "Basic dXNlcjpwdw=="}, **kwargs)
    assert basic.status_code == 401


def test_reads_are_public_by_default_and_refused_when_configured(dashboard_factory):
    public = dashboard_factory()
    assert public.client.get("/api/v1/anomalies").status_code == 200
    private = dashboard_factory(read_public=False)
    for path in READS:
        refused = private.client.get(path)
        assert refused.status_code == 401, path
        if path != "/api/v1/sensitivity":  # that one reads the control topic: tested with the broker
            allowed = private.client.get(path, headers=private.auth)
            assert allowed.status_code == 200, path
    assert private.client.get("/api/v1/events").status_code == 401  # the live stream too (allowed: tested live)
    assert private.client.get("/api/v1/session").json() == {"authenticated": False, "name": None, "read_public": False}
    assert private.client.get("/healthz").json() == {"status": "ok", "ingest": "off"}


def test_session_login_cookie_and_logout(dashboard_factory):
    dash = dashboard_factory(read_public=False)
    assert dash.client.post("/api/v1/session", json={"token": "wrong"}).status_code == 401
    login = dash.client.post("/api/v1/session", json={"token": dash.token})
    assert login.status_code == 200 and login.json() == {"authenticated": True, "name": "tester"}
    cookie = login.headers["set-cookie"]
    assert "wattsup_session=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert dash.token not in cookie  # the cookie is a session id, not the token
    assert dash.client.get("/api/v1/session").json() == {"authenticated": True, "name": "tester", "read_public": False}
    assert dash.client.get("/api/v1/anomalies").status_code == 200
    # the page's fetch sends its Origin; without one a cookie-authenticated write is refused (CSRF)
    created = dash.client.post("/api/v1/alert-rules", json={"name": "by cookie", "email_to": "ops@example.org"},
                               headers={"Origin": "http://testserver"})
    assert created.status_code == 201
    assert dash.client.delete("/api/v1/session", headers={"Origin": "http://testserver"}).status_code == 200
    dash.client.cookies.clear()
    assert dash.client.get("/api/v1/anomalies").status_code == 401


def test_tokens_are_stored_hashed(dash):
    from sqlalchemy import select

    from dashboard.auth import hash_secret
    from dashboard.models import ApiToken

    with dash.service.sessions() as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert stored == [hash_secret(dash.token)]
    assert dash.token not in stored


def test_anomalies_paging_is_newest_first_with_total(dash):
    dash.store(anomalies=[anomaly_record(f"M{i % 3}", T0 + i * QUARTER) for i in range(25)])
    first = dash.client.get("/api/v1/anomalies", params={"limit": 10}).json()
    assert first["total"] == 25 and first["limit"] == 10 and first["offset"] == 0
    stamps = [a["timestamp"] for a in first["items"]]
    assert stamps == sorted(stamps, reverse=True) and len(stamps) == 10
    pages = [dash.client.get("/api/v1/anomalies", params={"limit": 10, "offset": o}).json()["items"] for o in (0, 10, 20)]
    ids = [a["id"] for page in pages for a in page]
    assert len(ids) == 25 == len(set(ids))
    assert len(pages[2]) == 5
    past_end = dash.client.get("/api/v1/anomalies", params={"offset": 100}).json()
    assert past_end["items"] == [] and past_end["total"] == 25


def test_ties_on_timestamp_are_ordered_by_id_descending(dash):
    dash.store(anomalies=[anomaly_record(m, T0) for m in ("A", "B", "C")])
    items = dash.client.get("/api/v1/anomalies").json()["items"]
    assert [a["id"] for a in items] == sorted((a["id"] for a in items), reverse=True)


def test_anomaly_object_matches_the_contract(dash):
    dash.store(anomalies=[anomaly_record("M1", T0, "CRITICAL")])
    a = dash.client.get("/api/v1/anomalies").json()["items"][0]
    assert set(a) == {"id", "meter_id", "feeder_id", "timestamp", "observed", "expected", "lower", "upper", "residual",
                      "band_residual", "baseline", "score", "severity", "kind", "causes", "model_version", "detected_at",
                      "suppressed_by"}
    assert a["suppressed_by"] is None  # it stands: not suppressed by operator feedback
    assert (a["expected"], a["baseline"], a["band_residual"]) == (1.0, 1.2, 8.0)
    assert a["timestamp"] == "2026-11-18T11:06:40Z" and a["detected_at"] == "2026-11-18T11:06:41Z"
    assert a["causes"][0] == {"feature": "ratio", "contribution": 0.7, "text": "usage 5x the usual"}


def test_anomaly_filters(dash):
    dash.store(anomalies=[
        anomaly_record("M1", T0, "INFO", feeder="F1"),
        anomaly_record("M1", T0 + QUARTER, "WARNING", feeder="F1"),
        anomaly_record("M2", T0 + 2 * QUARTER, "CRITICAL", feeder="F2"),
        anomaly_record("M3", T0 + 3 * QUARTER, "CRITICAL", feeder="F2"),
    ])

    def meters(**params):
        body = dash.client.get("/api/v1/anomalies", params=params).json()
        return sorted((a["meter_id"], a["severity"]) for a in body["items"])

    assert meters(meter_id="M1") == [("M1", "INFO"), ("M1", "WARNING")]
    assert meters(feeder_id="F2") == [("M2", "CRITICAL"), ("M3", "CRITICAL")]
    assert meters(severity="INFO,CRITICAL") == [("M1", "INFO"), ("M2", "CRITICAL"), ("M3", "CRITICAL")]
    assert meters(severity=["WARNING", "critical"]) == [("M1", "WARNING"), ("M2", "CRITICAL"), ("M3", "CRITICAL")]
    assert meters(since="2026-11-18T11:21:40Z", until="2026-11-18T11:36:40Z") == [("M1", "WARNING"), ("M2", "CRITICAL")]
    # naive timestamps are UTC
    assert meters(since="2026-11-18T11:36:40") == [("M2", "CRITICAL"), ("M3", "CRITICAL")]


@pytest.mark.parametrize("params,field", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset"),
    ({"severity": "LOUD"}, "severity"), ({"since": "yesterday"}, "since"),
    ({"since": "2026-11-20T00:00:00Z", "until": "2026-11-19T00:00:00Z"}, "since"),
])
def test_bad_query_parameters_get_422_naming_the_field(dash, params, field):
    response = dash.client.get("/api/v1/anomalies", params=params)
    assert response.status_code == 422, response.text
    assert field in [e["loc"][-1] for e in response.json()["detail"]]


def test_anomalies_csv_download(dash):
    dash.store(anomalies=[anomaly_record("M1", T0, "WARNING"), anomaly_record("M2", T0 + QUARTER, "INFO")])
    response = dash.client.get("/api/v1/anomalies.csv", params={"severity": "WARNING"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == "attachment; filename=anomalies.csv"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["timestamp", "meter_id", "feeder_id", "observed", "expected", "lower", "upper", "residual",
                             "score", "severity", "kind", "causes", "model_version", "band_residual", "baseline"]
    assert len(rows) == 1 and rows[0]["meter_id"] == "M1"
    assert (rows[0]["expected"], rows[0]["band_residual"], rows[0]["baseline"]) == ("1.0", "8.0", "1.2")
    assert rows[0]["causes"] == "usage 5x the usual; sudden jump"


def test_meters_summary_and_series(dash):
    readings = [reading_row(m, T0 + i * QUARTER, 1.0 + i, feeder=f)
                for i in range(8) for m, f in (("M1", "F1"), ("M2", "F1"), ("M3", "F2"))]
    stored = dash.store(readings=readings, anomalies=[anomaly_record("M1", T0 + 7 * QUARTER, "CRITICAL")],
                        forecasts=[{"meter_id": "M1", "feeder_id": "F1", "generated_at_ms": T0, "model_version": "p",
                                    "interval_seconds": 900,
                                    "points": [[T0 + i * QUARTER, 1.0, 0.5, 1.5] for i in range(12)]}])
    assert len(stored.readings) == 24
    # stored again (re-delivery): nothing new
    again = dash.store(readings=readings, anomalies=[anomaly_record("M1", T0 + 7 * QUARTER, "CRITICAL")])
    assert again.readings == [] and again.anomalies == []

    meters = dash.client.get("/api/v1/meters").json()["items"]
    assert [m["meter_id"] for m in meters] == ["M1", "M2", "M3"]
    assert meters[0] == {"meter_id": "M1", "feeder_id": "F1", "last_reading_at": "2026-11-18T12:51:40Z",
                         "anomalies_24h": 1}
    assert [m["meter_id"] for m in dash.client.get("/api/v1/meters", params={"feeder_id": "F2"}).json()["items"]] == ["M3"]

    summary = dash.client.get("/api/v1/summary").json()
    assert summary["meters"] == 3 and summary["feeders"] == 2
    assert summary["anomalies_24h"] == {"INFO": 0, "WARNING": 0, "CRITICAL": 1}
    assert summary["readings_last_hour"] == 12  # 4 quarters x 3 meters after the newest minus one hour
    assert summary["latest_reading_at"] == "2026-11-18T12:51:40Z"
    assert summary["model_version"] == "v1"

    meter = dash.client.get("/api/v1/series", params={"meter_id": "M1"}).json()
    assert meter["key"] == "M1" and len(meter["readings"]) == 8
    assert meter["readings"][0] == {"timestamp": "2026-11-18T11:06:40Z", "kwh": 1.0}
    assert len(meter["forecast"]) == 12 and set(meter["forecast"][0]) == {"timestamp", "expected", "lower", "upper"}
    assert [a["severity"] for a in meter["anomalies"]] == ["CRITICAL"]

    feeder = dash.client.get("/api/v1/series", params={"feeder_id": "F1"}).json()
    assert feeder["key"] == "F1" and feeder["forecast"] == []
    assert [r["kwh"] for r in feeder["readings"]] == [2 * (1.0 + i) for i in range(8)]

    ranged = dash.client.get("/api/v1/series", params={"meter_id": "M1", "since": "2026-11-18T11:36:40Z",
                                                       "until": "2026-11-18T12:06:40Z"}).json()
    assert [r["timestamp"] for r in ranged["readings"]] == ["2026-11-18T11:36:40Z", "2026-11-18T11:51:40Z",
                                                            "2026-11-18T12:06:40Z"]
    assert dash.client.get("/api/v1/series").status_code == 422
    assert dash.client.get("/api/v1/series", params={"meter_id": "nope"}).json()["readings"] == []


def test_newer_forecast_replaces_older_never_the_reverse(dash):
    def fc(generated, expected):
        return {"meter_id": "M1", "feeder_id": "F1", "generated_at_ms": generated, "model_version": "p",
                "interval_seconds": 900, "points": [[T0, expected, 0.0, 9.0]]}

    dash.store(readings=[reading_row("M1", T0, 1.0)], forecasts=[fc(T0 + 2, 2.0)])
    dash.store(forecasts=[fc(T0 + 1, 1.0)])  # an older one arriving late
    assert dash.client.get("/api/v1/series", params={"meter_id": "M1"}).json()["forecast"][0]["expected"] == 2.0
    dash.store(forecasts=[fc(T0 + 3, 3.0)])
    assert dash.client.get("/api/v1/series", params={"meter_id": "M1"}).json()["forecast"][0]["expected"] == 3.0


def test_openapi_document_and_docs(dash):
    doc = dash.client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/anomalies", "/api/v1/anomalies.csv", "/api/v1/meters", "/api/v1/series", "/api/v1/summary",
                 "/api/v1/models", "/api/v1/readings", "/api/v1/detect", "/api/v1/sensitivity", "/api/v1/alert-rules",
                 "/api/v1/alerts", "/api/v1/events", "/api/v1/session"):
        assert path in doc["paths"], path
    assert dash.client.get("/api/v1/docs").status_code == 200
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))
    assert refs and set(refs) <= set(doc["components"]["schemas"])  # no dangling reference
    body = doc["paths"]["/api/v1/readings"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][0]["required"] == ["meter_id", "timestamp", "kwh"]


def test_models_lists_versions_newest_first(dash, tmp_path):
    import json

    for version in ("20261101T000000Z", "20261120T000000Z"):
        d = dash.settings.model_dir / version
        d.mkdir(parents=True)
        (d / "model.joblib").write_bytes(b"")
        (d / "metadata.json").write_text(json.dumps({
            "version": version, "features": ["a"], "parameters": {}, "contamination": 0.01, "training_window": {},
            "rows": 10, "meters": 1, "thresholds": {}}))
    items = dash.client.get("/api/v1/models").json()["items"]
    assert [m["version"] for m in items] == ["20261120T000000Z", "20261101T000000Z"]
    assert dash.client.get("/api/v1/summary").json()["model_version"] == "20261120T000000Z"


def test_alert_rules_validation_create_list_delete(dash):
    bad = dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
        "name": "", "min_severity": "LOUD", "webhook_url": "ftp://x", "email_to": "not-an-address",
        "quiet_hours": {"start": "25:00", "end": "06:00"}})
    assert bad.status_code == 422
    fields = {tuple(e["loc"][1:]) for e in bad.json()["detail"]}
    assert {("name",), ("min_severity",), ("webhook_url",), ("email_to",), ("quiet_hours", "start")} <= fields
    no_channel = dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "x"})
    assert no_channel.status_code == 422 and "webhook_url" in no_channel.text
    created = dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
        "name": "night crew", "min_severity": "CRITICAL", "feeder_id": "F1", "email_to": "ops@example.org",
        "quiet_hours": {"start": "22:00", "end": "06:00"}})
    assert created.status_code == 201
    rule = created.json()
    assert rule == {"id": rule["id"], "name": "night crew", "min_severity": "CRITICAL", "meter_id": None,
                    "feeder_id": "F1", "quiet_hours": {"start": "22:00", "end": "06:00"}, "webhook_url": None,
                    "email_to": "ops@example.org", "enabled": True}
    assert dash.client.get("/api/v1/alert-rules", headers=dash.auth).json()["items"] == [rule]
    assert dash.client.delete(f"/api/v1/alert-rules/{rule['id']}", headers=dash.auth).status_code == 204
    assert dash.client.delete(f"/api/v1/alert-rules/{rule['id']}", headers=dash.auth).status_code == 404
    assert dash.client.get("/api/v1/alert-rules", headers=dash.auth).json()["items"] == []


def test_readings_body_that_is_not_json_gets_400(dash):
    for body in (b"{not json", b"", b"42"):
        response = dash.client.post("/api/v1/readings", headers={**dash.auth, "Content-Type": "application/json"},
                                    content=body)
        assert response.status_code == 400, body
        assert response.json()["detail"]


def test_readings_validation_names_every_bad_field():
    from dashboard.api_write import validate_readings

    valid, rejected, raw = validate_readings([
        {"meter_id": "M1", "timestamp": "2026-11-25T08:00:00Z", "kwh": 1.5},
        {"meter_id": "", "timestamp": "soon", "kwh": "Infinity", "interval_seconds": 0},
        "oops",
        {"timestamp": "2026-11-25T08:00:00", "kwh": "NaN", "meter_id": "M2"},
    ])
    assert [v.meter_id for v in valid] == ["M1"]
    assert valid[0].record() == {"meter_id": "M1", "feeder_id": "M1", "timestamp": 1795593600000, "energy_kwh": 1.5,
                                 "interval_seconds": 900, "voltage_v": None, "power_kw": None, "quality_flags": []}
    assert [r["index"] for r in rejected] == [1, 2, 3]
    assert {e["field"] for e in rejected[0]["errors"]} == {"meter_id", "timestamp", "kwh", "interval_seconds"}
    assert rejected[1]["errors"][0]["message"].startswith("expected a JSON object")
    assert [e["field"] for e in rejected[2]["errors"]] == ["kwh"]
    assert raw[1] == "oops"


def test_metrics_use_route_templates(dash):
    dash.client.get("/api/v1/series", params={"meter_id": "M1"})
    dash.client.delete("/api/v1/alert-rules/12345", headers=dash.auth)
    text = dash.client.get("/metrics").text
    assert 'wattsup_dashboard_http_requests_total{route="/api/v1/alert-rules/{rule_id}",status="404"} 1.0' in text
    assert 'route="/api/v1/series",status="200"' in text
    for name in ("wattsup_dashboard_records_ingested_total", "wattsup_dashboard_alerts_total",
                 "wattsup_dashboard_sse_clients", "wattsup_dashboard_detect_seconds"):
        assert name in text


def test_write_rate_limit_per_token(dashboard_factory):
    dash = dashboard_factory(ingest_rate_per_minute=3)
    codes = [dash.client.post("/api/v1/alert-rules", headers=dash.auth,
                              json={"name": f"r{i}", "email_to": "a@b.org"}).status_code for i in range(5)]
    assert codes == [201, 201, 201, 429, 429]
    limited = dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "x", "email_to": "a@b.org"})
    assert "rate limit" in limited.json()["detail"] and int(limited.headers["retry-after"]) >= 1


def test_security_headers_on_api_and_page(dash):
    for path in ("/api/v1/summary", "/healthz", "/"):
        headers = dash.client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY", path


def test_page_is_served_from_static_or_a_clear_503(dashboard_factory, monkeypatch, tmp_path):
    import dashboard.app

    built = tmp_path / "built"
    built.mkdir()
    (built / "index.html").write_text("<!doctype html><html><body>WattsUp</body></html>")
    (built / "app.js").write_text("console.log(1)")
    monkeypatch.setattr(dashboard.app, "STATIC_DIR", built)
    page = dashboard_factory()
    assert page.client.get("/").text.endswith("WattsUp</body></html>")
    assert page.client.get("/app.js").text == "console.log(1)"
    assert page.client.get("/api/v1/summary").status_code == 200  # the API is not shadowed by the mount

    monkeypatch.setattr(dashboard.app, "STATIC_DIR", tmp_path / "missing")
    unbuilt = dashboard_factory()
    response = unbuilt.client.get("/")
    assert response.status_code == 503 and "not built" in response.json()["detail"]


def test_readings_body_over_the_limit_is_413(dashboard_factory):
    dash = dashboard_factory(max_json_body_mb=0.001)
    body = [{"meter_id": f"M{i}", "timestamp": "2026-11-25T08:00:00Z", "kwh": 1.0} for i in range(100)]
    response = dash.client.post("/api/v1/readings", headers=dash.auth, json=body)
    assert response.status_code == 413
    assert response.json()["detail"] == "the request body is larger than the limit of 0.001 MB"


def test_answers_match_the_documented_models(dash):
    from dashboard import api_models as m

    dash.store(readings=[reading_row("M1", T0 + i * QUARTER, 1.0) for i in range(4)],
               anomalies=[anomaly_record("M1", T0 + QUARTER, "CRITICAL")],
               forecasts=[{"meter_id": "M1", "feeder_id": "F1", "generated_at_ms": T0, "model_version": "p",
                           "interval_seconds": 900, "points": [[T0, 1.0, 0.5, 1.5]]}])
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
        "name": "r", "email_to": "a@b.org", "quiet_hours": {"start": "22:00", "end": "06:00"}})
    for path, model in (("/api/v1/anomalies", m.AnomalyPage), ("/api/v1/meters", m.MeterList),
                        ("/api/v1/series?meter_id=M1", m.Series), ("/api/v1/series?feeder_id=F1", m.Series),
                        ("/api/v1/summary", m.Summary), ("/api/v1/models", m.ModelList),
                        ("/api/v1/alert-rules", m.RuleList), ("/api/v1/alerts", m.AlertPage),
                        ("/api/v1/session", m.SessionState)):
        model.model_validate(dash.client.get(path, headers=dash.auth).json())
    m.IngestResult.model_validate({"accepted": 0, "rejected": [{"index": 0, "errors": [{"field": "kwh", "message": "x"}]}]})


def _check_against_openapi(document: dict, method: str, template: str, response) -> None:
    """The answer's status is one the OpenAPI document lists for the operation, and a JSON body
    matches the schema documented for that status."""
    import jsonschema_rs  # schemathesis's validator (a dev dependency through it)

    operation = document["paths"][template][method.lower()]
    documented = operation["responses"]
    status = str(response.status_code)
    assert status in documented, (f"{method} {template} answered {status}, which its OpenAPI operation does not "
                                  f"document (it lists {sorted(documented)}): {response.text[:200]}")
    schema = documented[status].get("content", {}).get("application/json", {}).get("schema")
    if schema:
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})
        errors = list(validator.iter_errors(response.json()))
        assert not errors, f"{method} {template} {status}: {errors[0].message}"


def test_every_answer_has_a_status_and_body_the_openapi_document_lists(dashboard_factory):
    """Successes and refusals alike: a client generated from the document must know every answer."""
    # No broker listens here: the refused readings' dead letters wait for one until the acknowledgement
    # timeout, and the app's stop waits that long for them (10 s by default). No call below waits for Kafka.
    dash = dashboard_factory(ingest_ack_timeout_seconds=1.0)
    dash.store(readings=[reading_row("M1", T0 + i * QUARTER, 1.0) for i in range(4)],
               anomalies=[anomaly_record("M1", T0 + QUARTER, "CRITICAL")],
               forecasts=[{"meter_id": "M1", "feeder_id": "F1", "generated_at_ms": T0, "model_version": "p",
                           "interval_seconds": 900, "points": [[T0, 1.0, 0.5, 1.5]]}])
    document = dash.client.get("/api/v1/openapi.json").json()
    auth, json_type = dash.auth, {**dash.auth, "Content-Type": "application/json"}
    rule = dash.client.post("/api/v1/alert-rules", headers=auth, json={"name": "r", "email_to": "a@b.org"})
    calls = [
        ("GET", "/api/v1/anomalies", "/api/v1/anomalies", {}, {}),
        ("GET", "/api/v1/anomalies", "/api/v1/anomalies?severity=LOUD", {}, {}),
        ("GET", "/api/v1/anomalies", "/api/v1/anomalies?limit=-1", {}, {}),
        ("GET", "/api/v1/anomalies.csv", "/api/v1/anomalies.csv", {}, {}),
        ("GET", "/api/v1/meters", "/api/v1/meters", {}, {}),
        ("GET", "/api/v1/series", "/api/v1/series?meter_id=M1", {}, {}),
        ("GET", "/api/v1/series", "/api/v1/series?feeder_id=F1", {}, {}),
        ("GET", "/api/v1/series", "/api/v1/series", {}, {}),
        ("GET", "/api/v1/summary", "/api/v1/summary", {}, {}),
        ("GET", "/api/v1/models", "/api/v1/models", {}, {}),
        ("GET", "/api/v1/session", "/api/v1/session", {}, {}),
        ("POST", "/api/v1/session", "/api/v1/session", {}, {"json": {"token": "wrong"}}),
        ("POST", "/api/v1/session", "/api/v1/session", {}, {"json": {}}),
        ("POST", "/api/v1/session", "/api/v1/session", {}, {"json": {"token": dash.token}}),
        ("DELETE", "/api/v1/session", "/api/v1/session", {}, {}),
        ("GET", "/api/v1/alert-rules", "/api/v1/alert-rules", auth, {}),
        ("GET", "/api/v1/alert-rules", "/api/v1/alert-rules", {}, {}),
        ("POST", "/api/v1/alert-rules", "/api/v1/alert-rules", auth, {"json": {"name": "s", "email_to": "c@d.org"}}),
        ("POST", "/api/v1/alert-rules", "/api/v1/alert-rules", auth, {"json": {"name": "t"}}),
        ("POST", "/api/v1/alert-rules", "/api/v1/alert-rules", {}, {"json": {"name": "u", "email_to": "c@d.org"}}),
        ("POST", "/api/v1/alert-rules", "/api/v1/alert-rules", {**auth, "Content-Type": "text/plain"},
         {"content": b'{"name": "v", "email_to": "c@d.org"}'}),
        ("DELETE", "/api/v1/alert-rules/{rule_id}", f"/api/v1/alert-rules/{rule.json()['id']}", auth, {}),
        ("DELETE", "/api/v1/alert-rules/{rule_id}", "/api/v1/alert-rules/987654", auth, {}),
        ("DELETE", "/api/v1/alert-rules/{rule_id}", "/api/v1/alert-rules/1", {}, {}),
        ("GET", "/api/v1/alerts", "/api/v1/alerts", auth, {}),
        ("GET", "/api/v1/alerts", "/api/v1/alerts", {}, {}),
        ("POST", "/api/v1/readings", "/api/v1/readings", json_type, {"content": b"{not json"}),
        ("POST", "/api/v1/readings", "/api/v1/readings", json_type, {"content": b'[{"meter_id": ""}]'}),
        ("POST", "/api/v1/readings", "/api/v1/readings", {}, {"json": [{"meter_id": "M1"}]}),
        ("POST", "/api/v1/readings", "/api/v1/readings", {**auth, "Content-Type": "text/plain"}, {"content": b"[]"}),
        ("GET", "/api/v1/detect/example.csv", "/api/v1/detect/example.csv", {}, {}),
        ("POST", "/api/v1/detect", "/api/v1/detect", auth,
         {"files": {"file": ("x.csv", b"\x00\x01binary", "text/csv")}}),
        ("POST", "/api/v1/detect", "/api/v1/detect", {}, {"files": {"file": ("x.csv", b"a,b\n", "text/csv")}}),
        ("GET", "/api/v1/sensitivity", "/api/v1/sensitivity", {}, {}),
        ("PUT", "/api/v1/sensitivity", "/api/v1/sensitivity", auth, {"json": {"value": 99}}),
        ("PUT", "/api/v1/sensitivity", "/api/v1/sensitivity", {}, {"json": {"value": 2}}),
        ("DELETE", "/api/v1/sensitivity/{meter_id}", "/api/v1/sensitivity/M1", {}, {}),
    ]
    seen = set()
    for method, template, url, headers, body in calls:
        response = dash.client.request(method, url, headers=headers, **body)
        _check_against_openapi(document, method, template, response)
        seen.add((method, template, response.status_code))
    assert {code for *_, code in seen} >= {200, 201, 204, 400, 401, 404, 415, 422}, sorted(seen)


def test_revoking_a_token_ends_its_sessions(dash):
    from dashboard.auth import create_token, list_tokens, revoke_token

    other = create_token(dash.service.sessions, "gateway")
    assert [n for n, _ in list_tokens(dash.service.sessions)] == ["gateway", "tester"]
    assert dash.client.post("/api/v1/session", json={"token": dash.token}).status_code == 200
    assert dash.client.get("/api/v1/session").json()["authenticated"] is True
    assert revoke_token(dash.service.sessions, "tester") and not revoke_token(dash.service.sessions, "tester")
    assert dash.client.get("/api/v1/session").json()["authenticated"] is False
    assert dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "x", "email_to": "a@b.org"}
                            ).status_code == 401
    assert dash.client.post("/api/v1/alert-rules", headers={"Authorization": f"Bearer {other}"},
                            json={"name": "x", "email_to": "a@b.org"}).status_code == 201


def test_csv_export_defuses_spreadsheet_formulas_in_text_cells(dash):
    dash.store(anomalies=[anomaly_record('=HYPERLINK("http://evil")', T0, feeder="@F1")])
    rows = list(csv.DictReader(io.StringIO(dash.client.get("/api/v1/anomalies.csv").text)))
    assert rows[0]["meter_id"] == "'=HYPERLINK(\"http://evil\")" and rows[0]["feeder_id"] == "'@F1"
    assert rows[0]["residual"] == "4.0"  # numbers are left alone (a negative residual stays a number)


NO_FORECAST = {"expected": None, "lower": None, "upper": None, "residual": None, "band_residual": None}


def test_anomaly_without_a_forecast_keeps_its_baseline_apart_from_expected(dash):
    """Schema version 2: no forecast covers the reading, so expected is null and the usual usage is the baseline."""
    from dashboard.api_models import Anomaly, AnomalyPage, Series

    stored = dash.store(anomalies=[anomaly_record("M1", T0, "CRITICAL", baseline=0.9, **NO_FORECAST)])
    assert stored.anomalies[0]["expected"] is None and stored.anomalies[0]["baseline"] == 0.9
    Anomaly.model_validate(stored.anomalies[0])  # what live events and alert webhooks carry
    page = dash.client.get("/api/v1/anomalies").json()
    AnomalyPage.model_validate(page)
    a = page["items"][0]
    assert (a["expected"], a["lower"], a["upper"], a["residual"], a["band_residual"]) == (None,) * 5
    assert a["baseline"] == 0.9 and a["observed"] == 5.0
    series = dash.client.get("/api/v1/series", params={"meter_id": "M1"}).json()
    Series.model_validate(series)
    assert series["anomalies"][0]["baseline"] == 0.9 and series["anomalies"][0]["expected"] is None
    rows = list(csv.DictReader(io.StringIO(dash.client.get("/api/v1/anomalies.csv").text)))
    assert (rows[0]["expected"], rows[0]["residual"], rows[0]["band_residual"], rows[0]["baseline"]) == ("", "", "", "0.9")


def test_version_1_anomaly_without_baseline_is_stored_with_nulls(dash):
    """A record decoded from schema version 1 has no band_residual or baseline key at all."""
    record = {k: v for k, v in anomaly_record("M1", T0).items() if k not in ("band_residual", "baseline")}
    dash.store(anomalies=[record])
    a = dash.client.get("/api/v1/anomalies").json()["items"][0]
    assert a["expected"] == 1.0 and a["baseline"] is None and a["band_residual"] is None
