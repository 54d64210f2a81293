"""Files of trading records that only the appliance's user and group may read.

The journal is created 0640 whatever the umask (sqlite.py); what is derived from it
(the metrics checkpoint, a backtest's report) gets the same mode, so an operator's
``umask 022`` never makes orders and PnL world-readable.
"""

from __future__ import annotations

import os
from typing import IO

MODE = 0o640


def open_private(path: str | os.PathLike[str], mode: str = "wb") -> IO:
    """``path`` opened for writing (created, or truncated), mode 0640 whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, MODE)
    try:
        os.fchmod(fd, MODE)  # the umask may have taken bits away; an old file had its own
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise
