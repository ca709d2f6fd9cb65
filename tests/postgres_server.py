"""A throwaway PostgreSQL server for tests: initdb in a temp dir, pg_ctl start on a free port, as the broker is.

Debian's server binaries (``make system-packages`` installs the ``postgresql`` package and tells it
not to create a cluster of its own), never a system service. The server trusts connections from
127.0.0.1 only and keeps its socket in its own data dir. PostgreSQL refuses to run as root, so when
the tests run as root (CI) it runs as the ``postgres`` user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploy.kafka.launcher import free_port

SUPERUSER = "wattsup"
START_TIMEOUT_SECONDS = 60


def server_binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (newest Debian version first), or None."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # pg_ctl finds postgres beside itself
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]), reverse=True)
    return Path(found[0]).parent if found else None


@dataclass
class LocalPostgres:
    bin_dir: Path
    data_dir: Path
    port: int
    run_as: str | None
    """The user the server runs as (``postgres`` when the tests run as root), None: this process's user."""

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the server's ``postgres`` database (the fixtures create their own databases)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stdout}{result.stderr}{tail}")

    @classmethod
    def start(cls) -> LocalPostgres:
        bin_dir = server_binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL's server is not installed: `make system-packages` installs Debian's "
                               "postgresql package")
        # Not under pytest's temp dir: as root that is private to root, and the server runs as postgres.
        data_dir = Path(tempfile.mkdtemp(prefix="wattsup-postgres-"))
        run_as = None
        if os.geteuid() == 0:
            run_as = "postgres"
            user = pwd.getpwnam(run_as)
            os.chown(data_dir, user.pw_uid, user.pw_gid)
        server = cls(bin_dir, data_dir, free_port(), run_as)
        server._run(str(bin_dir / "initdb"), "-D", str(data_dir / "data"), "-U", SUPERUSER, "--auth=trust",
                    "--encoding=UTF8", "--no-sync")
        options = (f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data_dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")  # a test's data need no crash safety
        server._run(str(bin_dir / "pg_ctl"), "-D", str(data_dir / "data"), "-l", str(data_dir / "server.log"),
                    "-o", options, "-w", "-t", str(START_TIMEOUT_SECONDS), "start")
        return server

    def stop(self) -> None:
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)
