"""``wattsup demo``: the whole pipeline on one machine, stopped cleanly on Ctrl-C.

Starts the embedded Kafka broker (unless one already runs in the data dir), creates the topics,
then runs every service as its own ``wattsup ...`` child process, the way they run in
production, and prints where to look. On Ctrl-C, SIGTERM or after ``DEMO_SECONDS`` it stops
the children and then the broker it started, and exits 0; if a service dies it stops the rest
and exits 1, so a smoke test notices.

The simulated clock (:class:`DemoClock`): the simulator plays 900 simulated seconds per wall
second, and every door refuses readings stamped more than a day past the wall clock (a wrong
meter clock). So a new demo starts its fleet in the past, as far back as it will play (its
``DEMO_SECONDS`` times the speedup, or ``backfill_days``), replays that at full speed and then goes
on in real time, never ahead of now. A second run on the same ``var/`` continues the same fleet
(seed and start kept in ``var/demo/simulator.json``) from the newest reading on the readings topic,
so the stored state (the stream worker's, the dashboard's) is never ahead of the new readings.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from deploy.kafka.launcher import LocalKafkaNode
from deploy.kafka.settings import BrokerSettings
from foundation.kafka_settings import PROJECT_ROOT
from foundation.topics import ensure_topics

log = logging.getLogger(__name__)


class DemoSettings(BaseSettings):
    """What the demo runs (``WATTSUP_DEMO_*``; ``DEMO_SECONDS`` bounds the run)."""

    model_config = SettingsConfigDict(env_prefix="WATTSUP_DEMO_", env_file=".env", extra="ignore")

    seconds: float | None = Field(None, validation_alias="DEMO_SECONDS")
    meters: int = 200
    interval: str = "15m"
    speedup: float = 900.0
    """Simulated seconds per wall-clock second: 900 plays one 15-minute interval per second."""
    backfill_days: float = Field(7.0, gt=0)
    """Without ``DEMO_SECONDS``, how far in the past a new demo's fleet starts: 7 days play in about 11
    minutes at 900x (and match the forecaster's 7-day history); then the fleet runs in real time."""
    max_backfill_days: float = Field(28.0, gt=0)
    """At most this far back, however long ``DEMO_SECONDS`` is: the readings topic keeps 7 days by
    default, and older replayed data only costs start-up time."""
    seed: int = 42
    """The simulated fleet's seed: the same seed and start give the same fleet, which a restart continues."""
    log_dir: Path = PROJECT_ROOT / "var" / "demo"
    broker: BrokerSettings = Field(default_factory=BrokerSettings)


@dataclass
class Service:
    name: str
    argv: list[str]
    url: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)


class DemoStateError(RuntimeError):
    """The stored demo state cannot be continued (readings from an earlier demo stamped in the future)."""


@dataclass
class DemoClock:
    """Where the demo's simulated fleet starts, and where this run continues it."""

    start_ms: int
    """Start of the fleet's first interval (UTC ms), kept across restarts."""
    resume_from_ms: int | None = None
    """Newest reading already on the topic (its delivery slot is sent again: the readings already
    stored are recognised as duplicates); None for a new fleet."""

    def simulator_args(self, settings: DemoSettings) -> list[str]:
        args = ["--start", _iso(self.start_ms), "--seed", str(settings.seed), "--behind-wall-clock"]
        if self.resume_from_ms is not None:
            args += ["--resume-from", _iso(self.resume_from_ms)]
        return args


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def plan_clock(settings: DemoSettings, newest_reading_ms: int | None, now_ms: int) -> DemoClock:
    """Continue the fleet stored under ``settings.log_dir`` or start a new one in the past.

    * readings on the topic and the fleet that wrote them recorded: continue it from the newest reading;
    * no readings: a new fleet starting as far back as this run will play (stored for the next run);
    * readings, but no record of their fleet (an older demo): a new fleet starting after them, unless
      they lie beyond the future tolerance (an older demo's clock ran ahead): then starting clean is
      the only way, and :class:`DemoStateError` says how.
    """
    from foundation.timeutil import parse_interval
    from schemas.limits import FUTURE_TOLERANCE_MS

    interval_ms = int(parse_interval(settings.interval).total_seconds() * 1000)
    path = settings.log_dir / "simulator.json"
    fleet = {"meters": settings.meters, "interval": settings.interval, "seed": settings.seed}
    stored: dict[str, Any] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
    if newest_reading_ms is not None and stored.get("fleet") == fleet and "start_ms" in stored:
        log.info("continuing the simulated fleet started at %s from its newest reading at %s",
                 _iso(stored["start_ms"]), _iso(newest_reading_ms))
        return DemoClock(int(stored["start_ms"]), newest_reading_ms)
    played_s = settings.seconds * settings.speedup if settings.seconds else settings.backfill_days * 86400
    start_ms = now_ms - int(min(played_s, settings.max_backfill_days * 86400) * 1000)
    if newest_reading_ms is not None:
        if newest_reading_ms > now_ms + FUTURE_TOLERANCE_MS:
            raise DemoStateError(
                f"the readings topic holds readings up to {_iso(newest_reading_ms)}, more than a day ahead of the "
                f"clock (an earlier demo's simulated clock ran ahead); a new fleet would be late for every meter. "
                f"Start clean: stop the demo and remove its state (make clean, or the var/ directories: broker, "
                f"stream, dashboard, demo)")
        start_ms = max(start_ms, newest_reading_ms)
        log.info("the readings topic holds readings of an unrecorded fleet up to %s; starting a new fleet after them",
                 _iso(newest_reading_ms))
    start_ms = start_ms // interval_ms * interval_ms
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fleet": fleet, "start_ms": start_ms, "start": _iso(start_ms)}) + "\n")
    return DemoClock(start_ms)


def demo_services(settings: DemoSettings, clock: DemoClock | None = None) -> list[Service]:
    """The services the demo runs, each a ``wattsup`` sub-command; ``clock`` places the simulated fleet
    (default: starting now)."""
    from dashboard.settings import DashboardSettings
    from deploy.lag_exporter.settings import LagExporterSettings
    from forecaster.settings import ForecastSettings
    from stream_processors.settings import StreamSettings

    wattsup = [sys.executable, "-m", "wattsup.cli"]
    dashboard = DashboardSettings()
    stream = StreamSettings()
    lag = LagExporterSettings()
    browse_host = "127.0.0.1" if dashboard.host in ("0.0.0.0", "::", "") else dashboard.host
    return [
        Service(
            "simulator",
            [*wattsup, "produce", "simulate", "--meters", str(settings.meters), "--interval", settings.interval,
             "--days", "0", "--speedup", str(settings.speedup), "--batch-by", "feeder",
             *(clock.simulator_args(settings) if clock else [])],
        ),
        Service("stream", [*wattsup, "stream"], url=f"http://{stream.worker_host}:{stream.metrics_port}/metrics"),
        Service("lag-exporter", [*wattsup, "lag-exporter"],
                url=f"http://{lag.host}:{lag.port}/metrics"),
        Service("dashboard", [*wattsup, "dashboard", "--host", dashboard.host, "--port", str(dashboard.port)],
                url=f"http://{browse_host}:{dashboard.port}/"),
        # One run a minute (15 simulated hours at speedup 900), a day ahead, one fitting process so
        # the stream worker keeps a core; the first simulated days get the logged seasonal-naive fallback.
        Service("forecaster", [*wattsup, "forecast", "schedule", "--every", "60s", "--history", "7d",
                               "--horizon", "24h", "--workers", "1"],
                url=f"http://127.0.0.1:{ForecastSettings().metrics_port}/metrics"),
    ]


class Demo:
    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        b = settings.broker
        self.node = LocalKafkaNode(data_dir=b.data_dir, port=b.port, controller_port=b.controller_port,
                                   cache_dir=b.cache_dir, heap=b.heap)
        self.started_broker = False
        self.services = demo_services(settings)
        self.stop_requested = threading.Event()

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["WATTSUP_KAFKA_BOOTSTRAP_SERVERS"] = self.node.bootstrap_servers
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self) -> None:
        if not self.node.is_running():
            self.node.start(timeout=self.settings.broker.startup_timeout_seconds)
            self.started_broker = True
        connection = self.settings.broker.kafka.model_copy(update={"bootstrap_servers": self.node.bootstrap_servers})
        ensure_topics(connection, self.settings.broker.topics)
        from readings.history import resume_point_ms

        clock = plan_clock(self.settings, resume_point_ms(connection, self.settings.broker.topics.readings),
                           int(time.time() * 1000))
        self.services = demo_services(self.settings, clock)
        self.ensure_model()
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        env = self._child_env()
        for service in self.services:
            out = open(self.settings.log_dir / f"{service.name}.log", "ab")  # noqa: SIM115 - lives with the child
            service.process = subprocess.Popen(service.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            log.info("started %s (pid %s), log %s", service.name, service.process.pid, out.name)

    def ensure_model(self) -> None:
        """Give the stream worker a detector: train one on simulated history if none exists yet, or
        only one this WattsUp cannot load (an earlier detector format).

        The history is the demo fleet's kind (same interval) but another seed than the live
        simulator, so the worker judges readings its model has not seen.
        """
        from models.artifacts import ModelMismatchError, load_model
        from models.settings import ModelSettings

        model_dir = ModelSettings().dir
        try:
            load_model(model_dir)
            return
        except FileNotFoundError:
            pass
        except ModelMismatchError as exc:  # a model from an earlier WattsUp: train a current one
            log.info("%s; training a new one for the demo", exc)
        from foundation.timeutil import parse_interval
        from models.training import replay_forecasts, train_and_save
        from simulation.fleet import FleetConfig, simulate_fleet

        started = time.monotonic()
        history = simulate_fleet(FleetConfig(meters=min(self.settings.meters, 200), days=7,
                                             interval=parse_interval(self.settings.interval), seed=1001)).readings
        # the demo runs the forecaster, so the detector learns forecast residuals too
        from detection.calendar import FleetCalendar
        from foundation.fleet_clock import FleetClock

        model = train_and_save(history, model_dir, source="demo: simulated history, seed 1001",
                               forecasts=replay_forecasts(history), calendar=FleetCalendar.from_clock(FleetClock()))
        log.info("trained detector %s for the demo in %.1f s", model.version, time.monotonic() - started)

    def summary(self) -> str:
        lines = ["", "WattsUp demo is running:", f"  Kafka broker      {self.node.bootstrap_servers}  (data {self.node.data_dir})"]
        for s in self.services:
            lines.append(f"  {s.name:<17} {s.url or 'pid ' + str(s.process.pid if s.process else '-')}")
        lines += [f"  logs              {self.settings.log_dir}",
                  "  watch offsets     wattsup broker status",
                  "Press Ctrl-C to stop everything." if self.settings.seconds is None
                  else f"Stopping after {self.settings.seconds:.0f} s.", ""]
        return "\n".join(lines)

    def offsets_report(self) -> str:
        from foundation.topics import topic_offsets

        t = self.settings.broker.topics
        connection = self.settings.broker.kafka.model_copy(update={"bootstrap_servers": self.node.bootstrap_servers})
        try:
            offsets = topic_offsets(connection, [t.readings, t.anomalies, t.incidents, t.forecasts, t.dead_letters])
        except Exception as exc:  # noqa: BLE001 - a report, not a reason to fail the stop
            return f"(could not read topic offsets: {exc})"
        report = "records per topic: " + ", ".join(f"{name}={sum(ends)}" for name, ends in offsets.items())
        return report + "\n" + self.incidents_report(connection)

    def incidents_report(self, connection: Any) -> str:
        """How many incidents the anomalies made: what an operator is alerted to, rather than every reading."""
        from feedback.topic import read_incidents
        from schemas.serde import make_serde

        try:
            incidents = read_incidents(connection, self.settings.broker.topics,
                                       make_serde(connection.schema_registry_url, **connection.registry_config()))
        except Exception as exc:  # noqa: BLE001 - a report, not a reason to fail the stop
            return f"(could not read the incidents: {exc})"
        open_now = sum(1 for r in incidents.values() if r["status"] == "open")
        anomalies = sum(r["readings"] for r in incidents.values())
        return (f"incidents: {len(incidents)} ({open_now} open, {len(incidents) - open_now} closed), grouping "
                f"{anomalies} anomalies")

    def run(self) -> int:
        deadline = None if self.settings.seconds is None else time.monotonic() + self.settings.seconds
        while not self.stop_requested.is_set():
            for s in self.services:
                if s.process is not None and s.process.poll() is not None:
                    log.error("%s exited with code %s; see %s", s.name, s.process.returncode,
                              self.settings.log_dir / f"{s.name}.log")
                    return 1
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            self.stop_requested.wait(0.5)
        return 0

    def stop(self) -> None:
        for s in reversed(self.services):
            if s.process is not None and s.process.poll() is None:
                s.process.send_signal(signal.SIGTERM)
        for s in reversed(self.services):
            if s.process is None:
                continue
            try:
                s.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in 20 s; killing it", s.name)
                s.process.kill()
                s.process.wait()
        if self.node.is_running():
            sys.stdout.write(self.offsets_report() + "\n")
        if self.started_broker:
            self.node.stop()
        log.info("demo stopped")


def run_demo(settings: DemoSettings | None = None) -> int:
    demo = Demo(settings or DemoSettings())

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        demo.stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        demo.start()
        sys.stdout.write(demo.summary() + "\n")
        sys.stdout.flush()
        return demo.run()
    except DemoStateError as exc:
        log.error("%s", exc)
        return 2
    finally:
        demo.stop()
