"""Waiting for something a real service does in its own time, with a message that says what."""

from __future__ import annotations

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
