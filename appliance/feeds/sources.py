"""Where recorded ticks come from: a tick file, a Parquet history folder, or raw captures.

``open_source`` looks at the path and returns the matching reader. Every source has
``symbols`` (names in its own index order, what its TICK records' ``symbol`` index) and
``chunks()``, TICK arrays in the order the ticks entered the appliance (or, for raw
captures, were received).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from appliance.feeds.captures import CaptureError, CaptureSource, is_capture
from appliance.feeds.tickfile import TickFileError, TickFileReader


class SourceError(ValueError):
    """A path that is no tick source, or a broken one; the message says which and why."""


class TickSource(Protocol):
    @property
    def symbols(self) -> tuple[str, ...]: ...

    def chunks(self) -> Iterator[np.ndarray]: ...

    def count(self) -> int:
        """How many ticks ``chunks`` yields in all."""
        ...


def open_source(path: str | os.PathLike[str], *, depth: bool = False) -> TickSource:
    """The tick source at ``path``: a tick file (``.dmt``), a folder of Parquet history
    written by the recorder, or a folder of raw captures (``stream.ws`` and friends;
    ``depth``: also take the top of book from depth updates, see captures.py)."""
    # pyarrow only when a Parquet folder is opened: every process loads the config (which
    # checks a replay source), and importing pyarrow costs half a second of its start.
    from appliance.feeds.parquet import HistoryError, ParquetDataset

    p = Path(path)
    try:
        if p.is_file():
            return TickFileReader(p)
        if not p.is_dir():
            raise SourceError(f"{p}: no such file or folder")
        if is_capture(p):
            return CaptureSource(p, depth=depth)
        return ParquetDataset(p)
    except (TickFileError, CaptureError, HistoryError, OSError) as exc:
        raise SourceError(str(exc)) from None
