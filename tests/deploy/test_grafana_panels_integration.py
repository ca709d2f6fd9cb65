"""Every Grafana panel's query returns data from a real Prometheus scraping a running pipeline.

Real broker, a real ``wattsup stream`` worker, ``wattsup lag-exporter``, ``wattsup dashboard`` and
``wattsup forecast schedule`` (two runs: the second scores the first one's horizon as it comes
due, so the sMAPE panel shows a real accuracy), and Debian's Prometheus scraping all four every
second while simulated readings flow. Each panel target is then run as Grafana would run it (instant query,
Grafana's variables substituted) and must return at least one series with a number.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from deploy.grafana.dashboard_model import DASHBOARDS_DIR, PanelQuery, load_dashboard, panel_queries
from deploy.kafka.launcher import free_port
from deploy.prometheus.local_server import LocalPrometheus
from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet
from tests.waiting import stop_process

pytestmark = pytest.mark.integration

DASHBOARD = load_dashboard(DASHBOARDS_DIR / "wattsup-overview.json")
RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
QUERIES = panel_queries(DASHBOARD, rate_interval="2m", interval="1s", range_="5m")


def _metrics_text(port: int, path: str = "/metrics") -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()
    except OSError:
        return ""


def _metric_sum(port: int, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", _metrics_text(port), re.M))


@contextmanager
def _service(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-m", "wattsup.cli", *args], env={**os.environ, **env},
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        stop_process(process, 20)


def _wait(what: str, ready, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what} within {timeout:.0f} s\n{tails}")


def _scrape_count(prometheus: LocalPrometheus, job: str) -> float:
    return sum(float(r["value"][1]) for r in prometheus.query(f'count_over_time(up{{job="{job}"}}[1h])'))


def _scraped(prometheus: LocalPrometheus, jobs: set[str], scrapes: int):
    def ready() -> bool:
        healthy = {t["labels"]["job"] for t in prometheus.active_targets() if t["health"] == "up"}
        counts = {r["metric"]["job"]: float(r["value"][1])
                  for r in prometheus.query("sum by (job) (count_over_time(up[1h]))")}
        return jobs <= healthy and all(counts.get(job, 0) >= scrapes for job in jobs)
    return ready


@pytest.fixture(scope="module")
def scraped_pipeline(kafka, tmp_path_factory):
    """Worker, lag exporter, dashboard and forecaster, scraped by Prometheus while readings flow."""
    from tests.conftest import WorkerFactory

    tmp = tmp_path_factory.mktemp("panels")
    topics = kafka.fresh_topics(partitions=4)
    app_id = f"panels-{os.urandom(3).hex()}"
    env = {"WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()}}
    ports = {"lag": free_port(), "dashboard": free_port(), "forecaster": free_port()}
    logs = {name: tmp / f"{name}.log" for name in ("lag-exporter", "dashboard", "forecaster")}
    workers = WorkerFactory(kafka, tmp)
    worker = workers.start(topics, tmp / "no-models", app_id=app_id)  # no model: baseline rules score
    prometheus = LocalPrometheus(tmp / "prometheus", {
        "wattsup-stream": [f"127.0.0.1:{worker.metrics_port}"],
        "wattsup-lag-exporter": [f"127.0.0.1:{ports['lag']}"],
        "wattsup-dashboard": [f"127.0.0.1:{ports['dashboard']}"],
        "wattsup-forecaster": [f"127.0.0.1:{ports['forecaster']}"],
    }, rule_files=sorted(RULES_DIR.glob("*.yml")))
    all_logs = [*logs.values(), worker.log_path, prometheus.data_dir / "prometheus.log"]
    try:
        with ExitStack() as services:
            services.enter_context(_service(
                ["lag-exporter"], {**env, "WATTSUP_LAG_EXPORTER_PORT": str(ports["lag"]),
                                   "WATTSUP_LAG_EXPORTER_GROUPS": f'["{app_id}"]'}, logs["lag-exporter"]))
            services.enter_context(_service(
                ["dashboard", "--port", str(ports["dashboard"])],
                {**env, "WATTSUP_DASHBOARD_DATABASE_URL": f"sqlite:///{tmp / 'dashboard.db'}",
                 "WATTSUP_DASHBOARD_MODEL_DIR": str(tmp / "no-models")}, logs["dashboard"]))
            prometheus.start()
            # Prometheus must see the counters before and after readings arrive, or every rate() is 0.
            _wait("stream, lag exporter and dashboard scraped 3 times",
                  _scraped(prometheus, {"wattsup-stream", "wattsup-lag-exporter", "wattsup-dashboard"}, 3),
                  120, all_logs)
            fleet = simulate_fleet(FleetConfig(meters=100, days=4, interval=timedelta(hours=1), seed=66,
                                               anomaly_rate=0.5, meters_per_feeder=10))
            readings = fleet.readings.sort_values("timestamp", kind="stable")
            meters = ",".join(sorted(readings["meter_id"].unique())[:4])
            chunks = 4  # about a day each
            with ReadingProducer(kafka.connection, topics) as producer:
                for i in range(chunks):
                    chunk = readings.iloc[i * len(readings) // chunks:(i + 1) * len(readings) // chunks]
                    producer.send_frame(chunk, batch_by_feeder=True)
                    if i == chunks - 1:
                        producer.producer.produce(topics.readings, key=b"F-broken", value=b"not an avro record")
                    producer.flush(30)
                    worker.wait_for("wattsup_stream_readings_processed_total",
                                    0.9 * (i + 1) * len(readings) / chunks, timeout=120)
                    if i == chunks - 2:
                        # The forecaster's first run forecasts a few meters' last day; the readings of
                        # that day arrive next, and its second run scores them (sMAPE as it comes due).
                        services.enter_context(_service(
                            ["forecast", "schedule", "--every", "15s", "--meters", meters, "--workers", "1",
                             "--history", "4d", "--horizon", "1d", "--metrics-port", str(ports["forecaster"])],
                            {**env, "WATTSUP_FORECAST_DATA_DIR": str(tmp / "forecaster")}, logs["forecaster"]))
                        _wait("a first forecast run finished",
                              lambda: _metric_sum(ports["forecaster"], "wattsup_forecast_runs_total") >= 1,
                              180, all_logs)
                    # at least two scrapes of the worker between chunks, so rates see each step
                    stream_scrapes = _scrape_count(prometheus, "wattsup-stream")
                    _wait("two more scrapes of the worker",
                          lambda: _scrape_count(prometheus, "wattsup-stream") >= stream_scrapes + 2, 60, all_logs)
            worker.wait_for("wattsup_stream_dead_letters_total", 1, timeout=60)
            _wait("a forecast run scored the horizon that came due",
                  lambda: _metric_sum(ports["forecaster"], "wattsup_forecast_smape_points") > 0, 180, all_logs)
            _wait("the dashboard stored records",
                  lambda: _metric_sum(ports["dashboard"], "wattsup_dashboard_records_ingested_total") > 0, 60, all_logs)
            done = {r["metric"]["job"]: float(r["value"][1])
                    for r in prometheus.query("sum by (job) (count_over_time(up[1h]))")}
            _wait("final state scraped", _scraped(prometheus, {
                "wattsup-stream", "wattsup-lag-exporter", "wattsup-dashboard", "wattsup-forecaster"},
                int(max(done.values())) + 3), 60, all_logs)
            yield prometheus, worker
    finally:
        prometheus.stop()
        for started in workers.started:
            started.stop()


def _skip_reason(query: PanelQuery, exported: set[str]) -> str | None:
    for name in re.findall(r"\b(wattsup_stream_[a-z_]+)", query.expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if base not in exported:
            return f"panel {query.panel_title!r}: the stream worker does not export {base} yet"
    return None


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.panel_id}{q.ref_id}-{q.panel_title}")
def test_panel_query_returns_data(scraped_pipeline, query):
    prometheus, worker = scraped_pipeline
    exported = set(re.findall(r"^# TYPE (\S+) ", _metrics_text(worker.metrics_port), re.M))
    reason = _skip_reason(query, exported)
    if reason:
        pytest.skip(reason)
    result = prometheus.query(query.expr)
    assert result, f"panel {query.panel_title!r} target {query.ref_id}: no series for {query.expr}"
    values = [float(series["value"][1]) for series in result]
    names = re.findall(r"\b(wattsup_[a-z_]+)", query.expr)
    assert any(math.isfinite(v) for v in values), (
        f"{query.expr}: only {values}; raw samples: {[prometheus.query(n + '[2m]') for n in names]}")


def test_alert_rules_evaluate_on_the_pipeline_series(scraped_pipeline):
    """The operator alerts load into the same Prometheus and evaluate on the real series without error.

    (Whether each one fires when it should is proven by `promtool test rules`; here, that their
    label matching and functions work on what the services really export.)
    """
    prometheus, _ = scraped_pipeline
    rules = prometheus.rules()
    assert len(rules) >= 7
    assert all(rule["lastEvaluation"] != "0001-01-01T00:00:00Z" for rule in rules), rules
    broken = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert not broken, broken
    # Nothing is wrong with this healthy pipeline yet, so no alert is firing ("for:" keeps them pending).
    assert not [rule["name"] for rule in rules if rule.get("state") == "firing"]


def test_bench_script_reports_every_panel_with_data(scraped_pipeline):
    prometheus, _ = scraped_pipeline
    result = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "bench" / "grafana_panels.py"),
                             "--prometheus", prometheus.url, "--rate-interval", "2m", "--range", "5m"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(QUERIES)} queries of {len(DASHBOARD.panels)} panels, 0 without data" in result.stdout
