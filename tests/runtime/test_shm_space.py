"""The appliance's shared memory as an operator meets it: how much, whether it fits, who reads.

Space tests run with a small /dev/shm of their own (a tmpfs in a private mount namespace,
see tests/shm/tmpfs.py) and skip where the machine cannot mount one.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from appliance.config import ConfigError, load_config
from appliance.runtime import layout
from appliance.runtime.exits import Exit
from appliance.runtime.segments import SegmentSet
from appliance.shm import list_names
from tests.harness import write_config
from tests.shm.tmpfs import python_with_small_shm, require_small_shm, run_with_small_shm
from tests.shm.users import NOBODY

MEASURE = """
import json, os, sys
from appliance.config import load_config
from appliance.runtime.segments import SegmentSet

def used():
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize

segments = SegmentSet(load_config(sys.argv[1]))
before = used()
segments.create()
during = used()
segments.destroy()
print(json.dumps({"used": during - before, "left": os.listdir("/dev/shm")}))
"""


def test_the_computed_need_is_what_the_segments_take(tmp_path) -> None:
    require_small_shm()
    path, _ = write_config(tmp_path)
    out = python_with_small_shm("64m", MEASURE, str(path))
    assert out["used"] == layout.shm_bytes(load_config(path))
    assert out["left"] == []


def test_run_refuses_early_when_dev_shm_is_too_small(tmp_path) -> None:
    require_small_shm()
    path, _ = write_config(tmp_path)
    need = layout.shm_bytes(load_config(path))
    assert need > 2 << 20  # more than the 2 MiB tmpfs below
    cli = [sys.executable, "-m", "appliance.ops.cli", "run", "--config", str(path)]
    # --duration: a start that is not refused stops by itself (today's code ran on,
    # its workers dying of SIGBUS and being restarted)
    res = run_with_small_shm("2m", *cli, "--duration", "20", cwd=tmp_path)
    assert res.returncode == Exit.NO_SHM_SPACE, res.stderr
    assert f"needs {need / 2**20:.1f} MiB of shared memory" in res.stderr
    assert "/dev/shm has only 2.0 MiB free" in res.stderr
    assert "nothing started" in res.stderr and "Traceback" not in res.stderr


def test_check_config_reports_the_shared_memory_needed(tmp_path) -> None:
    path, _ = write_config(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "appliance.ops.cli", "check-config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    need = layout.shm_bytes(load_config(path))
    assert f"shared memory needed: {need / 2**20:.1f} MiB (" in res.stdout


def test_operator_group_owns_every_segment_and_semaphore(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: segments are given to a group the test user is not in")
    path, instance = write_config(tmp_path)
    text = path.read_text().replace('wait = "block"', 'wait = "block"\noperator_group = "nogroup"')
    path.write_text(text)
    segments = SegmentSet(load_config(path))
    try:
        segments.create()
        entries = list_names(instance)
        assert len(entries) > 5
        for entry in entries:
            st = os.stat(f"/dev/shm/{entry}")
            mode = 0o660 if entry.startswith("sem.") else 0o640
            assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, mode), entry
    finally:
        segments.destroy()


def test_an_operator_group_that_does_not_exist_is_a_config_error(tmp_path) -> None:
    path, _ = write_config(tmp_path)
    text = path.read_text().replace('wait = "block"', 'wait = "block"\noperator_group = "nope-x"')
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"operator_group.*no group named 'nope-x'"):
        load_config(path)
