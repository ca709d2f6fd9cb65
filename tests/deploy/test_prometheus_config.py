"""Prometheus configuration and alert rules, checked by Prometheus' own promtool.

`promtool check` proves the files load; `promtool test rules` proves each alert fires on the
series it is meant for and stays quiet on a healthy look-alike, which a syntax check cannot.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*_test.yml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed: `make system-packages` installs Debian's prometheus package")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def alerts() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_promtool_check_config(config):
    result = promtool("check", "config", str(PROMETHEUS_DIR / config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


def test_promtool_check_rules():
    assert RULE_FILES
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    assert RULE_TESTS
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_expects_it_to_fire():
    firing: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    firing.add(check["alertname"])
    assert {rule["alert"] for rule in alerts()} <= firing


def test_the_operator_alerts_the_issue_asks_for_exist():
    expressions = {rule["alert"]: rule["expr"] for rule in alerts()}
    wanted = {
        "WattsUpFeederSilent": "wattsup_stream_feeder_last_reading_timestamp_seconds",
        "WattsUpConsumerLagGrowing": "wattsup_kafka_consumer_lag_messages",
        "WattsUpDeadLetterRateHigh": "wattsup_stream_dead_letters_total",
        "WattsUpForecastOverdue": "wattsup_forecast_last_success_timestamp_seconds",
        "WattsUpFeederAnomalySpike": "wattsup_stream_feeder_anomalies_total",
    }
    for alert, metric in wanted.items():
        assert metric in expressions.get(alert, ""), alert


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_has_duration_severity_and_plain_words(rule):
    assert rule.get("for"), "an alert without `for:` pages on a single bad evaluation"
    assert rule["labels"]["severity"] in {"page", "ticket"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_compose_and_local_configs_scrape_the_same_jobs():
    def jobs(name: str) -> set[str]:
        return {job["job_name"] for job in yaml.safe_load((PROMETHEUS_DIR / name).read_text())["scrape_configs"]}

    assert jobs("prometheus.yml") == jobs("prometheus.compose.yml") == {
        "wattsup-stream", "wattsup-forecaster", "wattsup-dashboard", "wattsup-lag-exporter", "prometheus"}
