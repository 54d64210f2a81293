"""A /dev/shm too small for a segment: an error at creation that says how much, never SIGBUS."""

from __future__ import annotations

from tests.shm.tmpfs import python_with_small_shm, require_small_shm

FILL_A_4_MIB_RING = """
import json, os
from appliance.shm import BroadcastRing, SegmentError
from tests.shm.procs import REC, make

out = {}
try:
    ring = BroadcastRing.create("space", "ticks", REC, 1 << 16)  # 4 MiB of records
    ring.writer().write(make(0, 1 << 16))  # a sparse segment dies here of SIGBUS
    out["written"] = True
    ring.destroy()
except SegmentError as exc:
    out["error"] = str(exc)
out["left"] = sorted(os.listdir("/dev/shm"))
print(json.dumps(out))
"""


def test_a_segment_larger_than_the_free_space_is_refused_at_creation() -> None:
    require_small_shm()
    out = python_with_small_shm("2m", FILL_A_4_MIB_RING)
    assert "written" not in out
    assert "segment /space.ticks needs 4.0 MiB" in out["error"]
    assert "/dev/shm has only 2.0 MiB free" in out["error"]
    assert out["left"] == []  # neither the segment nor any semaphore
