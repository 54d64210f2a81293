"""Backend selection: numpy always runs, numba here, cupy only on a usable GPU."""

from __future__ import annotations

import pytest

from appliance.agents import EmaCross
from appliance.agents.compute import BackendError, available, resolve, to_host


def test_concrete_backends_and_clear_errors():
    assert resolve("numpy").name == "numpy"
    assert resolve("numba").name == "numba"
    assert resolve("auto").name in ("numba", "cupy")
    with pytest.raises(BackendError, match="unknown compute backend 'torch'"):
        resolve("torch")
    with pytest.raises(BackendError, match="not supported by this population kind"):
        resolve("numba", ("numpy",))
    assert resolve("auto", ("numpy",)).name == "numpy"
    assert isinstance(to_host([1, 2]).sum(), object)


@pytest.mark.skipif(available()["cupy"] == "", reason="a usable GPU is here")
def test_cupy_without_gpu_says_why():
    with pytest.raises(BackendError, match="compute backend 'cupy' requested but not usable"):
        resolve("cupy")
    with pytest.raises(BackendError, match="not usable"):
        EmaCross(4, [0], {}, seed=0, backend="cupy")
