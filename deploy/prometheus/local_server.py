"""Run Debian's Prometheus server locally against given scrape targets, and query it.

Used by the tests and ``bench/grafana_panels.py`` to prove every Grafana panel's query returns
data from a real Prometheus scraping the running pipeline. The configuration is generated (the
targets are the ephemeral ports of the processes under test) and storage lives in a temp dir.
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deploy.background_process import BackgroundProcess, free_port

log = logging.getLogger(__name__)


class PrometheusError(RuntimeError):
    """Prometheus could not be started or answered a query with an error."""


@dataclass
class LocalPrometheus:
    data_dir: Path
    targets: dict[str, list[str]]
    """Job name -> ``host:port`` targets."""
    scrape_interval: str = "1s"
    rule_files: list[Path] = field(default_factory=list)
    """Alerting/recording rule files to load (evaluated every scrape interval)."""
    port: int = field(default_factory=free_port)
    binary: str = "prometheus"
    process: BackgroundProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = BackgroundProcess("Prometheus", self.data_dir / "prometheus.log",
                                         self.data_dir / "prometheus.pid", PrometheusError)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(Path(p).resolve()) for p in self.rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                               for job, targets in self.targets.items()],
        }

    def start(self, timeout: float = 30.0) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise PrometheusError("prometheus is not installed (Debian: apt-get install prometheus)")
        config_file = self.data_dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(self.config()))
        self.process.spawn([
            binary, f"--config.file={config_file}", f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
        ], cwd=self.data_dir)
        self.process.wait_until(self._ready, timeout, where=self.url, poll=0.2)

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector (``[{"metric": {...}, "value": [ts, "1.0"]}, ...]``)."""
        data = self._get("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its health and last evaluation error."""
        return [rule for group in self._get("/api/v1/rules")["groups"] for rule in group["rules"]]

    def active_targets(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/targets")["activeTargets"]

    def stop(self) -> None:
        self.process.stop(timeout=15)
