"""Dockerfile and docker-compose.yml, checked without a Docker engine (none runs here).

`docker compose config` (or Debian's docker-compose) validates the file where installed (`make
test` installs Debian's docker-compose); everywhere, the compose file
is parsed and its structure checked: start order and health checks, that every `wattsup`
command line parses, that every WATTSUP_* variable names a real setting, that mounted files
exist and that Prometheus' compose targets are the services' ports.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
ONE_SHOT = {name for name, svc in SERVICES.items() if svc.get("restart") == "no"}
SETTINGS_MODULES = ["foundation.kafka_settings", "stream_processors.settings", "producers.settings", "models.settings",
                    "forecaster.settings", "dashboard.settings", "deploy.lag_exporter.settings", "deploy.kafka.settings"]


def known_environment_variables() -> set[str]:
    names: set[str] = set()
    for module_name in SETTINGS_MODULES:
        module = importlib.import_module(module_name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
                prefix = obj.model_config.get("env_prefix", "")
                names |= {f"{prefix}{field}".upper() for field in obj.model_fields}
    return names


def wattsup_services() -> dict[str, dict]:
    return {name: svc for name, svc in SERVICES.items() if svc.get("image") == "wattsup:latest"}


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) if installed, else Debian's `docker-compose` (1.29, same schema checks)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_validates():
    command = compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed; structure checked below")
    result = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_the_issue_asks_for():
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "registry" in SERVICES["schema-registry"]["image"]
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus:")
    assert SERVICES["grafana"]["image"].startswith("grafana/")
    commands = {name: svc["command"][:2] for name, svc in wattsup_services().items()}
    assert commands["simulator"] == ["produce", "simulate"]
    assert commands["stream"] == ["stream"]
    assert commands["forecaster"] == ["forecast", "schedule"]
    assert commands["dashboard"][0] == "dashboard"
    assert commands["lag-exporter"] == ["lag-exporter"]


def test_every_service_has_an_image_and_the_app_one_is_built_here():
    for name, svc in SERVICES.items():
        assert svc.get("image") or svc.get("build"), name
    for name, svc in wattsup_services().items():
        assert svc["build"] == ".", name


def test_start_order_and_health_checks():
    for name, svc in SERVICES.items():
        for target, rule in svc.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy; it has no check"
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to finish, but it restarts"
            else:
                assert condition == "service_started", condition
    # Long-running services report health; the simulator has no endpoint to ask (it only produces).
    for name in set(SERVICES) - ONE_SHOT - {"simulator"}:
        assert "healthcheck" in SERVICES[name], name
    assert ONE_SHOT == {"topics", "trainer"}
    # Nothing that uses Kafka starts before the topics exist.
    for name, svc in wattsup_services().items():
        if name not in ONE_SHOT and name != "lag-exporter":
            assert "topics" in svc["depends_on"], name
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_stream_workers_scale_as_replicas():
    stream = SERVICES["stream"]
    assert stream["deploy"]["replicas"] >= 2
    assert "ports" not in stream, "a fixed host port would stop a second replica from starting"
    assert stream["environment"]["WATTSUP_STREAM_WORKER_HOST"] == "0.0.0.0"


def test_every_wattsup_variable_is_a_real_setting():
    known = known_environment_variables()
    used: set[str] = set()
    for svc in wattsup_services().values():
        used |= {k for k in svc["environment"] if k.startswith("WATTSUP_")}
    used |= set(re.findall(r"\b(WATTSUP_[A-Z_]+)=", (ROOT / "Dockerfile").read_text()))
    assert used, "no WATTSUP_* variables found"
    assert used <= known, f"not a setting of any service: {sorted(used - known)}"


@pytest.mark.parametrize("name", sorted(wattsup_services()))
def test_service_command_line_parses(name):
    from wattsup.cli import app

    result = CliRunner().invoke(app, [*SERVICES[name]["command"], "--help"])
    assert result.exit_code == 0, result.output


def test_mounted_files_exist_and_prometheus_targets_match_the_services():
    for svc in SERVICES.values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.compose.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                if host == "localhost":
                    continue
                assert host in SERVICES, target
                assert port in SERVICES[host].get("expose", []) + [p.split(":")[-1] for p in SERVICES[host].get("ports", [])], target
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                assert str(dns["port"]) in SERVICES[host]["expose"]
    mounts = " ".join(SERVICES["grafana"]["volumes"])
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning" in mounts
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards" in mounts


def test_dockerfile_builds_one_wattsup_image_from_the_pinned_constraints():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert 'ENTRYPOINT ["wattsup"]' in dockerfile
    assert "--constraint constraints.txt" in dockerfile
    assert "java" not in dockerfile.lower().replace("no java runtime", "")
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.findall(r'"(\w+)\*"', re.search(r"include = \[(.*?)\]", pyproject).group(1))
    ignored = (ROOT / ".dockerignore").read_text().split()
    for package in packages:
        assert f"COPY {package}/ {package}/" in dockerfile, package
        assert package not in ignored, package
