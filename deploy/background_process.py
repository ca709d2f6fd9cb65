"""Run a Java service (the Kafka broker, the schema registry) as a background process we can find again.

Both launchers need the same things: a pid file so a later command (``wattsup broker stop``)
finds the process, a log file whose tail explains a failed start, a wait that notices when the
process dies instead of waiting out the timeout, and a stop that escalates from SIGTERM to
SIGKILL. Processes start in their own session so Ctrl-C in a terminal does not reach them
before the launcher has stopped what depends on them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class BackgroundProcess:
    """A detached process with a pid file and a log file.

    ``error`` is the exception type raised on failure, so each launcher keeps its own
    (``BrokerError``, ``RegistryError``); ``label`` names the service in messages.
    """

    label: str
    log_file: Path
    pid_file: Path
    error: type[Exception] = RuntimeError
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def spawn(self, cmd: list[str], cwd: Path) -> int:
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, cwd=cwd)
        self.pid_file.write_text(str(self._proc.pid))
        return self._proc.pid

    def wait_until(self, ready: Callable[[], bool], timeout: float, where: str, poll: float = 0.2) -> None:
        """Wait until ``ready()``; fail early, with the log's tail, if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise self.error(
                    f"{self.label} exited with code {self._proc.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(poll)
        raise self.error(
            f"{self.label} did not come up {where} within {timeout:.0f} s; "
            f"last lines of {self.log_file}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log written)"

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; returns whether a process was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            _reap(pid)
            time.sleep(0.1)
        if pid_alive(pid):
            log.warning("%s (pid %s) ignored SIGTERM for %.0f s; killing it", self.label, pid, timeout)
            self.kill()
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        self._proc = None
        return True

    def kill(self) -> None:
        """``kill -9``, as a crash would; returns once the process is gone."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)
