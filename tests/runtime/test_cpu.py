"""CPU layout planning."""

from __future__ import annotations

import pytest

from appliance.runtime.cpu import plan
from appliance.shm import WaitStrategy


def test_auto_gives_each_process_a_core_and_spins_when_there_are_enough():
    p = plan(["feed", "execution"], "auto", {}, "auto", available=[0, 1, 2, 3])
    assert p.cores == {"feed": [1], "execution": [2]}
    assert not p.shared and p.strategy is WaitStrategy.SPIN


def test_auto_on_two_cores_shares_and_blocks():
    procs = ["execution", "host-a", "host-b", "feed"]
    p = plan(procs, "auto", {}, "auto", available=[0, 1])
    assert p.shared and p.strategy is WaitStrategy.BLOCK
    assert sorted(c for cs in p.cores.values() for c in cs) == [0, 0, 1, 1]
    assert "4 processes on 2 cores" in p.note


def test_explicit_sharing_never_spins_under_auto():
    cores = {"execution": [1], "host-a": [1], "feed": [2]}
    p = plan(list(cores), "explicit", cores, "auto", available=list(range(8)))
    assert p.shared and p.strategy is WaitStrategy.BLOCK


def test_explicit_core_outside_the_allowed_set_is_an_error():
    with pytest.raises(ValueError, match=r"cpu.cores.feed names cores \[9\]"):
        plan(["feed"], "explicit", {"feed": [9]}, "auto", available=[0, 1])
