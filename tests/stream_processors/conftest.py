"""Fixtures that run real `wattsup stream` worker processes against the test broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.kafka.launcher import free_port
from wattsup.kafka_settings import TopicNames


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    metrics_port: int
    log_path: Path

    def metric(self, name: str) -> float:
        """Sum of a metric's samples (0 if absent or the worker is not answering)."""
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return 0.0
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    def wait_for(self, name: str, at_least: float, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker exited: {self.log_path.read_text()[-3000:]}"
            value = self.metric(name)
            if value >= at_least:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{name} reached only {value} (wanted {at_least}); log:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill_9(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class WorkerFactory:
    kafka: object
    tmp: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, topics: TopicNames, model_dir: Path, app_id: str, name: str = "worker") -> WorkerProcess:
        port = free_port()
        env = {
            **os.environ,
            "WATTSUP_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            **{f"WATTSUP_TOPIC_{k.upper()}": str(v) for k, v in topics.model_dump().items()},
            "WATTSUP_STREAM_APP_ID": app_id,
            "WATTSUP_STREAM_DATA_DIR": str(self.tmp / f"{app_id}-{name}"),
            "WATTSUP_STREAM_MODEL_DIR": str(model_dir),
            "WATTSUP_STREAM_METRICS_PORT": str(port),
            "WATTSUP_STREAM_WEB_PORT": str(free_port()),
            "WATTSUP_STREAM_MODEL_POLL_SECONDS": "1",
        }
        log_path = self.tmp / f"{app_id}-{name}-{len(self.started)}.log"
        process = subprocess.Popen([sys.executable, "-m", "wattsup.cli", "stream"], env=env,
                                   stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(process, port, log_path)
        self.started.append(worker)
        return worker


@pytest.fixture
def stream_workers(kafka, tmp_path):
    factory = WorkerFactory(kafka, tmp_path)
    yield factory
    for worker in factory.started:
        worker.stop()
