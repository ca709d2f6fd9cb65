"""Fuzzing (issue 13): generated bad input never gets a 5xx, each call answers in under 2 s, memory stays bounded.

* schemathesis drives every operation of the dashboard's own OpenAPI document (``/api/v1/openapi.json``),
  once without credentials and once with a valid bearer token;
* Hypothesis drives ``POST /api/v1/readings`` with arbitrary JSON.

The broker address has nothing listening: writes that need Kafka must answer 503 with Retry-After within
the acknowledgement timeout, the documented outage answer (not a server error). ``GET /api/v1/events`` is
left out: it is an endless stream by design. Fixed seeds (derandomize) and example budgets keep the run
deterministic and well under a minute; the number of calls made is printed.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dashboard.app import create_app
from dashboard.auth import create_token
from dashboard.settings import DashboardSettings
from dashboard.store import IngestBatch, store_batch
from deploy.kafka.launcher import free_port
from foundation.kafka_settings import KafkaConnection
from tests.dashboard.conftest import QUARTER, T0, anomaly_record, reading_row

pytestmark = pytest.mark.timing  # every call is bounded (CALL_SECONDS)

API_EXAMPLES = 25
"""Generated cases per operation (each sent twice: anonymous and signed in)."""
JSON_EXAMPLES = 150
CALL_SECONDS = 2.0
RSS_GROWTH_LIMIT = 300 * 1024 * 1024
"""The service's memory may grow this much over the whole run at most (caches, the upload model)."""
OUTAGE_ANSWER = 503
FUZZ = {"derandomize": True, "deadline": None, "database": None, "phases": [Phase.explicit, Phase.generate],
        "suppress_health_check": list(HealthCheck)}
calls = {"api": 0, "json": 0}


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def _settings(path: Path) -> DashboardSettings:
    return DashboardSettings(
        database_url=f"sqlite:///{path / 'wattsup.db'}", consume=False, model_dir=path / "models",
        kafka=KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}"), ingest_ack_timeout_seconds=0.5,
        ingest_rate_per_minute=1_000_000, detect_rate_per_minute=1_000_000)


# Hypothesis imports its regex support on first use; done here at the top level, because importing it deep
# inside schemathesis's recursive schema walk trips a CPython 3.11 parser bug ("AST constructor recursion depth").
st.from_regex("x").validate()

# The operations are collected from the document of an app made for that alone (schemathesis's lazy
# fixture loader does not run under this pytest); the tests then send every case to the module's app.
_document_dir = tempfile.TemporaryDirectory(prefix="wattsup-fuzz-doc-")
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(_settings(Path(_document_dir.name)))
                                        ).exclude(path="/api/v1/events")


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory) -> Iterator[tuple[object, str, int]]:
    app = create_app(_settings(tmp_path_factory.mktemp("fuzz")))
    with TestClient(app):  # runs the lifespan (alert dispatcher) like a served app
        service = app.state.service
        token = create_token(service.sessions, "fuzzer")
        with service.sessions.begin() as session:
            store_batch(session, IngestBatch(
                readings=[reading_row(f"M{i % 3}", T0 + i * QUARTER, 1.0) for i in range(30)],
                anomalies=[anomaly_record(f"M{i}", T0 + i * QUARTER) for i in range(3)]))
        schema.app = app
        yield app, token, _rss()
    _document_dir.cleanup()


def _check(status: int, elapsed: float, what: str, headers) -> None:
    if status == OUTAGE_ANSWER:
        assert "retry-after" in {k.lower() for k in headers}, f"{what}: 503 without Retry-After"
    else:
        assert status < 500, f"{what}: server error {status}"
    assert elapsed < CALL_SECONDS, f"{what}: {elapsed:.2f} s"


@schema.parametrize()
@settings(max_examples=API_EXAMPLES, **FUZZ)
def test_every_endpoint_survives_generated_requests(case, fuzz_app):
    _app, token, rss_at_start = fuzz_app
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        started = time.perf_counter()
        response = case.call(headers=headers)
        calls["api"] += 1
        _check(response.status_code, time.perf_counter() - started, f"{case.method} {case.formatted_path}",
               response.headers)
    assert _rss() - rss_at_start < RSS_GROWTH_LIMIT


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=200),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=20), inner, max_size=8),
    max_leaves=60)
READING_LIKE = st.fixed_dictionaries({}, optional={
    "meter_id": st.text(max_size=200) | st.integers(), "feeder_id": st.none() | st.text(max_size=200),
    "timestamp": st.datetimes().map(lambda d: d.isoformat()) | st.text(max_size=40) | st.integers() | st.floats(),
    "kwh": st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10) | st.integers(),
    "interval_seconds": st.integers() | st.text(max_size=5)})


@settings(max_examples=JSON_EXAMPLES, **FUZZ)
@given(body=JSON_VALUES | st.lists(READING_LIKE, max_size=20) | READING_LIKE
       | st.integers(1, 3000).map(lambda n: "[" * n))
def test_readings_endpoint_survives_generated_json(fuzz_app, body):
    app, token, rss_at_start = fuzz_app
    content = body.encode() if isinstance(body, str) else json.dumps(body, allow_nan=True).encode()
    client = TestClient(app)
    started = time.perf_counter()
    response = client.post("/api/v1/readings", content=content,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    calls["json"] += 1
    _check(response.status_code, time.perf_counter() - started, "POST /api/v1/readings", response.headers)
    assert response.status_code in (202, 400, 413, 422, OUTAGE_ANSWER), response.text[:300]
    assert _rss() - rss_at_start < RSS_GROWTH_LIMIT


def test_report_the_number_of_generated_calls(capsys):
    with capsys.disabled():
        print(f"\nfuzz calls: {calls['api']} over the OpenAPI operations, {calls['json']} JSON bodies")
    assert calls["api"] == 0 or calls["api"] >= API_EXAMPLES
