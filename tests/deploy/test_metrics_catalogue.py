"""docs/metrics.md lists every metric the services' code defines, and no metric uses a meter label."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "metrics.md"
METRIC_MODULES = ["stream_processors/metrics.py", "deploy/lag_exporter/collector.py",
                  "forecaster/metrics.py", "dashboard/metrics.py"]
DEFINITION = re.compile(r'(Counter|Gauge|Histogram|Info|Summary|CounterMetricFamily|GaugeMetricFamily)\(\s*"(wattsup_[a-z_]+)"')


CATALOGUE_TYPE = {"Counter": "counter", "CounterMetricFamily": "counter", "Gauge": "gauge",
                  "GaugeMetricFamily": "gauge", "Histogram": "histogram", "Summary": "summary", "Info": "gauge"}


def exported_name(kind: str, name: str) -> str:
    """The name as scraped: counters end in _total, Info metrics in _info."""
    if kind.startswith("Counter") and not name.endswith("_total"):
        return name + "_total"
    if kind == "Info":
        return name + "_info"
    return name


def defined_metrics(module: str) -> list[tuple[str, str]]:
    source = (ROOT / module).read_text()
    return [(kind, exported_name(kind, name)) for kind, name in DEFINITION.findall(source)]


@pytest.mark.parametrize("module", METRIC_MODULES)
def test_every_defined_metric_is_catalogued(module):
    if not (ROOT / module).exists():
        pytest.skip(f"{module} has not landed")
    catalogue = CATALOGUE.read_text()
    metrics = defined_metrics(module)
    assert metrics, f"no metric definitions found in {module}"
    missing = [name for _, name in metrics if f"`{name}`" not in catalogue]
    assert not missing, f"not in docs/metrics.md: {missing}"
    documented = dict(re.findall(r"^\| `(wattsup_[a-z_]+)` \| ([a-z]+)", catalogue, re.M))
    wrong = [(name, kind, documented[name]) for kind, name in metrics if documented[name] != CATALOGUE_TYPE[kind]]
    assert not wrong, f"type in docs/metrics.md differs from the code (name, code, doc): {wrong}"


def test_names_follow_prometheus_conventions():
    rows = re.findall(r"^\| `(wattsup_[a-z_]+)` \| (\w+)", CATALOGUE.read_text(), re.M)
    assert len(rows) > 30
    for name, kind in rows:
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        assert not re.search(r"_(ms|milliseconds|minutes|hours|kilobytes)\b", name), name


def test_no_metric_has_a_meter_label():
    for line in CATALOGUE.read_text().splitlines():
        if line.startswith("| `wattsup_"):
            labels = line.split("|")[4]
            assert "meter" not in labels, line
    for module in METRIC_MODULES:
        if (ROOT / module).exists():
            assert not re.search(r'\[[^\]]*"meter(_id)?"', (ROOT / module).read_text()), module
