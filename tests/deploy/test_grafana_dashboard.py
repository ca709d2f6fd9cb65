"""The provisioned Grafana dashboard, checked structurally (no Grafana server can be installed here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from deploy.grafana.dashboard_model import (
    DASHBOARDS_DIR,
    GRAFANA_DIR,
    PROMETHEUS_DATASOURCE_UID,
    Dashboard,
    load_dashboard,
    panel_queries,
    substitute_variables,
)

DASHBOARD_FILES = sorted(DASHBOARDS_DIR.glob("*.json"))
METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


@pytest.fixture(scope="module")
def overview() -> Dashboard:
    return load_dashboard(DASHBOARDS_DIR / "wattsup-overview.json")


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_json_validates(path):
    dashboard = load_dashboard(path)
    for panel in dashboard.panels:
        assert panel.datasource.uid == PROMETHEUS_DATASOURCE_UID
        assert all(t.datasource.uid == PROMETHEUS_DATASOURCE_UID for t in panel.targets)


def test_datasource_uid_is_the_provisioned_one():
    provisioned = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert [d["uid"] for d in provisioned["datasources"]] == [PROMETHEUS_DATASOURCE_UID]


def test_the_panels_the_issue_asks_for_are_there(overview):
    exprs = " ".join(t.expr for p in overview.panels for t in p.targets)
    for metric in (
        "wattsup_stream_readings_processed_total",  # fleet readings per second
        "wattsup_stream_anomalies_total",  # anomalies by severity
        "wattsup_stream_feeder_anomalies_total",  # top anomalous feeders
        "wattsup_stream_event_time_lag_seconds_bucket",  # event-time lag
        "wattsup_kafka_consumer_lag_messages",  # consumer lag
        "wattsup_stream_scoring_seconds_bucket",  # scoring latency percentiles
        "wattsup_forecast_last_success_timestamp_seconds",  # forecaster status
        "wattsup_forecast_smape",  # forecaster accuracy
        "wattsup_stream_model_info",  # model version
    ):
        assert metric in exprs, metric
    by_severity = [p for p in overview.panels if any("by (severity)" in t.expr for t in p.targets)]
    assert by_severity and by_severity[0].type == "timeseries"


def test_every_metric_on_the_dashboard_is_in_the_catalogue(overview):
    catalogue = METRICS_DOC.read_text()
    for query in panel_queries(overview):
        for name in re.findall(r"\b(wattsup_[a-z_]+)", query.expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert f"`{base}`" in catalogue, f"{name} (panel {query.panel_title!r}) is not in docs/metrics.md"


def test_overlapping_panels_and_duplicate_ids_are_rejected(overview):
    data = json.loads((DASHBOARDS_DIR / "wattsup-overview.json").read_text())
    data["panels"][1]["gridPos"] = dict(data["panels"][0]["gridPos"])
    with pytest.raises(ValidationError, match="overlap"):
        Dashboard.model_validate(data)
    data = json.loads((DASHBOARDS_DIR / "wattsup-overview.json").read_text())
    data["panels"][1]["id"] = data["panels"][0]["id"]
    with pytest.raises(ValidationError, match="not unique"):
        Dashboard.model_validate(data)
    data["panels"][1]["id"] = 99
    data["panels"][1]["targets"][0]["expr"] = ""
    with pytest.raises(ValidationError, match="expr"):
        Dashboard.model_validate(data)


def test_grafana_variables_are_substituted():
    assert substitute_variables("rate(x[$__rate_interval]) + increase(y[$__range])",
                                rate_interval="1m", interval="15s", range_="5m") == "rate(x[1m]) + increase(y[5m])"
    with pytest.raises(ValueError, match="unsubstituted"):
        substitute_variables("rate(x[$window])", rate_interval="1m", interval="15s", range_="5m")
