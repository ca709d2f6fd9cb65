"""Fetch, start and stop a real schema registry (Apicurio Registry) without Docker.

Apicurio Registry publishes its ready-to-run Quarkus distribution on Maven Central
(``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``: ``quarkus-run.jar`` plus ``lib/``),
so the same Maven that fetches Kafka fetches the registry; ``deploy/registry/pom.xml`` pins it.
It serves the Confluent Schema Registry API under ``/apis/ccompat/v7``, which is all
:class:`schemas.registry.RegistrySerde` (and confluent-kafka's client) needs.

The registry runs as a plain ``java`` process bound to 127.0.0.1 with in-memory storage (H2),
so every start is empty: right for tests and the demo, not for keeping schemas. Apicurio 3.x is
compiled for Java 21, so a JDK 21+ is looked up even where the default ``java`` is older.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import httpx

from deploy.background_process import BackgroundProcess, free_port, port_is_free
from deploy.kafka.launcher import require_tool
from foundation.kafka_settings import PROJECT_ROOT

log = logging.getLogger(__name__)

REGISTRY_DIR = Path(__file__).resolve().parent
POM = REGISTRY_DIR / "pom.xml"
DEFAULT_CACHE_DIR = PROJECT_ROOT / ".cache"
CCOMPAT_PATH = "/apis/ccompat/v7"
JAVA_SEARCH_DIRS = (Path("/usr/lib/jvm"), Path("/usr/local/lib/jvm"), Path("/opt/java"), Path("/opt"))


class RegistryError(RuntimeError):
    """The registry could not be fetched, started or reached; the message says what to do."""


def registry_version(pom: Path = POM) -> str:
    """The Apicurio Registry version pinned in ``pom.xml``."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:apicurio.version", ns)
    if node is None or not (node.text or "").strip():
        raise RegistryError(f"{pom} does not set the apicurio.version property")
    return node.text.strip()


def required_java(version: str) -> int:
    """Minimum Java feature release for an Apicurio version (3.x classes are Java 21 bytecode)."""
    return 21 if int(version.split(".")[0]) >= 3 else 17


def _runner_jar(dist: Path) -> Path | None:
    """``quarkus-run.jar`` (3.x layout) or ``*-runner.jar`` (2.x layout) in an unpacked distribution."""
    if (dist / "quarkus-run.jar").is_file():
        return dist / "quarkus-run.jar"
    return next(iter(sorted(dist.glob("*-runner.jar"))), None)


def fetch_registry(cache_dir: Path = DEFAULT_CACHE_DIR, *, quiet: bool = True) -> Path:
    """Resolve the registry distribution with Maven and unpack it into ``cache_dir/registry``.

    Idempotent and safe to call from parallel test processes: a lock serialises fetches, and a
    marker holding the pom it came from makes an unchanged pom cost nothing. The tarball is
    unpacked with Python rather than ``dependency:unpack`` because the Maven default
    dependency plugin (2.8) cuts the long PAX file names of this archive.
    """
    version = registry_version()
    root = cache_dir / "registry"
    dist = root / f"apicurio-registry-{version}"
    marker = dist / ".resolved-from"
    pom_text = POM.read_text()
    if marker.is_file() and marker.read_text() == pom_text and _runner_jar(dist):
        return dist
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == pom_text and _runner_jar(dist):
            return dist  # another process fetched it while we waited
        mvn = require_tool("mvn", "install Apache Maven (Debian: apt-get install maven) to fetch the schema registry.")
        download = root / "download"
        shutil.rmtree(download, ignore_errors=True)
        cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={download}"]
        if quiet:
            cmd.insert(1, "-q")
        log.info("fetching Apicurio Registry %s with Maven into %s", version, root)
        started = time.monotonic()
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RegistryError(
                f"Maven could not resolve Apicurio Registry {version} (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )
        archives = sorted(download.glob("apicurio-registry-app-*-all.tar.gz"))
        if not archives:
            raise RegistryError(f"Maven finished but left no apicurio-registry-app-*-all.tar.gz in {download}")
        partial = root / f".unpacking-{version}"
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(archives[0]) as archive:
            archive.extractall(partial, filter="data")
        shutil.rmtree(dist, ignore_errors=True)
        partial.rename(dist)
        shutil.rmtree(download, ignore_errors=True)
        if _runner_jar(dist) is None:
            raise RegistryError(f"the unpacked registry in {dist} has no quarkus-run.jar or *-runner.jar")
        marker.write_text(pom_text)
        log.info("Apicurio Registry %s unpacked in %s (%.1f s)", version, dist, time.monotonic() - started)
    return dist


@lru_cache(maxsize=None)
def java_feature_version(java: str) -> int | None:
    """Feature release of a ``java`` binary (17, 21, 25, ...), or None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java(min_version: int, preferred: str | Path | None = None) -> str:
    """A ``java`` binary of at least ``min_version``.

    Tried in order: ``preferred`` (a binary or a JDK home), ``WATTSUP_REGISTRY_JAVA_HOME``,
    ``JAVA_HOME``, ``java`` on PATH, then the newest JDK under the usual install directories
    (Debian's ``/usr/lib/jvm`` holds several side by side).
    """
    explicit = [preferred, os.environ.get("WATTSUP_REGISTRY_JAVA_HOME"), os.environ.get("JAVA_HOME")]
    candidates: list[str] = []
    for item in explicit:
        if item:
            path = Path(item)
            candidates.append(str(path / "bin" / "java") if path.is_dir() else str(path))
    if shutil.which("java"):
        candidates.append(shutil.which("java") or "java")
    installed = [p / "bin" / "java" for d in JAVA_SEARCH_DIRS if d.is_dir() for p in d.iterdir()]
    installed = [str(p) for p in installed if p.is_file() and os.access(p, os.X_OK)]
    candidates += sorted(installed, key=lambda j: java_feature_version(j) or 0, reverse=True)
    seen: list[str] = []
    for java in candidates:
        if java in seen:
            continue
        seen.append(java)
        version = java_feature_version(java)
        if version is not None and version >= min_version:
            return java
    found = ", ".join(f"{j} ({java_feature_version(j) or '?'})" for j in seen) or "none"
    raise RegistryError(
        f"Apicurio Registry needs Java {min_version}+; found {found}. Install one "
        f"(Debian: apt-get install openjdk-{min_version}-jre-headless) or point WATTSUP_REGISTRY_JAVA_HOME at it."
    )


@dataclass
class RegistryLauncher:
    """One Apicurio Registry on ``host:port`` with in-memory storage; log and pid in ``data_dir``.

    Quarkus also opens a management port (health, metrics) on 0.0.0.0:9000 by default; it is
    moved to ``host`` and a free port so two registries (a test run next to the demo) never
    collide and nothing listens beyond loopback.
    """

    data_dir: Path
    port: int = 8081
    host: str = "127.0.0.1"
    management_port: int | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    heap: str = "384m"
    java: str | None = None
    extra_properties: dict[str, str] = field(default_factory=dict)
    process: BackgroundProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.process = BackgroundProcess("the schema registry", self.log_file, self.pid_file, RegistryError)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """What ``WATTSUP_KAFKA_SCHEMA_REGISTRY_URL`` / ``RegistrySerde`` want: the Confluent-compatible API."""
        return self.base_url + CCOMPAT_PATH

    @property
    def log_file(self) -> Path:
        return self.data_dir / "registry.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "registry.pid"

    def fetch(self) -> Path:
        return fetch_registry(self.cache_dir)

    def system_properties(self) -> dict[str, str]:
        assert self.management_port is not None
        props = {
            "quarkus.http.host": self.host,
            "quarkus.http.port": str(self.port),
            "quarkus.management.host": self.host,
            "quarkus.management.port": str(self.management_port),
            # In-memory H2 (the 3.x default, stated so a changed default cannot surprise us).
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            "apicurio.datasource.url": f"jdbc:h2:mem:wattsup_{uuid.uuid4().hex}",
            "apicurio.storage.snapshot.location": str(self.data_dir / "tmp"),
            # One line per HTTP request would dwarf everything else in the log.
            "quarkus.http.access-log.enabled": "false",
            "quarkus.otel.sdk.disabled": "true",
        }
        props.update(self.extra_properties)
        return props

    def command(self) -> list[str]:
        dist = self.fetch()
        runner = _runner_jar(dist)
        assert runner is not None
        java = self.java or find_java(required_java(registry_version()))
        return [
            java, f"-Xmx{self.heap}", "-XX:+UseSerialGC",
            # C1 only: the registry answers a handful of requests, so JIT warm-up is wasted start time.
            "-XX:TieredStopAtLevel=1",
            f"-Djava.io.tmpdir={self.data_dir / 'tmp'}",
            *(f"-D{k}={v}" for k, v in self.system_properties().items()),
            "-jar", str(runner),
        ]

    # -- lifecycle -----------------------------------------------------------------------
    def pid(self) -> int | None:
        return self.process.pid()

    def is_running(self) -> bool:
        return self.process.is_running()

    def start(self, timeout: float = 120.0) -> None:
        """Start in the background and wait until ``GET /apis/ccompat/v7/subjects`` answers."""
        if self.is_running():
            log.info("schema registry already running (pid %s) on %s", self.pid(), self.url)
            return
        if not port_is_free(self.port, self.host):
            raise RegistryError(
                f"port {self.port} on {self.host} is already in use: stop whatever listens there "
                f"or choose another port (e.g. {free_port()})."
            )
        if self.management_port is None:
            self.management_port = free_port(self.host)
        (self.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        started = time.monotonic()
        pid = self.process.spawn(cmd, cwd=self.data_dir)
        log.info("started Apicurio Registry (pid %s), log %s", pid, self.log_file)
        self.wait_ready(timeout)
        log.info("schema registry ready on %s after %.1f s", self.url, time.monotonic() - started)

    def answers(self) -> bool:
        try:
            return httpx.get(self.url + "/subjects", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.process.wait_until(self.answers, timeout, where=f"on {self.url}")

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop gracefully (SIGTERM), then SIGKILL; returns whether a process was running."""
        return self.process.stop(timeout)

    def __enter__(self) -> RegistryLauncher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
