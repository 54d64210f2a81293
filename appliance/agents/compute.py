"""Where agent kernels run: ``compute.backend = auto | numpy | numba | cupy``.

- ``numpy``: the readable reference. Per tick, one vectorised update of the agents of the
  tick's symbol (a Python loop over ticks): slow, but easy to check by eye.
- ``numba``: compiled CPU kernels (``@njit``, cached on disk) that loop over the ticks of a
  batch and over agents without temporaries per tick.
- ``cupy``: CUDA kernels (``cupy.RawKernel``), one thread per agent, one launch per batch;
  agent state lives on the GPU.
- ``auto``: cupy on a GPU that runs a kernel, else numba, else numpy.

Asking for a backend that cannot run here is a :class:`BackendError` saying why.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("auto", "numpy", "numba", "cupy")


class BackendError(RuntimeError):
    """A compute backend was asked for that cannot run on this machine."""


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


@functools.cache
def _probe_numba() -> str:
    """ "" when numba imports, else why not."""
    try:
        import numba  # noqa: F401
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


@dataclass(frozen=True)
class Backend:
    """A resolved backend: its name, its array module, and how it builds CUDA kernels.

    ``raw_kernel(source, name)`` is ``cupy.RawKernel`` on a GPU; tests give the cupy code
    path a CPU build of the same CUDA source instead (tests/agents/cuda_cpu.py).
    """

    name: str
    xp: ModuleType = np
    raw_kernel: Callable[[str, str], Any] | None = None

    def kernel(self, source: str, name: str) -> Any:
        if self.raw_kernel is None:
            raise BackendError(f"backend {self.name!r} has no CUDA kernels")
        return self.raw_kernel(source, name)


def available() -> dict[str, str]:
    """Each concrete backend and "" when it can run here, else why it cannot."""
    cupy, why = _probe_cupy()
    return {"numpy": "", "numba": _probe_numba(), "cupy": "" if cupy is not None else why}


def resolve(name: str | Backend = "auto", supported: tuple[str, ...] = BACKENDS) -> Backend:
    """The backend for ``name``, restricted to the ``supported`` ones of a population kind.

    ``auto`` picks the best one that is both supported and runnable; a concrete name that
    is unknown, unsupported by the kind or not runnable here is a BackendError.
    """
    if isinstance(name, Backend):
        if name.name not in supported:
            raise BackendError(f"backend {name.name!r} not supported (supported: {supported})")
        return name
    if name not in BACKENDS:
        raise BackendError(f"unknown compute backend {name!r}: expected {', '.join(BACKENDS)}")
    if name == "auto":
        for candidate in ("cupy", "numba", "numpy"):
            if candidate in supported and not available()[candidate]:
                return resolve(candidate, supported)
        raise BackendError(f"none of the supported backends {supported} can run here")
    if name not in supported:
        raise BackendError(
            f"compute backend {name!r} is not supported by this population kind "
            f"(it supports {', '.join(s for s in supported if s != 'auto')})"
        )
    why = available()[name]
    if why:
        raise BackendError(f"compute backend {name!r} requested but not usable ({why})")
    if name == "cupy":
        cupy, _ = _probe_cupy()
        return Backend("cupy", cupy, _cupy_raw_kernel)
    return Backend(name)


def _cupy_raw_kernel(code: str, name: str) -> Any:
    # No fused multiply-add: it rounds differently from the CPU kernels' separate multiply
    # and add, and every backend must give the reference's signals bit for bit.
    cupy, _ = _probe_cupy()
    return cupy.RawKernel(code, name, options=("--fmad=false",))


def to_host(array: Any) -> np.ndarray:
    """A NumPy array with the contents of ``array`` (a device copy for CuPy, else as is)."""
    get = getattr(array, "get", None)
    if get is not None and not isinstance(array, np.ndarray):
        return get()
    return np.asarray(array)
