"""A process's memory as Linux reports it in ``/proc/<pid>/status``, for the benches that watch workers."""

from __future__ import annotations

from pathlib import Path


def status_mib(pid: int, field: str) -> float:
    """``field`` of the process's status (``VmRSS``: resident now, ``VmHWM``: the peak) in MiB; NaN if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")
