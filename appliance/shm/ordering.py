"""The memory-ordering argument every structure in this package rests on.

Python has no atomics or fences for shared memory, so correctness comes from the hardware:

* x86-64 is TSO (total store order): stores become visible to other cores in program
  order, loads are not reordered with other loads, and loads are not reordered with older
  stores to the same address. Only a store followed by a load of a *different* address may
  be reordered (the store-buffer case).
* Aligned 8-byte loads and stores are single-copy atomic. Every cursor here is an aligned
  int64 accessed through a ``memoryview`` cast to ``'q'``, which CPython reads and writes
  with one 8-byte ``memcpy`` that compilers emit as one ``mov``.
* Each cursor access is a separate C call from the interpreter, so the C compiler cannot
  reorder it against the numpy copy of the payload made by an earlier call.

Hence "write payload, then publish cursor" on the writer side and "load cursor, then read
payload" on the reader side are enough for single-writer structures. glibc's memcpy only
switches to weakly ordered non-temporal stores for copies of several megabytes and ends
that path with ``sfence``; numpy's own copy loops use ordinary stores.

The one place TSO is not enough is the block wait strategy's Dekker handshake (the sleeper
stores "I sleep" then loads the cursor; the writer stores the cursor then loads "who
sleeps"): both sides need a full barrier between their store and their load, which
:func:`full_fence` provides.

On any other architecture these arguments do not hold and there is no checked fallback,
so :func:`require_tso` refuses to start.
"""

from __future__ import annotations

import platform
import threading

TSO_MACHINES = frozenset({"x86_64", "amd64", "AMD64", "i686", "i386"})


class UnsupportedArchitecture(RuntimeError):
    """The CPU does not give the store ordering the shared-memory structures rely on."""


def require_tso(machine: str | None = None) -> None:
    """Refuse to run on a CPU without total store order (see the module docstring)."""
    machine = machine if machine is not None else platform.machine()
    if machine not in TSO_MACHINES:
        raise UnsupportedArchitecture(
            f"appliance.shm relies on x86-64 total store order; this CPU is {machine!r}. "
            "There is no checked fallback for weakly ordered CPUs (ARM, POWER, RISC-V)."
        )


_FENCE_LOCK = threading.Lock()


def full_fence() -> None:
    """A full memory barrier on x86-64.

    Acquiring and releasing an uncontended ``threading.Lock`` runs glibc's semaphore fast
    paths, which are ``lock``-prefixed read-modify-write instructions; on x86-64 a locked
    instruction drains the store buffer and orders every earlier store before every later
    load. About 0.1 microseconds, so only the block wait strategy pays it.
    """
    _FENCE_LOCK.acquire()
    _FENCE_LOCK.release()
