"""`dynamind install-service` into a staging root: files, modes, owners, idempotence; the
unit as installed checked by systemd-analyze (verify, security)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.ops import install
from appliance.runtime.exits import NEEDS_A_PERSON

ROOT_DIR = Path(__file__).resolve().parents[2]
ANALYZE = shutil.which("systemd-analyze")
UNITS = Path("/usr/lib/systemd/system")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="installing a service needs root")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is missing (apt-get install systemd; make test does)"
)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory, worker_id: str) -> Path:
    """One wheel for all of xdist's workers, built from a copy of the tree: two builds at
    once in the checkout's build/ folder fail each other. Built with the test extras'
    setuptools: pip's isolated build env would download it, retrying under the network guard."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # this run's, common to workers
    with open(shared / "wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = shared / "wheel"
        if not out.is_dir():
            src = shared / "wheel-src"
            skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "var", "__pycache__")
            shutil.copytree(ROOT_DIR, src, ignore=skip)
            install.build_wheel(out, src, ["--no-build-isolation"])
        return next(out.glob("dynamind-*.whl"))


def _install(root: Path, wheel: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.ops.cli", "install-service", "--root", str(root),
         "--wheel", str(wheel), "--pip-arg=--no-deps", *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> Path:
    if os.geteuid() != 0:
        pytest.skip("installing a service needs root")
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is missing (apt-get install systemd; make test does)")
    root = tmp_path_factory.mktemp("root")
    res = _install(root, wheel)
    assert res.returncode == 0, res.stdout + res.stderr
    return root


def install_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("dynamind")


def _ids(root: Path, name: str) -> tuple[int, int]:
    def field(table: str) -> int:
        lines = (root / "etc" / table).read_text().splitlines()
        line = next(x for x in lines if x.startswith(f"{name}:"))
        return int(line.split(":")[2])

    return field("passwd"), field("group")


def _mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_mode & 0o7777, st.st_uid, st.st_gid


@needs_root
def test_install_lays_down_a_clean_venv_user_config_and_unit(installed):
    root = installed
    uid, gid = _ids(root, "dynamind")
    assert uid != 0 and gid != 0
    venv = root / "opt/dynamind/venv"
    assert venv.is_symlink() and os.readlink(venv).startswith("venv-")
    script = (venv / "bin/dynamind").read_text().splitlines()[0]
    # the console script runs the installed environment's interpreter, not a checkout's
    assert script == f"#!{root}/opt/dynamind/{os.readlink(venv)}/bin/python"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert str(ROOT_DIR) not in cfg and "include-system-site-packages = false" in cfg
    # (installed with --no-deps, offline: the package is there, its dependencies are not)
    code = "import importlib.metadata as m; print(m.version('dynamind'))"
    res = subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == install_version(), res.stderr

    assert _mode(root / "etc/dynamind") == (0o750, 0, gid)
    assert _mode(root / "etc/dynamind/dynamind.toml") == (0o640, 0, gid)
    assert _mode(root / "var/lib/dynamind") == (0o750, uid, gid)
    assert _mode(root / "etc/systemd/system/dynamind.service") == (0o644, 0, 0)
    unit = (root / "etc/systemd/system/dynamind.service").read_text()
    run = "ExecStart=/opt/dynamind/venv/bin/dynamind run --config /etc/dynamind/dynamind.toml"
    assert run in unit
    assert "UMask=0027" in unit


@needs_root
def test_install_again_changes_nothing_and_keeps_the_operators_config(installed, wheel):
    root = installed
    cfg = root / "etc/dynamind/dynamind.toml"
    cfg.write_text(cfg.read_text() + "\n# edited by the operator\n")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "venv-" not in str(p)}
    res = _install(root, wheel)
    assert res.returncode == 0, res.stderr
    outcomes = [line.split()[0] for line in res.stdout.splitlines() if line.startswith("  ")]
    assert set(outcomes) <= {"unchanged", "present", "kept", "skipped"}, res.stdout
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "venv-" not in str(p)}
    assert after == before


@needs_root
def test_uninstall_keeps_config_and_journal(tmp_path, wheel):
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is missing")
    assert _install(tmp_path, wheel).returncode == 0
    (tmp_path / "var/lib/dynamind/journal.sqlite").write_text("x")
    res = _install(tmp_path, wheel, "--uninstall")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "opt/dynamind").exists()
    assert not (tmp_path / "etc/systemd/system/dynamind.service").exists()
    assert (tmp_path / "etc/dynamind/dynamind.toml").exists()
    assert (tmp_path / "var/lib/dynamind/journal.sqlite").exists()


def test_unit_prevents_restarts_exactly_for_the_codes_that_need_a_person():
    unit = install.render_unit(install.Target())
    line = next(x for x in unit.splitlines() if x.startswith("RestartPreventExitStatus="))
    assert sorted(int(c) for c in line.split("=", 1)[1].split()) == sorted(NEEDS_A_PERSON)
    # and the README says the same codes (it listed 15, which systemd does restart)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    said = re.search(r"`RestartPreventExitStatus=([\d ]+)`", readme).group(1)
    assert sorted(int(c) for c in said.split()) == sorted(NEEDS_A_PERSON)


@needs_root
@needs_analyze
def test_systemd_analyze_verify_is_clean_on_the_installed_unit(installed):
    if not UNITS.is_dir():
        pytest.skip(f"{UNITS} is missing: verify needs systemd's own units")
    units = installed / "usr/lib/systemd"
    if not units.exists():  # the units verify resolves dependencies against (sysinit.target)
        units.mkdir(parents=True)
        shutil.copytree(UNITS, units / "system", symlinks=True)
    res = subprocess.run(
        [ANALYZE, "verify", f"--root={installed}", "/etc/systemd/system/dynamind.service"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


@needs_analyze
def test_systemd_analyze_security_scores_under_4(tmp_path):
    unit = tmp_path / "dynamind.service"
    unit.write_text(install.render_unit(install.Target()))
    res = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    m = re.search(r"Overall exposure level for dynamind\.service: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m[1]) < 4.0, res.stdout
