"""A step that needs the registry or the broker waits for it with backoff, in a few log lines."""

from __future__ import annotations

import asyncio
import logging

import pytest

from schemas.registry import RegistryUnavailableError
from stream_processors.emitted_anomalies import ReadBackUnavailable
from stream_processors.retrying import Patient


def test_a_step_is_tried_again_with_backoff_until_its_dependency_is_back(caplog):
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    failures = iter([RegistryUnavailableError("down")] * 6 + [ReadBackUnavailable("down")] * 2)

    def step() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "decoded"

    with caplog.at_level(logging.INFO, logger="test.patient"):
        result = asyncio.run(Patient(logging.getLogger("test.patient"), sleep=sleep).run("decode readings", step))
    assert result == "decoded"
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]  # doubling, at most 30 s
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "cannot decode readings" in lines[0] and lines[1].startswith("recovered")


def test_other_errors_are_not_swallowed():
    async def boom() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        asyncio.run(Patient().run("x", boom))
