"""Run the CUDA kernels of appliance/agents/cuda.py on the CPU, for machines without a GPU.

The kernel source is compiled as C++ with a few CUDA names defined (blockIdx, atomicAdd,
__global__, ...) and launched by looping over blocks and threads in order. It checks the
kernels' arithmetic and the cupy launch code with NumPy arrays in place of device
arrays; it cannot show races between threads (the real GPU run does that).
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from appliance.agents.compute import Backend

PRELUDE = r"""
#include <cmath>
#include <cstring>
using std::floor; using std::ceil; using std::fabs;
using std::sqrt; using std::fmin; using std::fmax;
struct Dim3 { unsigned x; };
static Dim3 blockIdx, blockDim, threadIdx;
#define __global__
#define __device__
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    unsigned long long old = *p; *p += v; return old;
}
static inline double __longlong_as_double(long long x) {
    double d; std::memcpy(&d, &x, 8); return d;
}
extern "C" void dm_set_thread(unsigned b, unsigned t, unsigned bd) {
    blockIdx.x = b; threadIdx.x = t; blockDim.x = bd;
}
"""

_BUILD = Path(tempfile.gettempdir()) / "dynamind-cuda-cpu"


def compiler() -> str | None:
    return shutil.which("g++")


class CpuRawKernel:
    """cupy.RawKernel's call signature over a CPU build of the same source."""

    def __init__(self, code: str, name: str) -> None:
        src = PRELUDE + code
        digest = hashlib.sha256(src.encode()).hexdigest()[:16]
        _BUILD.mkdir(exist_ok=True)
        lib = _BUILD / f"k{digest}.so"
        if not lib.exists():
            c = _BUILD / f"k{digest}.cpp"
            c.write_text(src)
            tmp = lib.with_suffix(f".{np.random.randint(1 << 30)}.so")
            # No contraction into FMAs, like nvcc's --fmad=false.
            cmd = ["g++", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", tmp, c]
            subprocess.run(cmd, check=True, capture_output=True)
            tmp.rename(lib)
        self.lib = ctypes.CDLL(str(lib))
        self.fn = getattr(self.lib, name)
        self.fn.restype = None

    def __call__(self, grid: tuple[int], block: tuple[int], args: tuple) -> None:
        cargs = [_c(a) for a in args]
        for b in range(grid[0]):
            for t in range(block[0]):
                self.lib.dm_set_thread(b, t, block[0])
                self.fn(*cargs)


def _c(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        assert a.flags.c_contiguous, "kernel arrays must be contiguous"
        return ctypes.c_void_p(a.ctypes.data)
    return {
        np.dtype(np.int32): ctypes.c_int,
        np.dtype(np.int64): ctypes.c_longlong,
        np.dtype(np.float64): ctypes.c_double,
    }[np.asarray(a).dtype](a.item())


CPU_CUDA = Backend("cupy", np, CpuRawKernel)
