"""Fixtures for the runtime tests: a unique shared-memory instance (the shm tests' fixture),
and a valid appliance config."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Config, load_config
from tests.harness import write_config
from tests.shm.conftest import instance  # noqa: F401  (a fixture, shared)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The harness's test config (two hosts, two symbols), loaded."""
    path, _ = write_config(tmp_path)
    return load_config(path)
