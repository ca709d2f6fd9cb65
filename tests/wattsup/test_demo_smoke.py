"""`DEMO_SECONDS=N make demo` brings the pipeline up, streams readings, and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request

import pytest

from deploy.kafka.launcher import free_port
from foundation.kafka_settings import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_make_demo_runs_for_demo_seconds_and_streams_readings(tmp_path):
    env = {
        **os.environ,
        # Long enough for the stream worker to start and score on a busy 2-core machine (it took 24 s to
        # start there once, and a 25 s demo stopped it before it scored anything).
        "DEMO_SECONDS": "45",
        # The demo trains its detector on history of its own fleet's size (at most 200 meters): with the
        # default 200 that training was most of this test (4 minutes on a busy 2-core machine); 40
        # meters train the same way, and every check below is the same.
        "WATTSUP_DEMO_METERS": "40",
        "WATTSUP_BROKER_PORT": str(free_port()),
        "WATTSUP_BROKER_CONTROLLER_PORT": str(free_port()),
        "WATTSUP_BROKER_DATA_DIR": str(tmp_path / "kafka"),
        "WATTSUP_DEMO_LOG_DIR": str(tmp_path / "logs"),
        "WATTSUP_DASHBOARD_PORT": str(dashboard_port := free_port()),
        "WATTSUP_DASHBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'dashboard' / 'wattsup.db'}",
        "WATTSUP_STREAM_METRICS_PORT": str(stream_port := free_port()),
        "WATTSUP_STREAM_WEB_PORT": str(free_port()),
        "WATTSUP_STREAM_DATA_DIR": str(tmp_path / "stream"),
        "WATTSUP_MODEL_DIR": str(tmp_path / "models"),
        "WATTSUP_FORECAST_METRICS_PORT": str(free_port()),
        "WATTSUP_LAG_EXPORTER_PORT": str(free_port()),
    }
    with open(tmp_path / "stdout", "w+") as out, open(tmp_path / "stderr", "w+") as err:
        process = subprocess.Popen(["make", "--no-print-directory", "demo"], cwd=PROJECT_ROOT, env=env,
                                   stdout=out, stderr=err, text=True)
        # The dashboard must answer while the demo runs (polled; the demo stops itself after DEMO_SECONDS).
        # So must the stream worker, which scores the simulated readings (its Prometheus endpoint).
        dashboard_ok, scored, deadline = False, 0.0, time.monotonic() + 300
        while not (dashboard_ok and scored > 0) and process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/healthz", timeout=2) as response:
                    dashboard_ok = response.status == 200
                with urllib.request.urlopen(f"http://127.0.0.1:{stream_port}/metrics", timeout=2) as response:
                    found = re.search(r"^wattsup_stream_readings_processed_total (\S+)$", response.read().decode(), re.M)
                    scored = float(found.group(1)) if found else 0.0
            except OSError:
                pass
            time.sleep(0.5)
        returncode = process.wait(timeout=max(deadline - time.monotonic(), 1))
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(process.args, returncode, out.read(), err.read())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "WattsUp demo is running" in result.stdout
    assert dashboard_ok, "the dashboard never answered /healthz while the demo ran"
    assert scored > 0, "the stream worker scored no reading while the demo ran"
    assert list((tmp_path / "models").iterdir()), "the demo trains a detector when none exists"
    assert f"http://127.0.0.1:{dashboard_port}/" in result.stdout
    readings = int(re.search(r"wattsup\.readings=(\d+)", result.stdout).group(1))
    assert readings > 0
    # the summary counts incidents beside the anomalies they group
    incidents = re.search(r"incidents: (\d+) \((\d+) open, (\d+) closed\), grouping (\d+) anomalies", result.stdout)
    assert incidents, result.stdout[-2000:]
    total, still_open, closed, grouped = map(int, incidents.groups())
    assert total == still_open + closed and grouped >= total
    assert "sent=" in (tmp_path / "logs" / "simulator.log").read_text()
