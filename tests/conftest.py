"""Fixtures shared by the whole test run: the network guard, the appliance fixture, and
builders of the TICK / INTENT batches that the execution-side and venue tests feed in."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from appliance.model.records import INTENT, REPORT, TICK, OrderType, ReportKind, Side, TickKind
from appliance.shm.files import SHM_DIR
from appliance.shm.segment import reclaim_stale
from tests.harness import MARKET_MAKERS, Appliance
from tests.loopback import make_sim, make_venue  # noqa: F401  (loopback exchange fixtures)

_GUARD_DIR = Path(__file__).parent / "netguard"
sys.path.insert(0, str(_GUARD_DIR))
import netguard  # noqa: E402  (lives beside this file, also imported by child processes)

netguard.install()


# Test instances are named t<pid>x<hex>, <pid> the test process that made it
# (harness.Appliance, tests/shm/conftest.py, tests/cluster/instances.py).
_TEST_INSTANCE = re.compile(r"(?:sem\.)?(t\d[0-9a-z]*)\.")
_MAKER = re.compile(r"t(\d+)x")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Reclaim what killed test runs left in shared memory (their cleanup never ran): every
    test instance whose owners are dead, once, before any test. Only in the controlling
    process, so no worker of this run has created anything yet. An instance whose test
    process lives is another run's, alongside this one, and may be stale on purpose (a
    crash or an undrained stop, then the start that takes over): left to it."""
    if hasattr(session.config, "workerinput"):
        return
    for instance in sorted({m[1] for e in os.listdir(SHM_DIR) if (m := _TEST_INSTANCE.match(e))}):
        maker = _MAKER.match(instance)
        if maker is None or not psutil.pid_exists(int(maker[1])):
            reclaim_stale(instance)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos",
        type=int,
        default=0,
        metavar="N",
        help="run the chaos test (tests/runtime/test_chaos.py) with N random faults; "
        "without it that test is skipped",
    )
    parser.addoption(
        "--cluster-long",
        action="store_true",
        help="tests/cluster: longer trading and more faults per test (minutes)",
    )


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
def app(tmp_path, request):
    """A test appliance (not started); parametrize indirectly with overrides of its config."""
    a = Appliance(tmp_path, **getattr(request, "param", {}))
    yield a
    if not a.kill_all():  # a clean stop must leave nothing behind
        assert a.leftovers() == [], "segments left behind"


class SmallFs:
    """A size-limited tmpfs of the test's own: ``fill`` it up, ``free`` it again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Write until the filesystem refuses another byte."""
        with self._filler.open("ab", buffering=0) as f:
            for chunk in (1 << 16, 4096, 512, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


@pytest.fixture
def small_fs(tmp_path_factory) -> Iterator[SmallFs]:
    """A 16 MiB tmpfs mounted at a new directory, unmounted afterwards; skipped where this
    process may not mount (not root, or no CAP_SYS_ADMIN in its namespace)."""
    path = tmp_path_factory.mktemp(f"smallfs-{uuid.uuid4().hex[:6]}")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield SmallFs(path)
    finally:
        # lazy: a process the test killed may still be letting go of its files
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture(scope="session")
def compiled_mm_kernels():
    """The market makers' numba kernels compiled into the disk cache: an agent host that
    compiles them on its first batch misses heartbeats on a busy machine, and is killed."""
    from appliance.agents import TickBatch, make_population

    pop = make_population("market_making", 2, [0], {"qty": 1.0}, 1, "numba")
    reports = np.zeros(1, REPORT)
    reports["kind"], reports["side"], reports["final"] = ReportKind.ACK, 1, 1
    pop.on_reports(reports)
    n = 2
    bid, ask = np.full(n, 100.0), np.full(n, 100.1)
    pop.step(TickBatch(np.zeros(n, np.uint16), bid, ask, np.ones(n, np.int64)), 1)


@pytest.fixture
def mm_app(tmp_path, compiled_mm_kernels):
    """An appliance whose host-b also runs market makers (harness.MARKET_MAKERS)."""
    a = Appliance(tmp_path, extra=MARKET_MAKERS)
    yield a
    if not a.kill_all():
        assert a.leftovers() == [], "segments left behind"


def _quotes(
    symbol: int | list[int],
    bid: float | list[float],
    ask: float | list[float],
    size: float = 10.0,
) -> np.ndarray:
    sym = np.atleast_1d(symbol)
    t = np.zeros(len(sym), TICK)
    t["symbol"] = sym
    t["bid"], t["ask"] = bid, ask
    t["bid_size"] = t["ask_size"] = size
    t["kind"] = TickKind.QUOTE
    return t


@pytest.fixture
def quotes() -> Callable[..., np.ndarray]:
    """quotes(symbol, bid, ask, size=10.0): QUOTE ticks, one per symbol given (lists
    broadcast together)."""
    return _quotes


@pytest.fixture
def trade() -> Callable[..., np.ndarray]:
    """trade(symbol, price, bid, ask, size=1.0): one buyer-initiated TRADE tick."""

    def make(symbol: int, price: float, bid: float, ask: float, size: float = 1.0) -> np.ndarray:
        t = _quotes(symbol, bid, ask)
        t["kind"] = TickKind.TRADE
        t["last_price"] = price
        t["last_size"] = size
        t["side"] = Side.BUY
        return t

    return make


@pytest.fixture
def intents() -> Callable[[list[dict]], np.ndarray]:
    """intents(rows): INTENT records from dicts; defaults: host 0, population 0, agent 0,
    symbol 0, BUY MARKET qty 1, seq = position in the list."""

    def make(rows: list[dict]) -> np.ndarray:
        out = np.zeros(len(rows), INTENT)
        for i, r in enumerate(rows):
            out[i]["seq"] = r.get("seq", i)
            out[i]["host"] = r.get("host", 0)
            out[i]["population"] = r.get("population", 0)
            out[i]["agent"] = r.get("agent", 0)
            out[i]["symbol"] = r.get("symbol", 0)
            out[i]["side"] = r.get("side", Side.BUY)
            out[i]["order_type"] = r.get("order_type", OrderType.MARKET)
            out[i]["qty"] = r.get("qty", 1.0)
            out[i]["limit_price"] = r.get("limit_price", 0.0)
            out[i]["created_ns"] = r.get("created_ns", 1)
        return out

    return make
