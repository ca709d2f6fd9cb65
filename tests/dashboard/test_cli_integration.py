"""``wattsup dashboard`` as the demo runs it: a real process that serves, follows Kafka and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from deploy.kafka.launcher import free_port
from wattsup.cli import app
from wattsup.demo import DemoSettings, demo_services

pytestmark = pytest.mark.integration


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=3) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_create_token_and_stop_on_sigterm(kafka, tmp_path, monkeypatch):
    topics = kafka.fresh_topics(partitions=1)
    port = free_port()
    env = {"WATTSUP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "WATTSUP_DASHBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'wattsup.db'}",
           "WATTSUP_DASHBOARD_READ_PUBLIC": "false", "WATTSUP_DASHBOARD_PORT": str(port),
           **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()}}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The token commands run in this process (the same `wattsup` app, its exit codes and output); the
    # service below is a real process, as the demo runs it.
    cli = CliRunner()
    created = cli.invoke(app, ["dashboard", "create-token", "ops"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert len(token) >= 40
    again = cli.invoke(app, ["dashboard", "create-token", "ops"])
    assert again.exit_code == 2 and "already exists" in again.stdout
    listed = cli.invoke(app, ["dashboard", "list-tokens"])
    assert listed.stdout.split("\t")[0] == "ops" and token not in listed.stdout

    log_path = tmp_path / "dashboard.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "wattsup.cli", "dashboard"], env={**os.environ, **env},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and status != 200:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/healthz")
            except OSError:
                time.sleep(0.3)
        assert status == 200
        assert _get(f"http://127.0.0.1:{port}/api/v1/summary")[0] == 401
        assert _get(f"http://127.0.0.1:{port}/api/v1/summary", {"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log_path.read_text()[-3000:]
    assert "Application shutdown complete" in log_path.read_text()
    revoked = cli.invoke(app, ["dashboard", "revoke-token", "ops"])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout


def test_demo_runs_the_dashboard_on_the_configured_port(monkeypatch):
    monkeypatch.setenv("WATTSUP_DASHBOARD_PORT", "8765")
    services = {s.name: s for s in demo_services(DemoSettings())}
    assert services["dashboard"].url == "http://127.0.0.1:8765/"
    assert services["dashboard"].argv[-4:] == ["--host", "127.0.0.1", "--port", "8765"]
