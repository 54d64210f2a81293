"""Fixtures shared by the whole-appliance tests."""

from __future__ import annotations

import pytest

from tests.harness import Appliance


@pytest.fixture
def app(tmp_path):
    a = Appliance(tmp_path)
    yield a
    if not a.kill_all():  # a clean stop must leave nothing behind
        assert a.leftovers() == [], "segments left behind"


def pytest_addoption(parser):
    parser.addoption(
        "--cluster-long",
        action="store_true",
        help="tests/cluster: longer trading and more faults per test (minutes)",
    )
