"""Run Python code with a small /dev/shm of its own: a tmpfs in a private mount namespace.

The mount exists only inside the child's namespace (``unshare -m`` makes mounts private),
so the machine's /dev/shm is never touched. Needs root (or user namespaces) and the
``unshare`` tool; tests skip with the reason when the machine cannot do it.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_MOUNT = 'mount -t tmpfs -o size="$0",mode=1777 tmpfs /dev/shm && exec "$@"'


def run_with_small_shm(size: str, *argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``argv`` (a program and its arguments) with a fresh /dev/shm of ``size`` (e.g. 2m)."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", _MOUNT, size, *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=180,
    )


def python_with_small_shm(size: str, code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` (which prints one JSON object last) with a small /dev/shm; its object."""
    res = run_with_small_shm(size, sys.executable, "-c", code, *args)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout.strip().splitlines()[-1])


@functools.cache
def _unavailable() -> str | None:
    if shutil.which("unshare") is None:
        return "the unshare tool is not installed"
    res = run_with_small_shm("1m", "true")
    if res.returncode != 0:
        return f"cannot mount a private tmpfs on /dev/shm here: {res.stderr.strip()}"
    return None


def require_small_shm() -> None:
    reason = _unavailable()
    if reason:
        pytest.skip(f"needs a private small /dev/shm: {reason}")
