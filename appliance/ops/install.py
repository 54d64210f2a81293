"""`dynamind install-service`: install the appliance as a systemd service, idempotently.

What it lays down (under ``--root``, "/" for a real install):

- ``PREFIX/venv``: a fresh virtual environment with the dynamind wheel installed in it
  (built from the source checkout this runs from, or given with ``--wheel``). It never
  points back at a development checkout or its interpreter's scripts. An upgrade builds
  the new environment beside the old one and swaps it in by renaming.
- the system user and group (systemd-sysusers, from ``/etc/sysusers.d/dynamind.conf``;
  useradd/groupadd where systemd-sysusers is missing);
- ``/etc/dynamind/dynamind.toml`` (0640 root:GROUP; an existing one is never touched);
- ``/var/lib/dynamind`` (0750 USER:GROUP), the unit's working and state directory;
- ``/etc/systemd/system/dynamind.service`` (0644), then ``systemctl daemon-reload`` when
  systemd runs and the root is "/".

Running it again changes nothing that is already right, and says so item by item.
``--uninstall`` removes the unit, the environment and the sysusers entry, and keeps the
config, the journal (trading records) and the user.

Only the standard library is used, so a bare ``python3 -m appliance.ops.install`` from a
checkout works as well as the ``dynamind`` command.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

FILES = Path(__file__).resolve().parent / "service_files"
CHECKOUT = Path(__file__).resolve().parents[2]  # the source tree, when run from one
UNIT_NAME = "dynamind.service"
WHEEL_STAMP = ".dynamind-wheel"  # sha256 of the wheel an environment was built from


class InstallError(RuntimeError):
    """A step that cannot be done; the message says which and why."""


@dataclass
class Target:
    """Where everything goes; every path is absolute as the service sees it."""

    root: Path = Path("/")
    prefix: Path = Path("/opt/dynamind")
    user: str = "dynamind"
    config_dir: Path = Path("/etc/dynamind")
    state_dir: Path = Path("/var/lib/dynamind")
    unit_dir: Path = Path("/etc/systemd/system")
    sysusers: Path = Path("/etc/sysusers.d/dynamind.conf")
    done: list[tuple[str, str]] = field(default_factory=list)  # (what, created/...)

    def at(self, path: Path) -> Path:
        """``path`` under the root."""
        return self.root / path.relative_to("/")

    @property
    def venv(self) -> Path:
        return self.prefix / "venv"

    @property
    def config(self) -> Path:
        return self.config_dir / "dynamind.toml"

    @property
    def unit(self) -> Path:
        return self.unit_dir / UNIT_NAME

    def note(self, what: Path | str, outcome: str) -> None:
        self.done.append((str(what), outcome))


# ---- files ------------------------------------------------------------------------------


def render_unit(t: Target) -> str:
    """The shipped unit with this target's prefix, user and paths."""
    text = (FILES / UNIT_NAME).read_text()
    text = text.replace("/opt/dynamind/", f"{t.prefix}/")
    text = text.replace("/etc/dynamind/dynamind.toml", str(t.config))
    return text.replace("User=dynamind", f"User={t.user}").replace(
        "Group=dynamind", f"Group={t.user}"
    )


def render_sysusers(t: Target) -> str:
    text = (FILES / "dynamind.sysusers").read_text()
    return text.replace("dynamind -:dynamind", f"{t.user} -:{t.user}").replace(
        "g dynamind -", f"g {t.user} -"
    )


def _ids(t: Target) -> tuple[int, int]:
    """(uid, gid) of the service user, from the root's own passwd and group files."""
    if t.root == Path("/"):
        try:
            return pwd.getpwnam(t.user).pw_uid, grp.getgrnam(t.user).gr_gid
        except KeyError:
            raise InstallError(f"user or group {t.user!r} does not exist") from None
    uid = _lookup(t.at(Path("/etc/passwd")), t.user)
    gid = _lookup(t.at(Path("/etc/group")), t.user)
    return uid, gid


def _lookup(table: Path, name: str) -> int:
    for line in table.read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name:
            return int(fields[2])
    raise InstallError(f"{name!r} is not in {table}")


def put_file(t: Target, path: Path, text: str, mode: int, owner: tuple[int, int]) -> None:
    """Write ``path`` if its content differs; set mode and owner either way."""
    real = t.at(path)
    real.parent.mkdir(parents=True, exist_ok=True)
    outcome = "unchanged"
    if not real.exists():
        outcome = "created"
    elif real.read_text() != text:
        outcome = "updated"
    if outcome != "unchanged":
        tmp = real.with_name(f".{real.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, real)
    outcome = _own(real, mode, owner, outcome)
    t.note(path, outcome)


def put_dir(t: Target, path: Path, mode: int, owner: tuple[int, int]) -> None:
    real = t.at(path)
    outcome = "unchanged" if real.is_dir() else "created"
    real.mkdir(parents=True, exist_ok=True)
    t.note(path, _own(real, mode, owner, outcome))


def _own(real: Path, mode: int, owner: tuple[int, int], outcome: str) -> str:
    st = real.stat()
    if (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (mode, *owner):
        os.chown(real, *owner)
        os.chmod(real, mode)
        if outcome == "unchanged":
            outcome = "fixed owner/mode"
    return outcome


# ---- steps ------------------------------------------------------------------------------


def ensure_user(t: Target) -> None:
    put_file(t, t.sysusers, render_sysusers(t), 0o644, (0, 0))
    sysusers = shutil.which("systemd-sysusers")
    if sysusers:
        cmd = [sysusers]
        if t.root != Path("/"):
            cmd.append(f"--root={t.root}")
        _run([*cmd, t.sysusers.name], "create the service user")
    elif t.root == Path("/"):
        _useradd(t)
    else:
        raise InstallError("--root needs systemd-sysusers to create the user in it")
    t.note(f"user {t.user}", "present")


def _useradd(t: Target) -> None:
    try:
        grp.getgrnam(t.user)
    except KeyError:
        _run(["groupadd", "--system", t.user], "create the service group")
    try:
        pwd.getpwnam(t.user)
    except KeyError:
        _run(
            ["useradd", "--system", "--gid", t.user, "--home-dir", str(t.state_dir),
             "--no-create-home", "--shell", "/usr/sbin/nologin", t.user],
            "create the service user",
        )  # fmt: skip


def build_wheel(out: Path, source: Path = CHECKOUT, pip_args: Sequence[str] = ()) -> Path:
    """A wheel of ``source``, by default the checkout this module runs from."""
    if not (source / "pyproject.toml").is_file():
        raise InstallError(
            f"no source checkout at {source} to build a wheel from: pass --wheel FILE"
        )
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *pip_args,
         "-w", str(out), str(source)],
        "build the wheel",
    )  # fmt: skip
    wheels = sorted(out.glob("dynamind-*.whl"))
    if not wheels:
        raise InstallError(f"pip built no dynamind wheel in {out}")
    return wheels[-1]


def ensure_venv(t: Target, wheel: Path, python: str, pip_args: list[str]) -> None:
    """A clean environment with ``wheel`` installed, and ``PREFIX/venv`` pointing at it.

    Each wheel gets its own ``venv-<hash>``: a venv's scripts name their interpreter by
    absolute path, and a running appliance spawns workers from it, so an upgrade must not
    change the files under a running supervisor. The link moves atomically; the previous
    environment is kept for the running service (and for a rollback), older ones go.
    """
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    name = f"venv-{digest[:12]}"
    env = t.at(t.prefix / name)
    stamp = env / WHEEL_STAMP
    link = t.at(t.venv)
    previous = os.readlink(link) if link.is_symlink() else None
    if stamp.is_file() and stamp.read_text().strip() == digest:
        outcome = "unchanged" if previous == name else "relinked"
    else:
        shutil.rmtree(env, ignore_errors=True)  # an earlier attempt that did not finish
        env.parent.mkdir(parents=True, exist_ok=True)
        _run([python, "-m", "venv", str(env)], "create the virtual environment")
        _run(
            [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", *pip_args,
             str(wheel)],
            f"install {wheel.name}",
        )  # fmt: skip
        stamp.write_text(digest + "\n")  # last: marks the environment complete
        outcome = "created" if previous is None else "upgraded"
    if previous != name:
        tmp = link.with_name("venv.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(name)
        os.replace(tmp, link)
    for old in t.at(t.prefix).glob("venv-*"):
        if old.name not in (name, previous):
            shutil.rmtree(old)
    t.note(f"{t.venv} -> {name}", outcome)


def ensure_config(t: Target, source: Path | None, owner: tuple[int, int]) -> None:
    put_dir(t, t.config_dir, 0o750, (0, owner[1]))
    real = t.at(t.config)
    if real.exists():
        # The operator's file: never overwritten, only its mode and owner kept right.
        t.note(t.config, _own(real, 0o640, (0, owner[1]), "kept (yours)"))
        return
    if source is None:
        source = CHECKOUT / "config" / "dynamind.toml"
        if not source.is_file():
            raise InstallError("no config to install: pass --config FILE")
    put_file(t, t.config, source.read_text(), 0o640, (0, owner[1]))


def daemon_reload(t: Target) -> None:
    if t.root != Path("/") or not Path("/run/systemd/system").is_dir():
        t.note("systemctl daemon-reload", "skipped (systemd is not running here)")
        return
    _run(["systemctl", "daemon-reload"], "reload systemd")
    t.note("systemctl daemon-reload", "done")


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip()
        raise InstallError(f"cannot {what}: {' '.join(cmd)} exited {res.returncode}: {detail}")


# ---- install and uninstall --------------------------------------------------------------


def install(
    t: Target,
    wheel: Path | None = None,
    config: Path | None = None,
    python: str | None = None,
    pip_args: list[str] | None = None,
) -> None:
    if os.geteuid() != 0:
        raise InstallError("installing a service needs root (run it with sudo)")
    python = python or getattr(sys, "_base_executable", sys.executable)
    ensure_user(t)
    owner = _ids(t)
    with tempfile.TemporaryDirectory(prefix="dynamind-wheel-") as tmp:
        ensure_venv(t, wheel or build_wheel(Path(tmp)), python, pip_args or [])
    ensure_config(t, config, owner)
    put_dir(t, t.state_dir, 0o750, owner)
    put_file(t, t.unit, render_unit(t), 0o644, (0, 0))
    daemon_reload(t)


def uninstall(t: Target) -> None:
    """Remove what install laid down, except config, state (the journal) and the user."""
    if os.geteuid() != 0:
        raise InstallError("removing a service needs root (run it with sudo)")
    if t.root == Path("/") and Path("/run/systemd/system").is_dir():
        active = subprocess.run(["systemctl", "is-active", "--quiet", UNIT_NAME]).returncode
        if active == 0:
            raise InstallError(f"{UNIT_NAME} is running: systemctl disable --now {UNIT_NAME}")
    for path in (t.unit, t.sysusers):
        real = t.at(path)
        t.note(path, "removed" if real.exists() else "absent")
        real.unlink(missing_ok=True)
    real = t.at(t.prefix)
    t.note(t.prefix, "removed" if real.exists() else "absent")
    shutil.rmtree(real, ignore_errors=True)
    daemon_reload(t)
    for kept in (t.config_dir, t.state_dir):
        t.note(kept, "kept")
    t.note(f"user {t.user}", f"kept (userdel {t.user} removes it)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root", type=Path, default=Path("/"), help="install under this directory (staging)"
    )
    p.add_argument("--prefix", type=Path, default=Path("/opt/dynamind"), help="where the venv goes")
    p.add_argument("--user", default="dynamind", help="system user and group of the service")
    p.add_argument(
        "--wheel", type=Path, help="install this wheel (default: build one from the checkout)"
    )
    p.add_argument(
        "--config",
        type=Path,
        help="config to install when /etc/dynamind/dynamind.toml does not exist yet "
        "(default: the checkout's config/dynamind.toml)",
    )
    p.add_argument(
        "--pip-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra pip install argument, e.g. --pip-arg=--no-index --pip-arg=--find-links=DIR "
        "for an offline install (repeatable)",
    )
    p.add_argument(
        "--uninstall", action="store_true", help="remove unit and venv (keeps config, journal)"
    )


def main(args: argparse.Namespace) -> int:
    t = Target(root=args.root.resolve(), prefix=args.prefix, user=args.user)
    try:
        if args.uninstall:
            uninstall(t)
        else:
            install(t, args.wheel, args.config, pip_args=args.pip_arg)
    except InstallError as exc:
        _report(t)
        print(f"install-service: {exc}", file=sys.stderr)
        return 1
    _report(t)
    if not args.uninstall:
        print(
            "next: systemctl enable --now dynamind (or systemctl restart dynamind to run a new "
            "version); dynamind status -c /etc/dynamind/dynamind.toml"
        )
    return 0


def _report(t: Target) -> None:
    for what, outcome in t.done:
        print(f"  {outcome:<18} {what}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m appliance.ops.install")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
