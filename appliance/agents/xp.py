"""The array namespace agent kernels are written against: CuPy on a usable GPU, else NumPy.

Kernels call ``xp.exp``, ``xp.where``, ... on whatever module :func:`get_xp` returns, so one
implementation serves both. Anything that leaves the kernel (intents pushed onto a queue,
snapshots written to disk) goes through :func:`to_host` first.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np


@functools.cache
def _probe_cupy() -> tuple[ModuleType | None, str]:
    """Import CuPy and run one tiny kernel; (module, "") when usable, else (None, why).

    Cached: probing initialises a CUDA context, which is slow and needs doing once.
    """
    try:
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no CUDA device"
        # A device can be listed yet unusable (driver mismatch, exclusive mode, MIG
        # without a slice): only running a kernel proves it works.
        int(cupy.arange(4).sum().get())
    except Exception as exc:  # not installed, no driver, no device, broken runtime
        return None, f"{type(exc).__name__}: {exc}"
    return cupy, ""


def get_xp(prefer: str = "auto") -> ModuleType:
    """The array module to run kernels on.

    ``auto``: CuPy when importable and a device runs a kernel, else NumPy.
    ``numpy``: always NumPy. ``cupy``: CuPy or a RuntimeError saying why not (for
    deployments that must not silently run on the CPU).
    """
    if prefer == "numpy":
        return np
    if prefer not in ("auto", "cupy"):
        raise ValueError(f"unknown array backend {prefer!r}: expected auto, numpy or cupy")
    cupy, why = _probe_cupy()
    if cupy is not None:
        return cupy
    if prefer == "cupy":
        raise RuntimeError(f"CuPy requested but not usable ({why})")
    return np


def to_host(array: Any) -> np.ndarray:
    """A NumPy array with the contents of ``array`` (a device copy for CuPy, else as is)."""
    get = getattr(array, "get", None)
    if get is not None and not isinstance(array, np.ndarray):
        return get()
    return np.asarray(array)
