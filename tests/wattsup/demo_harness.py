"""The demo's services on a broker of their own, as `wattsup demo` runs them, for the outage and
power-cut tests: free ports, everything under one temp dir, metrics and logs read from outside."""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.kafka.launcher import free_port
from wattsup.demo import Demo, DemoSettings

SERVICE_PORTS = {"stream": "WATTSUP_STREAM_METRICS_PORT", "dashboard": "WATTSUP_DASHBOARD_PORT",
                 "forecaster": "WATTSUP_FORECAST_METRICS_PORT", "lag-exporter": "WATTSUP_LAG_EXPORTER_PORT"}


def demo_environment(root: Path, model_dir: Path, meters: int = 40) -> dict[str, str]:
    """What `wattsup demo` and its children read, pointing at ``root`` and at free ports."""
    return {
        "WATTSUP_BROKER_PORT": str(free_port()), "WATTSUP_BROKER_CONTROLLER_PORT": str(free_port()),
        "WATTSUP_BROKER_DATA_DIR": str(root / "kafka"), "WATTSUP_BROKER_HEAP": "384m",
        "WATTSUP_DEMO_LOG_DIR": str(root / "demo"), "WATTSUP_DEMO_METERS": str(meters),
        "WATTSUP_DASHBOARD_PORT": str(free_port()),
        "WATTSUP_DASHBOARD_DATABASE_URL": f"sqlite:///{root / 'dashboard' / 'wattsup.db'}",
        "WATTSUP_STREAM_METRICS_PORT": str(free_port()), "WATTSUP_STREAM_WEB_PORT": str(free_port()),
        "WATTSUP_STREAM_DATA_DIR": str(root / "stream"), "WATTSUP_MODEL_DIR": str(model_dir),
        "WATTSUP_FORECAST_METRICS_PORT": str(free_port()), "WATTSUP_FORECAST_DATA_DIR": str(root / "forecaster"),
        "WATTSUP_LAG_EXPORTER_PORT": str(free_port()),
    }


@dataclass
class RunningDemo:
    demo: Demo
    env: dict[str, str]

    @classmethod
    def start(cls, env: dict[str, str]) -> RunningDemo:
        """Start the broker (if not running), topics and every service, as `wattsup demo` does."""
        demo = Demo(DemoSettings())
        demo.start()
        return cls(demo, env)

    def url(self, service: str, path: str = "/metrics") -> str:
        return f"http://127.0.0.1:{self.env[SERVICE_PORTS[service]]}{path}"

    def metric(self, service: str, name: str, labels: str = "") -> float | None:
        """Sum of a metric's samples (whose labels contain ``labels``); None if the service does not answer.

        The lag exporter reads the cluster when scraped: with the broker away that takes its request
        timeout (twice, 10 s each), so it gets a longer wait than the others.
        """
        timeout = 30 if service == "lag-exporter" else 5
        try:
            text = urllib.request.urlopen(self.url(service), timeout=timeout).read().decode()
        except OSError:
            return None
        return sum(float(v) for found_labels, v in re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)
                   if labels in (found_labels or ""))

    def api(self, path: str) -> dict | None:
        import json

        try:
            return json.loads(urllib.request.urlopen(self.url("dashboard", path), timeout=5).read())
        except (OSError, ValueError):
            return None

    def exited(self) -> list[str]:
        return [s.name for s in self.demo.services if s.process is not None and s.process.poll() is not None]

    def log(self, service: str) -> str:
        return (Path(self.env["WATTSUP_DEMO_LOG_DIR"]) / f"{service}.log").read_text(errors="replace")

    def stop_simulator(self) -> None:
        simulator = next(s for s in self.demo.services if s.name == "simulator")
        simulator.process.send_signal(signal.SIGTERM)
        simulator.process.wait(60)

    def kill_everything(self) -> None:
        """A power cut: ``kill -9`` every service's process group and the broker, nothing flushed."""
        for service in self.demo.services:
            if service.process is not None and service.process.poll() is None:
                os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait()
        self.demo.node.kill()

    def stop(self) -> None:
        self.demo.stop()
