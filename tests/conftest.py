"""Fixtures shared by the whole test run: the network guard and the appliance fixture."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.harness import Appliance
from tests.loopback import make_sim  # noqa: F401  (the loopback exchange fixture)

_GUARD_DIR = Path(__file__).parent / "netguard"
sys.path.insert(0, str(_GUARD_DIR))
import netguard  # noqa: E402  (lives beside this file, also imported by child processes)

netguard.install()


@pytest.fixture(scope="session", autouse=True)
def _guard_children(tmp_path_factory):
    """Child processes install the guard too, and record refusals in a file we read."""
    log = tmp_path_factory.mktemp("netguard") / "violations.log"
    log.touch()
    old = {k: os.environ.get(k) for k in ("PYTHONPATH", netguard.ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_GUARD_DIR), old["PYTHONPATH"]]))
    os.environ[netguard.ENV] = str(log)
    yield log
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _no_network(_guard_children):
    """Fail any test that tried a non-loopback address, here or in a child process."""
    before = len(netguard.violations)
    seen = _guard_children.read_text()
    yield
    tried = netguard.violations[before:] + _guard_children.read_text()[len(seen) :].splitlines()
    if tried:
        pytest.fail("non-loopback connections attempted:\n" + "\n".join(tried))


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
