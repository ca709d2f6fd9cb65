"""`DEMO_SECONDS=N make demo` brings the pipeline up, streams readings, and exits 0."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from deploy.kafka.launcher import free_port
from wattsup.kafka_settings import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_make_demo_runs_for_demo_seconds_and_streams_readings(tmp_path):
    env = {
        **os.environ,
        "DEMO_SECONDS": "25",
        "WATTSUP_BROKER_PORT": str(free_port()),
        "WATTSUP_BROKER_CONTROLLER_PORT": str(free_port()),
        "WATTSUP_BROKER_DATA_DIR": str(tmp_path / "kafka"),
        "WATTSUP_DEMO_LOG_DIR": str(tmp_path / "logs"),
    }
    result = subprocess.run(["make", "--no-print-directory", "demo"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "WattsUp demo is running" in result.stdout
    readings = int(re.search(r"wattsup\.readings=(\d+)", result.stdout).group(1))
    assert readings > 0
    assert "sent=" in (tmp_path / "logs" / "simulator.log").read_text()
