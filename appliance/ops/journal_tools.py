"""`dynamind reset --journal` and `dynamind journal archive`: the journal, with the appliance
stopped.

``reset`` starts over: the journal and the paper venue's state file move to an ``archive``
directory beside them, stamped with the time, and the next start begins with no orders and
no positions. The venue's file goes too: client order ids restart with the journal's run
numbers, and a venue that still knew the old ids would take new orders for old ones.

``archive`` keeps the journal and moves closed runs out of it (see
trading/archive.py): the journal stays as big as the runs you keep, and so does the time a
start takes to replay it.
"""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import datetime
from pathlib import Path

from appliance.config import Config
from appliance.runtime.live_metrics import METRICS_SUFFIX
from appliance.trading.archive import archive_file, archive_runs

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([dhm])$")
_UNIT_S = {"d": 86400, "h": 3600, "m": 60}
# Files that belong to a journal or venue state file and move with it: SQLite's, and the
# metrics checkpoint the execution process keeps next to the journal.
_SIDE_SUFFIXES = ("-wal", "-shm", "-journal", METRICS_SUFFIX)
_SQLITE_MAGIC = b"SQLite format 3\x00"


def parse_time(text: str, now: float | None = None) -> int:
    """``--before``: an ISO date/time (local time unless it names an offset) or an age such
    as ``30d``, ``12h``, ``90m``; nanoseconds since the epoch."""
    now = time.time() if now is None else now
    m = _AGE.match(text.strip())
    if m:
        return int((now - float(m[1]) * _UNIT_S[m[2]]) * 1e9)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO date/time (2026-01-31, 2026-01-31T12:00, "
            "2026-01-31T12:00+00:00) nor an age (30d, 12h, 90m)"
        ) from None
    return int(when.timestamp() * 1e9)  # naive: local time, as datetime.timestamp reads it


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the main file, so the archive is one file. Not for a file that is
    no SQLite database: SQLite would delete its -wal on close; it moves as it is instead,
    its side files beside it."""
    with path.open("rb") as f:
        if f.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
            return
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        pass  # damaged: moved as it is, with its -wal


def reset(config: Config) -> list[tuple[Path, Path]]:
    """Move the journal, the paper venue's state and their side files into ``archive/``;
    (from, to) of each move."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in (Path(config.journal_path), Path(config.venue_state_path)):
        if not path.exists():
            continue
        _checkpoint(path)
        archive = path.parent / "archive"
        archive.mkdir(mode=0o750, parents=True, exist_ok=True)
        dest = archive / f"{path.stem}-{stamp}{path.suffix}"
        for src, dst in [(path, dest)] + [
            (Path(f"{path}{s}"), Path(f"{dest}{s}")) for s in _SIDE_SUFFIXES
        ]:
            if src.exists():
                src.rename(dst)
                moved.append((src, dst))
    return moved


def archive(config: Config, before_ns: int, to: Path | None = None) -> str:
    journal = Path(config.journal_path)
    if not journal.exists():
        return f"{journal}: no journal yet, nothing to archive"
    day = time.strftime("%Y%m%d", time.localtime(before_ns / 1e9))
    first = journal.parent / "archive" / f"{journal.stem}-before-{day}{journal.suffix}"
    dest = to or archive_file(journal, first)
    size = journal.stat().st_size
    summary = archive_runs(journal, before_ns, dest)
    return f"{summary}\n{journal}: {size / 1e6:,.1f} MB -> {journal.stat().st_size / 1e6:,.1f} MB"
