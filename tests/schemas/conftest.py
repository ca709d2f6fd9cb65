"""A real schema registry (Apicurio Registry, fetched with Maven) for the registry tests.

Session-scoped: it starts in about 3-4 s and holds nothing between tests that a fresh
``RegistrySerde`` would not look up again. It could move to tests/conftest.py if other
folders' tests need a registry.
"""

from __future__ import annotations

import logging
import time

import pytest

from deploy.kafka.launcher import free_port
from deploy.registry.launcher import RegistryLauncher

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory):
    """A running registry on a free loopback port; ``.url`` is its Confluent-compatible API."""
    registry = RegistryLauncher(data_dir=tmp_path_factory.mktemp("registry"), port=free_port())
    started = time.monotonic()
    registry.start(timeout=120)
    log.info("schema registry for the tests started in %.1f s", time.monotonic() - started)
    try:
        yield registry
    finally:
        registry.stop()
