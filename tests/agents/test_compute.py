"""The array-namespace switch falls back to NumPy where CuPy is unusable."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from appliance.agents.xp import get_xp, to_host


def test_numpy_on_request_and_host_copies():
    assert get_xp("numpy") is np
    a = np.arange(3)
    assert to_host(a) is a
    assert isinstance(to_host([1, 2]), np.ndarray)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy installed")
def test_auto_falls_back_and_cupy_request_says_why():
    assert get_xp() is np
    with pytest.raises(RuntimeError, match="CuPy requested but not usable"):
        get_xp("cupy")
    with pytest.raises(ValueError, match="unknown array backend"):
        get_xp("torch")
