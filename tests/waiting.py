"""Waiting for real services in tests: for what they do in their own time, and for them to stop."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any


def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", poll: float = 0.2) -> Any:
    """Call ``check`` until it returns something truthy (returned); fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


def holds_for(seconds: float, check: Callable[[], Any], what: str = "condition", poll: float = 1.0) -> None:
    """Call ``check`` for ``seconds`` (an outage the test must last out, not a wait for something to
    happen), failing as soon as it returns something falsy, naming ``what``."""
    deadline = time.monotonic() + seconds

    def held_to_the_end() -> bool:
        assert check(), f"{what} no longer holds"
        return time.monotonic() >= deadline

    wait_until(held_to_the_end, timeout=seconds + 2 * poll, what=f"{seconds:.0f} s of {what}", poll=poll)


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM (a clean stop flushes and commits), then SIGKILL if it does not end in ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def closed_port() -> int:
    """A local port nobody listens on: connections there can only fail."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
