"""Opening the appliance's SQLite files: identity check, WAL, explicit transactions.

Each kind of file (journal, paper venue) stamps ``PRAGMA application_id`` and
``user_version`` when it creates its schema, so opening the wrong file, a file from an
incompatible version, or something that is not SQLite at all is a clear error naming the
path instead of a confusing failure on the first query.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote


class StoreError(RuntimeError):
    """An SQLite file that cannot be used as what the caller expected."""


# A write refused by the filesystem, not by the data: full, over quota, failing.
_FULL_CODES = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)  # primary codes (low byte)
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def storage_failure(exc: BaseException) -> str | None:
    """The message, when ``exc`` or an exception behind it (cause or context) says a file
    could not be written because its filesystem is full or failing (SQLITE_FULL,
    SQLITE_IOERR, ENOSPC, EDQUOT, EIO); None for any other error."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = getattr(e, "sqlite_errorcode", None) or 0  # absent on errors made by hand
        if isinstance(e, sqlite3.Error) and code & 0xFF in _FULL_CODES:
            return str(e)
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return f"{os.strerror(e.errno)}: {e.filename}" if e.filename else str(e)
        e = e.__cause__ or e.__context__
    return None


def probe_space(directory: str | os.PathLike[str], nbytes: int) -> str | None:
    """Reserve ``nbytes`` on ``directory``'s filesystem in a scratch file, sync it and give
    it back: None when that worked, else why not (a storage failure's message). Proves
    there is room for more than the next page, which a write that reuses space does not."""
    path = Path(directory) / f".probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, nbytes)
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
    except OSError as exc:
        if (why := storage_failure(exc)) is None:
            raise
        return why
    return None


def unwritable(path: str | os.PathLike[str]) -> str | None:
    """Why a file at ``path`` (with its -wal and -shm beside it) could not be created or
    written, or None when it could. Tries what an open would do, in the nearest directory
    that exists (a scratch directory made and removed there), and creates nothing else:
    permission bits do not tell (root, read-only mounts, /sys). A full or failing
    filesystem is not reported here (see ``storage_failure``): it may pass."""
    path = Path(path)
    if path.is_dir():
        return f"{path}: is a directory"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=ancestor))
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            return None  # full or failing, not forbidden: the storage halt's case, it waits
        if ancestor.exists() and not ancestor.is_dir():
            return f"{path}: {ancestor} is a file, not a directory"
        return f"{path}: cannot create files in {ancestor} ({exc.strerror})"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"{path}: not readable and writable by this user"
    return None


def damage(conn: sqlite3.Connection, schema: str = "main") -> str | None:
    """What SQLite's ``quick_check`` finds wrong with a database's structure (pages, b-trees,
    records; not its indexes' contents), or None when it finds nothing."""
    try:
        rows = [r[0] for r in conn.execute(f"PRAGMA {schema}.quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if rows == ["ok"]:
        return None
    return "; ".join(line for r in rows for line in r.splitlines() if not line.startswith("***"))


def open_store(
    path: str | os.PathLike[str],
    *,
    what: str,
    application_id: int,
    version: int,
    schema: str,
    synchronous: str,
    readonly: bool = False,
    error: type[StoreError] = StoreError,
    upgrades: Mapping[int, str] | None = None,
) -> sqlite3.Connection:
    """Open (creating if new and writable) an SQLite file of one kind, in WAL mode.

    The connection is in autocommit mode: writers use ``transaction``. ``error`` is the
    exception type raised for an unusable file (a subclass, so callers can catch their own).
    ``upgrades`` maps an older schema version to the SQL that brings it to the next one: a
    writable open applies the chain in one transaction; a read-only open accepts such an
    older file as it is (the reader checks ``PRAGMA user_version`` for what it lacks).
    """
    upgrades = upgrades or {}
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    path = Path(path)
    try:
        if readonly:
            uri = f"file:{quote(str(path.resolve()))}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            _create_private(path)
            conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise error(f"{path}: cannot open {what} ({exc})") from exc
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise error(f"{path}: an SQLite file, but not a {what}")
            if readonly:
                raise error(f"{path}: no {what} here")
            _wal(conn, path, error)
            conn.executescript(
                f"BEGIN; {schema} PRAGMA application_id={application_id}; "
                f"PRAGMA user_version={version}; COMMIT;"
            )
        elif app_id != application_id:
            raise error(f"{path}: application id {app_id:#x}, not a {what}")
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found != version:
            if found > version or not all(v in upgrades for v in range(found, version)):
                raise error(f"{path}: {what} schema version {found}, expected {version}")
            if not readonly:
                _upgrade(conn, path, found, version, upgrades, what, error)
        if not readonly:
            _wal(conn, path, error)
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise error(f"{path}: not a usable {what} ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _create_private(path: Path) -> None:
    """Create a new file readable by owner and group only (orders and fills are nobody
    else's business, whatever the umask); SQLite gives its -wal and -shm files the same
    mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
    except FileExistsError:
        return
    os.chmod(path, 0o640)  # the umask may have taken bits away, never added others'


def _upgrade(
    conn: sqlite3.Connection,
    path: Path,
    found: int,
    version: int,
    upgrades: Mapping[int, str],
    what: str,
    error: type[StoreError],
) -> None:
    # Runs before foreign_keys is switched on, so tables can be rebuilt (create, copy,
    # drop, rename) the way SQLite documents for changes ALTER TABLE cannot make.
    script = "".join(upgrades[v] for v in range(found, version))
    try:
        conn.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version={version}; COMMIT;")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise error(f"{path}: cannot upgrade {what} from version {found} ({exc})") from exc


def _wal(conn: sqlite3.Connection, path: Path, error: type[StoreError]) -> None:
    if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
        raise error(f"{path}: cannot use WAL mode on this filesystem")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; rolled back on any exception (BaseException too: a
    KeyboardInterrupt mid-batch must not leave half a batch pending)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def one_of(column: str, codes: Iterable[int]) -> str:
    """``(column = a OR column = b ...)`` over integer codes (enum members), ascending.

    SQLite uses a partial index only for a query whose WHERE holds the index's own term, so
    an index's DDL and the queries it serves build that term here, from the same members.
    Not ``IN (a, b, c, ...)``: SQLite evaluates an IN list of more than two values through
    a temporary table, which made every row change of a table with such a partial index
    about three times as costly (measured: 300k inserts and 150k updates, 0.7 s -> 1.9 s).
    """
    return "(" + " OR ".join(f"{column} = {int(c)}" for c in sorted(codes)) + ")"
