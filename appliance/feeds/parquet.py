"""Tick history as Parquet: what the recorder writes and what users open.

A dataset is a folder partitioned Hive-style by the UTC date of ``recv_ts`` and by market:

    ROOT/date=2021-10-12/market=CRV-USDT/part-00000000000000000042-1.parquet

(``market`` is the symbol with ``/`` written ``-``; the ``symbol`` column holds the real
name). pandas (``pd.read_parquet(ROOT)``), polars (``pl.read_parquet(ROOT /
"**/*.parquet", hive_partitioning=True)``) and DuckDB (``read_parquet('ROOT/**/*.parquet',
hive_partitioning = true)``) read it as it is. Columns (one row per tick, ``TICK`` in
model/records.py field by field):

    seq u64, ts timestamp[ns, UTC] (event time at the source), recv_ts timestamp[ns, UTC]
    (when it entered the appliance), symbol and kind (dictionary strings: "quote"/"trade"),
    side i8 (+1 buyer took, -1 seller took, 0 quote), bid, ask, last_price f64,
    bid_size, ask_size, last_size f32

Each file's key-value metadata ``dynamind`` is JSON: format and version, the instrument
table (name, tick and lot size of every symbol of the recording), the feed that produced
the ticks, its seq range, and the gaps seen while the file was open: ticks the recorder
never got (ring laps), and the feed's GAP records (a lost connection: the feed's ticks of
that symbol before it may be missing), each with its seq range, count and reason. Files
are written as ``*.parquet.tmp`` and renamed when complete, so a reader never opens a
half-written one.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from appliance.model.instruments import Instrument
from appliance.model.records import TICK, TickKind

FORMAT = "dynamind.ticks"
VERSION = 1
META_KEY = b"dynamind"
_KINDS = pa.array(["quote", "trade"])  # dictionary of the kind column: TickKind - 1
_TS = pa.timestamp("ns", tz="UTC")
SCHEMA = pa.schema([
    ("seq", pa.uint64()), ("ts", _TS), ("recv_ts", _TS),
    ("symbol", pa.dictionary(pa.int16(), pa.string())),
    ("kind", pa.dictionary(pa.int8(), pa.string())), ("side", pa.int8()),
    ("bid", pa.float64()), ("ask", pa.float64()), ("last_price", pa.float64()),
    ("bid_size", pa.float32()), ("ask_size", pa.float32()), ("last_size", pa.float32()),
])  # fmt: skip
_DAY_NS = 86_400 * 10**9
_NUMERIC = ("side", "bid", "ask", "last_price", "bid_size", "ask_size", "last_size")


class HistoryError(ValueError):
    """A folder or file that is not tick history this build can read."""


def market_dir(symbol: str) -> str:
    return "market=" + symbol.replace("/", "-")


def to_table(ticks: np.ndarray, symbols: Sequence[str]) -> pa.Table:
    """TICK records (symbol indexes into ``symbols``) as a table of SCHEMA."""
    bad = (ticks["kind"] < TickKind.QUOTE) | (ticks["kind"] > TickKind.TRADE)
    bad |= ticks["symbol"] >= len(symbols)
    if bad.any():
        t = ticks[int(np.argmax(bad))]
        raise HistoryError(
            f"tick seq {t['seq']} has kind {t['kind']} and symbol {t['symbol']}: not a tick of "
            f"this recording ({len(symbols)} symbols)"
        )
    cols: dict[str, pa.Array] = {
        "seq": pa.array(np.ascontiguousarray(ticks["seq"])),
        "ts": pa.array(np.ascontiguousarray(ticks["ts_ns"]), _TS),
        "recv_ts": pa.array(np.ascontiguousarray(ticks["recv_ns"]), _TS),
        "symbol": pa.DictionaryArray.from_arrays(
            pa.array(ticks["symbol"].astype(np.int16)), pa.array(list(symbols))
        ),
        "kind": pa.DictionaryArray.from_arrays(pa.array(ticks["kind"].astype(np.int8) - 1), _KINDS),
    }
    for name in _NUMERIC:
        cols[name] = pa.array(np.ascontiguousarray(ticks[name]))
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def from_table(table: pa.Table, index: Mapping[str, int]) -> np.ndarray:
    """TICK records of a SCHEMA table, symbols mapped to ``index`` (name -> index)."""
    out = np.zeros(table.num_rows, TICK)
    if not table.num_rows:
        return out
    out["seq"] = table["seq"].to_numpy()
    out["ts_ns"] = table["ts"].cast(pa.int64()).to_numpy()
    out["recv_ns"] = table["recv_ts"].cast(pa.int64()).to_numpy()
    for name in _NUMERIC:
        out[name] = table[name].to_numpy()
    sym = table["symbol"].cast(pa.string()).combine_chunks().dictionary_encode()
    names = sym.dictionary.to_pylist()
    try:
        lookup = np.array([index[n] for n in names], np.uint16)
    except KeyError as exc:
        raise HistoryError(f"symbol {exc.args[0]!r} is not in {list(index)}") from None
    out["symbol"] = lookup[sym.indices.to_numpy(zero_copy_only=False)]
    kind = table["kind"].cast(pa.string()).to_numpy(zero_copy_only=False)
    out["kind"] = np.where(kind == "trade", TickKind.TRADE, TickKind.QUOTE)
    return out


@dataclass
class _Part:
    """One file being written."""

    tmp: Path
    writer: pq.ParquetWriter
    opened: float
    first_seq: int
    last_seq: int = 0
    rows: int = 0
    gaps: list[dict] = field(default_factory=list)


class ParquetRecorder:
    """Writes TICK batches into a dataset (see the module docstring).

    ``append`` only queues a copy of the batch: a background thread converts, compresses
    and writes (pyarrow releases the GIL for that), so the caller, a ring reader, goes back
    to the ring at once. A file is closed and a new one started once it holds
    ``rotate_bytes`` or has been open ``rotate_s`` seconds; rows are grouped into row groups
    of up to ``row_group`` ticks, written at least every ``flush_s`` seconds.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        instruments: Sequence[Instrument],
        feed: Mapping[str, Any],
        *,
        rotate_bytes: int = 256 << 20,
        rotate_s: float = 3600.0,
        row_group: int = 1 << 17,
        flush_s: float = 1.0,
        compression: str = "zstd",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.instruments = list(instruments)
        self.symbols = [i.name for i in self.instruments]
        self.feed = dict(feed)
        self.rotate_bytes, self.rotate_s = rotate_bytes, rotate_s
        self.row_group, self.flush_s = row_group, flush_s
        self.compression = compression
        self._clock = clock
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._pending_since = clock()
        self._next_seq: int | None = None
        self._parts: dict[tuple[str, int], _Part] = {}
        self._jobs: queue.Queue = queue.Queue(maxsize=64)
        self._error: BaseException | None = None
        self.rows_written = 0
        self.files_written: list[Path] = []
        self.gaps: list[dict] = []
        self._carry: list[dict] = []  # gaps noted while no file was open (writer thread)
        self._thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self._thread.start()

    # ---- the caller's side -------------------------------------------------------------

    def append(self, ticks: np.ndarray, *, copy: bool = True) -> None:
        """Queue a batch (copied unless ``copy`` is false: the caller hands it over). Seq
        jumps since the last batch are recorded as gaps, and so is each GAP record of the
        feed (a lost connection: no tick, so no row; the feed's ticks of that symbol before
        it may be missing)."""
        self._raise()
        if not len(ticks):
            return
        first = int(ticks["seq"][0])
        if self._next_seq is not None and first != self._next_seq:
            self.gap(self._next_seq, first - 1)
        self._next_seq = int(ticks["seq"][-1]) + 1
        start = 0
        for i in np.flatnonzero(ticks["kind"] == TickKind.GAP).tolist():
            self._queue(ticks[start:i], copy)
            seq, sym = int(ticks["seq"][i]), int(ticks["symbol"][i])
            name = self.symbols[sym] if sym < len(self.symbols) else f"symbol #{sym}"
            self.gap(seq, seq, f"the feed lost its source for {name}")
            start = i + 1
        self._queue(ticks[start:], copy)

    def _queue(self, ticks: np.ndarray, copy: bool) -> None:
        if not len(ticks):
            return
        if not self._pending:
            self._pending_since = self._clock()
        self._pending.append(np.array(ticks, copy=True) if copy else ticks)
        self._pending_rows += len(ticks)
        if self._pending_rows >= self.row_group or (
            self._clock() - self._pending_since >= self.flush_s
        ):
            self._hand_over()

    def gap(self, first_seq: int, last_seq: int, reason: str = "ring lapped the recorder") -> None:
        """Ticks ``first_seq..last_seq`` were lost: noted in every file open now (or, when
        none is, in the next files opened)."""
        if last_seq < first_seq:
            return
        g = {"first_seq": first_seq, "last_seq": last_seq, "count": last_seq - first_seq + 1,
             "at_ns": time.time_ns(), "reason": reason}  # fmt: skip
        self.gaps.append(g)
        if self._pending:  # the ticks before the gap go first: their files note it
            self._hand_over()
        self._jobs.put(("gap", g))

    def poll(self) -> None:
        """Hand over what is pending once ``flush_s`` has passed (call when idle)."""
        self._raise()
        if self._pending and self._clock() - self._pending_since >= self.flush_s:
            self._hand_over()
        else:
            self._jobs.put(("rotate", None))  # files age out even when no ticks come

    def sync(self) -> None:
        """Wait until the writer thread has done everything handed to it so far."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Write everything pending, close every file; raises what the writer hit."""
        if self._pending:
            self._hand_over()
        self._jobs.put(("close", None))
        self._thread.join()
        self._raise()

    def _hand_over(self) -> None:
        batch = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_rows = [], 0
        self._pending_since = self._clock()
        self._jobs.put(("rows", batch))

    def _raise(self) -> None:
        if self._error is not None:
            raise HistoryError(f"{self.root}: writing history failed: {self._error}")

    # ---- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                what, item = self._jobs.get()
                self._do(what, item)
                self._jobs.task_done()
                if what == "close":
                    return
        except BaseException as exc:  # surfaced to the caller by the next append/close
            self._error = exc
            for key in list(self._parts):
                self._parts.pop(key).writer.close()
            while True:  # keep sync() and close() from waiting on a dead thread
                self._jobs.task_done()
                if self._jobs.get()[0] == "close":
                    self._jobs.task_done()
                    return

    def _do(self, what: str, item: Any) -> None:
        if what == "rows":
            self._write(item)
        elif what == "gap":
            for part in self._parts.values():
                part.gaps.append(item)
            if not self._parts:
                self._carry.append(item)
        elif what == "close":
            for key in list(self._parts):
                self._finish(key)
            return
        self._rotate()

    def _write(self, ticks: np.ndarray) -> None:
        table = to_table(ticks, self.symbols)  # columnar once; partitions are takes of it
        day = ticks["recv_ns"] // _DAY_NS
        key = day * 65536 + ticks["symbol"]
        first = key[0]
        parts = [(int(first), None)] if (key == first).all() else [
            (int(k), np.flatnonzero(key == k)) for k in np.unique(key)
        ]  # fmt: skip
        seqs = ticks["seq"]
        for k, idx in parts:
            part = table if idx is None else table.take(pa.array(idx))
            pos = (0, len(ticks) - 1) if idx is None else (int(idx[0]), int(idx[-1]))
            date = time.strftime("%Y-%m-%d", time.gmtime((k // 65536) * 86_400))
            p = self._part(date, k % 65536, int(seqs[pos[0]]))
            p.writer.write_table(part, row_group_size=self.row_group)
            p.rows += part.num_rows
            p.last_seq = int(seqs[pos[1]])
            self.rows_written += part.num_rows

    def _part(self, date: str, sym: int, first_seq: int) -> _Part:
        p = self._parts.get((date, sym))
        if p is None:
            folder = self.root / f"date={date}" / market_dir(self.symbols[sym])
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"part-{first_seq:020d}-{os.getpid()}.parquet.tmp"
            # Dictionary encoding only where values repeat by nature: on prices and sizes
            # it costs three times the write time and saves nothing after zstd.
            writer = pq.ParquetWriter(
                tmp, SCHEMA, compression=self.compression, use_dictionary=["symbol", "kind"]
            )
            p = self._parts[(date, sym)] = _Part(tmp, writer, self._clock(), first_seq)
            p.gaps, self._carry = self._carry, []
        return p

    def _rotate(self) -> None:
        now = self._clock()
        for key, p in list(self._parts.items()):
            if now - p.opened >= self.rotate_s or p.tmp.stat().st_size >= self.rotate_bytes:
                self._finish(key)

    def _finish(self, key: tuple[str, int]) -> None:
        p = self._parts.pop(key)
        meta = {
            "format": FORMAT, "version": VERSION,
            "instruments": [asdict(i) for i in self.instruments], "feed": self.feed,
            "first_seq": p.first_seq, "last_seq": p.last_seq, "rows": p.rows, "gaps": p.gaps,
        }  # fmt: skip
        p.writer.add_key_value_metadata({META_KEY: orjson.dumps(meta)})
        p.writer.close()
        final = p.tmp.with_suffix("")  # drop ".tmp"
        p.tmp.rename(final)
        self.files_written.append(final)


def file_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``dynamind`` metadata of one history file."""
    meta = pq.read_metadata(path).metadata or {}
    if META_KEY not in meta:
        raise HistoryError(f"{path}: a Parquet file without dynamind tick metadata")
    info = orjson.loads(meta[META_KEY])
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise HistoryError(f"{path}: {info.get('format')} v{info.get('version')}, not {FORMAT}")
    return info


class ParquetDataset:
    """A tick history folder read back as TICK chunks in the order ticks entered the ring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.files = sorted(self.root.glob("**/*.parquet"))
        if not self.files:
            raise HistoryError(f"{self.root}: no .parquet files (not a tick history folder)")
        instruments: dict[str, Instrument] = {}
        self.gaps: list[dict] = []
        self.feeds: list[dict] = []
        for f in self.files:
            meta = file_meta(f)
            for i in meta["instruments"]:
                instruments.setdefault(i["name"], Instrument(**i))
            self.gaps += meta["gaps"]
            if meta["feed"] not in self.feeds:
                self.feeds.append(meta["feed"])
        self.instruments = list(instruments.values())
        self.symbols = tuple(instruments)
        self._index = {s: i for i, s in enumerate(self.symbols)}

    def count(self) -> int:
        return sum(pq.read_metadata(f).num_rows for f in self.files)

    def _days(self) -> dict[str, list[Path]]:
        days: dict[str, list[Path]] = {}
        for f in self.files:
            day = next((p for p in f.parts if p.startswith("date=")), "date=")
            days.setdefault(day, []).append(f)
        return dict(sorted(days.items()))

    def chunks(
        self, since_ns: int | None = None, until_ns: int | None = None, size: int = 1 << 20
    ) -> Iterator[np.ndarray]:
        """TICK arrays (symbols indexed into ``symbols``) of recv_ts in [since, until),
        ordered by (recv_ts, seq), one day in memory at a time."""
        for files in self._days().values():
            table = pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])
            mask = None
            if since_ns is not None:
                mask = pc.greater_equal(table["recv_ts"], pa.scalar(since_ns, _TS))
            if until_ns is not None:
                upper = pc.less(table["recv_ts"], pa.scalar(until_ns, _TS))
                mask = upper if mask is None else pc.and_(mask, upper)
            if mask is not None:
                table = table.filter(mask)
            table = table.sort_by([("recv_ts", "ascending"), ("seq", "ascending")])
            ticks = from_table(table, self._index)
            for start in range(0, len(ticks), size):
                yield ticks[start : start + size]
